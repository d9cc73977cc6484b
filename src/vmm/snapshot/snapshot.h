// What a snapshot's state file holds, and its encoding (state_file.h
// frames it): the VM's configuration (as the API's JSON), the guest memory
// layout (the memory file holds the regions one after another), the KVM
// state of the VM and its vCPUs, the legacy devices' registers and each
// virtio device's transport, queues and own state.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/devices/legacy/i8042.h"
#include "src/devices/legacy/serial.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/vmm/arch/x86_64/cpu_state.h"
#include "src/vstate/guest_memory.h"

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
  std::vector<virtio::MmioTransport::State> virtio;  // in attach order
};

std::vector<uint8_t> EncodeSnapshot(const SnapshotState& state);
// Refuses a damaged file (state_file.h) and contents out of bounds.
absl::StatusOr<SnapshotState> DecodeSnapshot(std::span<const uint8_t> file);

}  // namespace ember::snapshot
