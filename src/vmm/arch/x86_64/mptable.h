// Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI
// finds its CPUs, its IOAPIC and how ISA interrupts are wired.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "src/vstate/guest_memory.h"

namespace ember::x86_64 {

// The most vCPUs the table (and Ember) supports; all fit in the 1 KiB at
// kEbdaStart.
inline constexpr uint32_t kMaxVcpus = 32;
// IOAPIC pins wired one to one to ISA IRQs and virtio GSIs.
inline constexpr uint32_t kIoapicPins = 24;

// Writes the floating pointer and configuration table at kEbdaStart for
// `vcpu_count` CPUs with APIC ids 0..vcpu_count-1 and one IOAPIC.
absl::Status WriteMpTable(const GuestMemory& mem, uint32_t vcpu_count);

}  // namespace ember::x86_64
