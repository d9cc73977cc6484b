// The architectural state of a paused x86-64 VM that KVM holds: per vCPU
// (registers, MSRs, FPU/XSAVE, LAPIC, XCRs, CPUID, pending events, MP
// state) and per VM (PIC, IOAPIC, PIT, kvmclock). Saved for snapshots and
// put back, in KVM's order, into a fresh VM built the same way.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "src/common/byte_codec.h"
#include "src/common/kvm_ioctls.h"

namespace ember {

struct VcpuState {
  std::vector<kvm_cpuid_entry2> cpuid;
  std::vector<kvm_msr_entry> msrs;
  kvm_regs regs;
  kvm_sregs sregs;
  kvm_fpu fpu;
  bool has_xsave = false;
  Xsave xsave;
  bool has_xcrs = false;
  kvm_xcrs xcrs;
  kvm_lapic_state lapic;
  kvm_mp_state mp_state;
  kvm_vcpu_events events;

  // The snapshot encoding: the lists, flags and MP state field by field;
  // each other KVM struct as a blob of its size (the kernel's ABI fixes its
  // layout; a build with another size refuses it). XSAVE and XCRs only
  // when present. Bump kVersion when the encoding changes.
  static constexpr uint16_t kVersion = 1;
  static constexpr uint32_t kMaxEntries = 1024;  // CPUID leaves, MSRs
  void Encode(ByteWriter& w) const;
  // False (and `r` says why) on a short or malformed input or more than
  // kMaxEntries CPUID leaves or MSRs; absent XSAVE/XCRs come back zero.
  bool Decode(ByteReader& r);
};

struct VmState {
  kvm_irqchip pic_master;
  kvm_irqchip pic_slave;
  kvm_irqchip ioapic;
  kvm_pit_state2 pit;
  kvm_clock_data clock;

  // The snapshot encoding: each KVM struct as a blob of its size.
  static constexpr uint16_t kVersion = 1;
  void Encode(ByteWriter& w) const;
  bool Decode(ByteReader& r);
};

// KVM_GET_MSRS for `indices`: those read, in order; KVM stops at the first
// MSR it cannot read.
absl::StatusOr<std::vector<kvm_msr_entry>> ReadMsrs(int vcpu_fd,
                                                    const std::vector<uint32_t>& indices);
// MSRs KVM can save and restore (KVM_GET_MSR_INDEX_LIST), from /dev/kvm.
absl::StatusOr<std::vector<uint32_t>> SaveableMsrs(int kvm_fd);

// The vCPU must not be in KVM_RUN (paused). MSRs KVM lists but refuses to
// read on this host are left out.
absl::StatusOr<VcpuState> SaveVcpuState(int vcpu_fd, const std::vector<uint32_t>& msr_indices);
absl::Status RestoreVcpuState(int vcpu_fd, const VcpuState& state);

absl::StatusOr<VmState> SaveVmState(int vm_fd);
// KVM advances the restored clock by the wall-clock time since the save
// only when the state's clock carries KVM_CLOCK_REALTIME (snapshot/load's
// clock_realtime); KVM's other flags are outputs, never passed back.
absl::Status RestoreVmState(int vm_fd, const VmState& state);
// snapshot/load.clock_realtime: keeps the saved real time as an input to
// RestoreVmState, or drops it. Refused when the saving host's KVM did not
// record the real time (KVM_CAP_ADJUST_CLOCK without KVM_CLOCK_REALTIME).
absl::Status UseClockRealtime(VmState* state, bool on);

}  // namespace ember
