#include "src/vmm/arch/x86_64/regs.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "src/common/status_macros.h"
#include "src/vmm/arch/x86_64/layout.h"

namespace ember::x86_64 {
namespace {

constexpr uint64_t kCr0Pe = 1ULL << 0;
constexpr uint64_t kCr0Et = 1ULL << 4;
constexpr uint64_t kCr0Pg = 1ULL << 31;
constexpr uint64_t kCr4Pae = 1ULL << 5;
constexpr uint64_t kEferLme = 1ULL << 8;
constexpr uint64_t kEferLma = 1ULL << 10;
constexpr uint64_t kPtePresentRw = 0x3;
constexpr uint64_t kPtePageSize = 0x80;

// GDT slots: null, code, data, TSS.
constexpr uint8_t kCodeIndex = 1;
constexpr uint8_t kDataIndex = 2;
constexpr uint8_t kTssIndex = 3;

// Access byte plus the G/DB/L nibble, for each protocol's flat segments.
constexpr uint16_t kCode64 = 0xa09b;  // G, L, present, code r/x accessed
constexpr uint16_t kCode32 = 0xc09b;  // G, D, present, code r/x accessed
constexpr uint16_t kData = 0xc093;    // G, B, present, data r/w accessed
constexpr uint16_t kTss64 = 0x808b;   // G, present, 64-bit busy TSS
constexpr uint16_t kTss32 = 0x008b;

enum : uint32_t {
  kMsrIa32Tsc = 0x10,
  kMsrSysenterCs = 0x174,
  kMsrSysenterEsp = 0x175,
  kMsrSysenterEip = 0x176,
  kMsrMiscEnable = 0x1a0,
  kMsrMtrrDefType = 0x2ff,
  kMsrStar = 0xc0000081,
  kMsrLstar = 0xc0000082,
  kMsrCstar = 0xc0000083,
  kMsrSyscallMask = 0xc0000084,
  kMsrKernelGsBase = 0xc0000102,
};
constexpr uint64_t kMiscEnableFastString = 1;
constexpr uint64_t kMtrrEnableWriteBack = (1 << 11) | 6;

constexpr uint32_t kApicLvt0 = 0x350;
constexpr uint32_t kApicLvt1 = 0x360;
constexpr uint32_t kApicModeNmi = 4;
constexpr uint32_t kApicModeExtInt = 7;

uint32_t LapicRead(const kvm_lapic_state& lapic, uint32_t reg) {
  uint32_t v;
  std::memcpy(&v, lapic.regs + reg, sizeof(v));
  return v;
}

void LapicWrite(kvm_lapic_state& lapic, uint32_t reg, uint32_t v) {
  std::memcpy(lapic.regs + reg, &v, sizeof(v));
}

uint32_t WithDeliveryMode(uint32_t lvt, uint32_t mode) { return (lvt & ~0x700u) | (mode << 8); }

std::vector<uint64_t> Gdt(BootProtocol protocol) {
  bool pvh = protocol == BootProtocol::kPvh;
  return {0, GdtEntry(pvh ? kCode32 : kCode64, 0, 0xfffff), GdtEntry(kData, 0, 0xfffff),
          GdtEntry(pvh ? kTss32 : kTss64, 0, 0xfffff)};
}

}  // namespace

uint64_t GdtEntry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t{base} & 0xff000000) << 32) | ((uint64_t{flags} & 0xf0ff) << 40) |
         ((uint64_t{limit} & 0xf0000) << 32) | ((uint64_t{base} & 0xffffff) << 16) |
         (uint64_t{limit} & 0xffff);
}

kvm_segment SegmentFromGdt(uint64_t entry, uint8_t table_index) {
  uint32_t base = static_cast<uint32_t>(((entry >> 16) & 0xffffff) | ((entry >> 32) & 0xff000000));
  uint32_t limit = static_cast<uint32_t>((entry & 0xffff) | ((entry >> 32) & 0xf0000));
  uint8_t g = (entry >> 55) & 1;
  kvm_segment seg = {};
  seg.base = base;
  seg.limit = g ? (limit << 12) | 0xfff : limit;
  seg.selector = static_cast<uint16_t>(table_index * 8);
  seg.type = (entry >> 40) & 0xf;
  seg.s = (entry >> 44) & 1;
  seg.dpl = (entry >> 45) & 3;
  seg.present = (entry >> 47) & 1;
  seg.avl = (entry >> 52) & 1;
  seg.l = (entry >> 53) & 1;
  seg.db = (entry >> 54) & 1;
  seg.g = g;
  seg.unusable = seg.present ? 0 : 1;
  return seg;
}

absl::Status WriteBootTables(const GuestMemory& mem, BootProtocol protocol) {
  std::vector<uint64_t> gdt = Gdt(protocol);
  RETURN_IF_ERROR(mem.Write(kGdtStart, std::span(reinterpret_cast<const uint8_t*>(gdt.data()),
                                                 gdt.size() * sizeof(uint64_t))));
  RETURN_IF_ERROR(mem.WriteObj(kIdtStart, uint64_t{0}));
  if (protocol == BootProtocol::kPvh) return absl::OkStatus();

  RETURN_IF_ERROR(mem.WriteObj(kPml4Start, kPdptStart | kPtePresentRw));
  RETURN_IF_ERROR(mem.WriteObj(kPdptStart, kPdStart | kPtePresentRw));
  for (uint64_t i = 0; i < 512; i++) {
    RETURN_IF_ERROR(
        mem.WriteObj(kPdStart + i * 8, (i << 21) | kPtePresentRw | kPtePageSize));
  }
  return absl::OkStatus();
}

kvm_sregs BootSregs(kvm_sregs sregs, BootProtocol protocol) {
  std::vector<uint64_t> gdt = Gdt(protocol);
  kvm_segment code = SegmentFromGdt(gdt[kCodeIndex], kCodeIndex);
  kvm_segment data = SegmentFromGdt(gdt[kDataIndex], kDataIndex);
  kvm_segment tss = SegmentFromGdt(gdt[kTssIndex], kTssIndex);
  sregs.gdt.base = kGdtStart;
  sregs.gdt.limit = static_cast<uint16_t>(gdt.size() * 8 - 1);
  sregs.idt.base = kIdtStart;
  sregs.idt.limit = 7;
  sregs.cs = code;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.tr = tss;
  if (protocol == BootProtocol::kPvh) {
    sregs.cr0 = kCr0Pe | kCr0Et;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
  } else {
    sregs.cr0 = kCr0Pe | kCr0Et | kCr0Pg;
    sregs.cr3 = kPml4Start;
    sregs.cr4 = kCr4Pae;
    sregs.efer = kEferLme | kEferLma;
  }
  return sregs;
}

kvm_regs BootRegs(BootProtocol protocol, uint64_t entry) {
  kvm_regs regs = {};
  regs.rflags = 0x2;  // bit 1 is reserved and always set
  regs.rip = entry;
  if (protocol == BootProtocol::kPvh) {
    regs.rbx = kPvhInfoStart;
  } else {
    regs.rsp = regs.rbp = kBootStackPointer;
    regs.rsi = kZeroPageStart;
  }
  return regs;
}

std::vector<kvm_msr_entry> BootMsrs() {
  auto msr = [](uint32_t index, uint64_t data) { return kvm_msr_entry{index, 0, data}; };
  return {msr(kMsrSysenterCs, 0),   msr(kMsrSysenterEsp, 0), msr(kMsrSysenterEip, 0),
          msr(kMsrStar, 0),         msr(kMsrLstar, 0),       msr(kMsrCstar, 0),
          msr(kMsrSyscallMask, 0),  msr(kMsrKernelGsBase, 0), msr(kMsrIa32Tsc, 0),
          msr(kMsrMiscEnable, kMiscEnableFastString),
          msr(kMsrMtrrDefType, kMtrrEnableWriteBack)};
}

kvm_fpu BootFpu() {
  kvm_fpu fpu = {};
  fpu.fcw = 0x37f;     // x87 reset value: all exceptions masked
  fpu.mxcsr = 0x1f80;  // SSE reset value
  return fpu;
}

void SetLapicLints(kvm_lapic_state& lapic) {
  LapicWrite(lapic, kApicLvt0, WithDeliveryMode(LapicRead(lapic, kApicLvt0), kApicModeExtInt));
  LapicWrite(lapic, kApicLvt1, WithDeliveryMode(LapicRead(lapic, kApicLvt1), kApicModeNmi));
}

absl::Status SetupVcpuRegs(const VcpuFd& vcpu, BootProtocol protocol, uint64_t entry) {
  std::vector<kvm_msr_entry> msrs = BootMsrs();
  ASSIGN_OR_RETURN(int set, vcpu.SetMsrs(msrs));
  if (set != static_cast<int>(msrs.size())) {
    return absl::InternalError(
        absl::StrFormat("KVM_SET_MSRS: KVM refused MSR %#x", msrs[set].index));
  }
  RETURN_IF_ERROR(vcpu.SetRegs(BootRegs(protocol, entry)));
  ASSIGN_OR_RETURN(kvm_sregs sregs, vcpu.GetSregs());
  RETURN_IF_ERROR(vcpu.SetSregs(BootSregs(sregs, protocol)));
  RETURN_IF_ERROR(vcpu.SetFpu(BootFpu()));
  ASSIGN_OR_RETURN(kvm_lapic_state lapic, vcpu.GetLapic());
  SetLapicLints(lapic);
  return vcpu.SetLapic(lapic);
}

}  // namespace ember::x86_64
