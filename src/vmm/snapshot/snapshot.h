// What a snapshot's state file holds, and its encoding (state_file.h
// frames it): the VM's configuration (as the API's JSON), the guest memory
// layout (the memory file holds the regions one after another), the KVM
// state of the VM and its vCPUs, the legacy devices' registers and each
// virtio device's transport, queues and own state. Each is a section of
// its own, encoded field by field by the type that owns it, with its own
// version: config, memory, vm, serial and i8042 once each, then one vcpu
// section per vCPU and one virtio section per device, in order.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/common/byte_codec.h"
#include "src/devices/legacy/i8042.h"
#include "src/devices/legacy/serial.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/vmm/arch/x86_64/cpu_state.h"
#include "src/vmm/snapshot/working_set.h"
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
  // Set by DecodeSnapshot (not a section): what names this snapshot.
  SnapshotId id;
};

std::vector<uint8_t> EncodeSnapshot(const SnapshotState& state);
// Refuses a damaged file (state_file.h), a section of an unknown id or
// version, a missing or repeated section and contents out of bounds.
absl::StatusOr<SnapshotState> DecodeSnapshot(std::span<const uint8_t> file);

// The memory section's body: the regions' (address, size) pairs. Here, as
// MemoryRange (src/vstate) knows nothing of snapshots.
inline constexpr uint32_t kMaxMemoryRanges = 16;
void EncodeMemoryRanges(const std::vector<MemoryRange>& ranges, ByteWriter& w);
bool DecodeMemoryRanges(ByteReader& r, std::vector<MemoryRange>* ranges);

}  // namespace ember::snapshot
