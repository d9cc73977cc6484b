#include "src/vmm/arch/x86_64/cpu_state.h"

#include <asm/kvm_para.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/errno_status.h"
#include "src/common/status_macros.h"

namespace ember {
namespace {

constexpr uint32_t kMaxEntries = 1024;
constexpr uint32_t kUnwritten = 0xffffffff;

absl::Status Ioctl(int fd, unsigned long request, void* arg, const char* name) {
  if (ioctl(fd, request, arg) < 0) return ErrnoStatus(name);
  return absl::OkStatus();
}

// A count header and `count` entries of T, laid out as the C structs.
template <typename T>
struct Counted {
  explicit Counted(uint32_t count) : bytes(sizeof(CountHeader) + count * sizeof(T)) {
    CountHeader h = {count, 0};
    std::memcpy(bytes.data(), &h, sizeof(h));
  }
  uint32_t count() const {
    CountHeader h;
    std::memcpy(&h, bytes.data(), sizeof(h));
    return h.count;
  }
  T* entries() { return reinterpret_cast<T*>(bytes.data() + sizeof(CountHeader)); }
  std::vector<uint8_t> bytes;
};

}  // namespace

absl::StatusOr<std::vector<kvm_msr_entry>> ReadMsrs(int vcpu_fd,
                                                    const std::vector<uint32_t>& indices) {
  Counted<kvm_msr_entry> buf(static_cast<uint32_t>(indices.size()));
  for (size_t i = 0; i < indices.size(); i++) buf.entries()[i] = {indices[i], 0, 0};
  int n = ioctl(vcpu_fd, kGetMsrs, buf.bytes.data());
  if (n < 0) return ErrnoStatus("KVM_GET_MSRS");
  return std::vector<kvm_msr_entry>(buf.entries(), buf.entries() + n);
}

absl::StatusOr<std::vector<uint32_t>> SaveableMsrs(int kvm_fd) {
  std::vector<uint32_t> buf(1 + kMaxEntries);
  buf[0] = kMaxEntries;
  if (ioctl(kvm_fd, kGetMsrIndexList, buf.data()) < 0) return ErrnoStatus("KVM_GET_MSR_INDEX_LIST");
  return std::vector<uint32_t>(buf.begin() + 1, buf.begin() + 1 + buf[0]);
}

absl::StatusOr<VcpuState> SaveVcpuState(int vcpu_fd, const std::vector<uint32_t>& msr_indices) {
  VcpuState s;
  // Linux 6.1 leaves `nent` as given when the call succeeds (newer kernels
  // write the count back), so mark every slot: KVM copies exactly its
  // entries, whose padding is zero, and the marks left show where they end.
  Counted<kvm_cpuid_entry2> cpuid(kMaxEntries);
  for (uint32_t i = 0; i < kMaxEntries; i++) {
    std::fill(std::begin(cpuid.entries()[i].padding), std::end(cpuid.entries()[i].padding),
              kUnwritten);
  }
  RETURN_IF_ERROR(Ioctl(vcpu_fd, kGetCpuid2, cpuid.bytes.data(), "KVM_GET_CPUID2"));
  uint32_t count = 0;
  while (count < cpuid.count() && cpuid.entries()[count].padding[0] != kUnwritten) count++;
  s.cpuid.assign(cpuid.entries(), cpuid.entries() + count);
  // Read all at once; where KVM stops early, skip the MSR it refused.
  for (size_t at = 0; at < msr_indices.size();) {
    std::vector<uint32_t> rest(msr_indices.begin() + at, msr_indices.end());
    ASSIGN_OR_RETURN(std::vector<kvm_msr_entry> got, ReadMsrs(vcpu_fd, rest));
    s.msrs.insert(s.msrs.end(), got.begin(), got.end());
    at += got.size() + 1;
  }
  RETURN_IF_ERROR(Ioctl(vcpu_fd, KVM_GET_REGS, &s.regs, "KVM_GET_REGS"));
  RETURN_IF_ERROR(Ioctl(vcpu_fd, KVM_GET_SREGS, &s.sregs, "KVM_GET_SREGS"));
  RETURN_IF_ERROR(Ioctl(vcpu_fd, KVM_GET_FPU, &s.fpu, "KVM_GET_FPU"));
  s.has_xsave = ioctl(vcpu_fd, kGetXsave, &s.xsave) == 0;
  s.has_xcrs = ioctl(vcpu_fd, KVM_GET_XCRS, &s.xcrs) == 0;
  RETURN_IF_ERROR(Ioctl(vcpu_fd, KVM_GET_LAPIC, &s.lapic, "KVM_GET_LAPIC"));
  RETURN_IF_ERROR(Ioctl(vcpu_fd, KVM_GET_MP_STATE, &s.mp_state, "KVM_GET_MP_STATE"));
  RETURN_IF_ERROR(Ioctl(vcpu_fd, KVM_GET_VCPU_EVENTS, &s.events, "KVM_GET_VCPU_EVENTS"));
  return s;
}

absl::Status RestoreVcpuState(int vcpu_fd, const VcpuState& s) {
  // CPUID first: KVM checks MSRs and XSAVE state against it.
  Counted<kvm_cpuid_entry2> cpuid(static_cast<uint32_t>(s.cpuid.size()));
  std::copy(s.cpuid.begin(), s.cpuid.end(), cpuid.entries());
  RETURN_IF_ERROR(Ioctl(vcpu_fd, kSetCpuid2, cpuid.bytes.data(), "KVM_SET_CPUID2"));
  RETURN_IF_ERROR(Ioctl(vcpu_fd, KVM_SET_SREGS, const_cast<kvm_sregs*>(&s.sregs), "KVM_SET_SREGS"));
  RETURN_IF_ERROR(Ioctl(vcpu_fd, KVM_SET_REGS, const_cast<kvm_regs*>(&s.regs), "KVM_SET_REGS"));
  if (s.has_xsave) {
    RETURN_IF_ERROR(Ioctl(vcpu_fd, kSetXsave, const_cast<Xsave*>(&s.xsave), "KVM_SET_XSAVE"));
  } else {
    RETURN_IF_ERROR(Ioctl(vcpu_fd, KVM_SET_FPU, const_cast<kvm_fpu*>(&s.fpu), "KVM_SET_FPU"));
  }
  if (s.has_xcrs) {
    RETURN_IF_ERROR(Ioctl(vcpu_fd, KVM_SET_XCRS, const_cast<kvm_xcrs*>(&s.xcrs), "KVM_SET_XCRS"));
  }
  // The LAPIC before the MSRs: KVM drops a TSC deadline written while the
  // LAPIC timer is not in TSC-deadline mode, and the guest's timer with it.
  RETURN_IF_ERROR(
      Ioctl(vcpu_fd, KVM_SET_LAPIC, const_cast<kvm_lapic_state*>(&s.lapic), "KVM_SET_LAPIC"));
  Counted<kvm_msr_entry> msrs(static_cast<uint32_t>(s.msrs.size()));
  std::copy(s.msrs.begin(), s.msrs.end(), msrs.entries());
  // Async page faults are enabled last, once the vector they are delivered
  // on (MSR_KVM_ASYNC_PF_INT, after it in KVM's list) is back: enabled
  // first, a restored guest whose memory loads lazily hung on PVM.
  std::stable_partition(msrs.entries(), msrs.entries() + msrs.count(),
                        [](const kvm_msr_entry& e) { return e.index != MSR_KVM_ASYNC_PF_EN; });
  std::vector<kvm_msr_entry> order(msrs.entries(), msrs.entries() + msrs.count());
  int n = ioctl(vcpu_fd, kSetMsrs, msrs.bytes.data());
  if (n < 0) return ErrnoStatus("KVM_SET_MSRS");
  if (static_cast<size_t>(n) != s.msrs.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KVM_SET_MSRS took %d of %d MSRs (refused MSR %#x)", n, s.msrs.size(), order[n].index));
  }
  RETURN_IF_ERROR(
      Ioctl(vcpu_fd, KVM_SET_MP_STATE, const_cast<kvm_mp_state*>(&s.mp_state), "KVM_SET_MP_STATE"));
  return Ioctl(vcpu_fd, KVM_SET_VCPU_EVENTS, const_cast<kvm_vcpu_events*>(&s.events),
               "KVM_SET_VCPU_EVENTS");
}

absl::StatusOr<VmState> SaveVmState(int vm_fd) {
  VmState s;
  std::memset(&s, 0, sizeof(s));
  s.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  s.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  s.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  for (kvm_irqchip* chip : {&s.pic_master, &s.pic_slave, &s.ioapic}) {
    RETURN_IF_ERROR(Ioctl(vm_fd, KVM_GET_IRQCHIP, chip, "KVM_GET_IRQCHIP"));
  }
  RETURN_IF_ERROR(Ioctl(vm_fd, KVM_GET_PIT2, &s.pit, "KVM_GET_PIT2"));
  RETURN_IF_ERROR(Ioctl(vm_fd, KVM_GET_CLOCK, &s.clock, "KVM_GET_CLOCK"));
  return s;
}

absl::Status RestoreVmState(int vm_fd, const VmState& s) {
  for (const kvm_irqchip* chip : {&s.pic_master, &s.pic_slave, &s.ioapic}) {
    RETURN_IF_ERROR(Ioctl(vm_fd, KVM_SET_IRQCHIP, const_cast<kvm_irqchip*>(chip), "KVM_SET_IRQCHIP"));
  }
  RETURN_IF_ERROR(Ioctl(vm_fd, KVM_SET_PIT2, const_cast<kvm_pit_state2*>(&s.pit), "KVM_SET_PIT2"));
  // Only the clock value, and the real time if asked: the other flags KVM
  // reports (e.g. whether the TSC is stable) are not inputs.
  kvm_clock_data clock = {};
  clock.clock = s.clock.clock;
  clock.flags = s.clock.flags & KVM_CLOCK_REALTIME;
  clock.realtime = s.clock.realtime;
  return Ioctl(vm_fd, KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK");
}

absl::Status UseClockRealtime(VmState* state, bool on) {
  if (!on) {
    state->clock.flags &= ~KVM_CLOCK_REALTIME;
  } else if ((state->clock.flags & KVM_CLOCK_REALTIME) == 0) {
    return absl::InvalidArgumentError(
        "clock_realtime: the snapshot's clock has no real time (the saving host's KVM does not "
        "report KVM_CLOCK_REALTIME); load it without clock_realtime");
  }
  return absl::OkStatus();
}

namespace {

constexpr size_t kCpuidEntryBytes = 7 * 4;
constexpr size_t kMsrEntryBytes = 4 + 8;

void EncodeCpuid(const kvm_cpuid_entry2& e, ByteWriter& w) {
  for (uint32_t v : {e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx}) w.U32(v);
}

bool DecodeCpuid(ByteReader& r, kvm_cpuid_entry2* e) {
  *e = {};
  return r.U32(&e->function) && r.U32(&e->index) && r.U32(&e->flags) && r.U32(&e->eax) &&
         r.U32(&e->ebx) && r.U32(&e->ecx) && r.U32(&e->edx);
}

}  // namespace

void VcpuState::Encode(ByteWriter& w) const {
  w.U32(static_cast<uint32_t>(cpuid.size()));
  for (const kvm_cpuid_entry2& e : cpuid) EncodeCpuid(e, w);
  w.U32(static_cast<uint32_t>(msrs.size()));
  for (const kvm_msr_entry& e : msrs) {
    w.U32(e.index);
    w.U64(e.data);
  }
  w.Blob(regs);
  w.Blob(sregs);
  w.Blob(fpu);
  w.Bool(has_xsave);
  if (has_xsave) w.Blob(xsave);
  w.Bool(has_xcrs);
  if (has_xcrs) w.Blob(xcrs);
  w.Blob(lapic);
  w.U32(mp_state.mp_state);
  w.Blob(events);
}

bool VcpuState::Decode(ByteReader& r) {
  uint32_t n;
  if (!r.Count(&n, kMaxEntries, kCpuidEntryBytes)) return false;
  cpuid.assign(n, {});
  for (kvm_cpuid_entry2& e : cpuid) {
    if (!DecodeCpuid(r, &e)) return false;
  }
  if (!r.Count(&n, kMaxEntries, kMsrEntryBytes)) return false;
  msrs.assign(n, {});
  for (kvm_msr_entry& e : msrs) {
    uint64_t data;  // __u64 is unsigned long long, uint64_t unsigned long
    if (!r.U32(&e.index) || !r.U64(&data)) return false;
    e.data = data;
  }
  std::memset(&xsave, 0, sizeof(xsave));
  std::memset(&xcrs, 0, sizeof(xcrs));
  return r.Blob(&regs) && r.Blob(&sregs) && r.Blob(&fpu) && r.Bool(&has_xsave) &&
         (!has_xsave || r.Blob(&xsave)) && r.Bool(&has_xcrs) && (!has_xcrs || r.Blob(&xcrs)) &&
         r.Blob(&lapic) && r.U32(&mp_state.mp_state) && r.Blob(&events);
}

void VmState::Encode(ByteWriter& w) const {
  w.Blob(pic_master);
  w.Blob(pic_slave);
  w.Blob(ioapic);
  w.Blob(pit);
  w.Blob(clock);
}

bool VmState::Decode(ByteReader& r) {
  return r.Blob(&pic_master) && r.Blob(&pic_slave) && r.Blob(&ioapic) && r.Blob(&pit) &&
         r.Blob(&clock);
}

}  // namespace ember
