// CPU state at the kernel's first instruction: descriptor tables and page
// tables in guest memory, then registers, MSRs, FPU and LAPIC of each vCPU.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "src/vstate/guest_memory.h"
#include "src/vmm/kvm.h"

namespace ember::x86_64 {

// How the kernel is entered.
enum class BootProtocol {
  kLinux64,  // 64-bit Linux boot protocol: long mode, RSI = zero page
  kPvh,      // x86/HVM direct boot: 32-bit protected mode, RBX = start info
};

// A GDT entry from its parts (flags: access byte and the G/DB/L nibble).
uint64_t GdtEntry(uint16_t flags, uint32_t base, uint32_t limit);
// The KVM segment a GDT entry describes, limit scaled by its G bit.
kvm_segment SegmentFromGdt(uint64_t entry, uint8_t table_index);

// Writes the GDT, an empty IDT and (for kLinux64) identity page tables
// mapping the first 1 GiB with 2 MiB pages.
absl::Status WriteBootTables(const GuestMemory& mem, BootProtocol protocol);

// Segment, control and paging registers for `protocol`, over `sregs` as
// read from a fresh vCPU.
kvm_sregs BootSregs(kvm_sregs sregs, BootProtocol protocol);
kvm_regs BootRegs(BootProtocol protocol, uint64_t entry);
std::vector<kvm_msr_entry> BootMsrs();
kvm_fpu BootFpu();
// LINT0 as ExtINT (the PIC) and LINT1 as NMI, as firmware would leave them.
void SetLapicLints(kvm_lapic_state& lapic);

// Applies all of the above to one vCPU.
absl::Status SetupVcpuRegs(const VcpuFd& vcpu, BootProtocol protocol, uint64_t entry);

}  // namespace ember::x86_64
