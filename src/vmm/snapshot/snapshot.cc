#include "src/vmm/snapshot/snapshot.h"

#include "src/common/status_macros.h"
#include "src/vmm/snapshot/state_file.h"

namespace ember::snapshot {
namespace {

constexpr uint32_t kMaxVcpus = 32;
constexpr uint32_t kMaxEntries = 1024;  // CPUID leaves, MSRs
constexpr uint32_t kMaxRegions = 16;
constexpr uint32_t kMaxConfig = 1 << 20;
constexpr uint32_t kMaxDevices = 64;
constexpr uint32_t kMaxQueues = 16;
constexpr uint32_t kMaxDeviceState = 4096;

}  // namespace

std::vector<uint8_t> EncodeSnapshot(const SnapshotState& s) {
  StateWriter w;
  w.PutString(s.config_json);
  w.PutVector(s.memory);
  w.Put(s.machine.vm);
  w.Put(static_cast<uint32_t>(s.machine.vcpus.size()));
  for (const VcpuState& v : s.machine.vcpus) {
    w.PutVector(v.cpuid);
    w.PutVector(v.msrs);
    w.Put(v.regs);
    w.Put(v.sregs);
    w.Put(v.fpu);
    w.Put(v.has_xsave);
    w.Put(v.xsave);
    w.Put(v.has_xcrs);
    w.Put(v.xcrs);
    w.Put(v.lapic);
    w.Put(v.mp_state);
    w.Put(v.events);
  }
  w.Put(s.serial);
  w.Put(s.i8042);
  w.Put(static_cast<uint32_t>(s.virtio.size()));
  for (const virtio::MmioTransport::State& v : s.virtio) {
    w.Put(v.device_type);
    w.Put(v.registers);
    w.PutVector(v.queues);
    w.PutVector(v.device);
  }
  return w.Finish();
}

absl::StatusOr<SnapshotState> DecodeSnapshot(std::span<const uint8_t> file) {
  ASSIGN_OR_RETURN(StateReader r, StateReader::Open(file));
  SnapshotState s;
  uint32_t vcpus = 0;
  r.GetString(&s.config_json, kMaxConfig);
  r.GetVector(&s.memory, kMaxRegions);
  r.Get(&s.machine.vm);
  if (r.Get(&vcpus) && vcpus <= kMaxVcpus) {
    s.machine.vcpus.resize(vcpus);
    for (VcpuState& v : s.machine.vcpus) {
      r.GetVector(&v.cpuid, kMaxEntries);
      r.GetVector(&v.msrs, kMaxEntries);
      r.Get(&v.regs);
      r.Get(&v.sregs);
      r.Get(&v.fpu);
      r.Get(&v.has_xsave);
      r.Get(&v.xsave);
      r.Get(&v.has_xcrs);
      r.Get(&v.xcrs);
      r.Get(&v.lapic);
      r.Get(&v.mp_state);
      r.Get(&v.events);
    }
  } else {
    return absl::InvalidArgumentError("snapshot state file: bad vCPU count");
  }
  r.Get(&s.serial);
  r.Get(&s.i8042);
  uint32_t devices = 0;
  if (!r.Get(&devices) || devices > kMaxDevices) {
    return absl::InvalidArgumentError("snapshot state file: bad virtio device count");
  }
  s.virtio.resize(devices);
  for (virtio::MmioTransport::State& v : s.virtio) {
    r.Get(&v.device_type);
    r.Get(&v.registers);
    r.GetVector(&v.queues, kMaxQueues);
    r.GetVector(&v.device, kMaxDeviceState);
  }
  RETURN_IF_ERROR(r.Finish());
  if (s.machine.vcpus.empty() || s.memory.empty()) {
    return absl::InvalidArgumentError("snapshot state file: no vCPUs or no memory");
  }
  return s;
}

}  // namespace ember::snapshot
