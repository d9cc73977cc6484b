// What a snapshot's state file holds, and its encoding (state_file.h
// frames it): the VM's configuration (as the API's JSON), the guest memory
// layout (the memory file holds the regions one after another), the KVM
// state of the VM and its vCPUs, and the legacy devices' registers.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/devices/legacy/i8042.h"
#include "src/devices/legacy/serial.h"
#include "src/vmm/arch/x86_64/cpu_state.h"
#include "src/vmm/guest_memory.h"

namespace ember::snapshot {

struct MachineState {
  VmState vm;
  std::vector<VcpuState> vcpus;
};

struct SnapshotState {
  std::string config_json;
  std::vector<MemoryRange> memory;
  MachineState machine;
  Serial::State serial;
  I8042::State i8042;
};

std::vector<uint8_t> EncodeSnapshot(const SnapshotState& state);
// Refuses a damaged file (state_file.h) and contents out of bounds.
absl::StatusOr<SnapshotState> DecodeSnapshot(std::span<const uint8_t> file);

}  // namespace ember::snapshot
