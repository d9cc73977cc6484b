// The CPUID each vCPU sees: what KVM supports, with the topology of this VM
// (APIC id, core count, cache sharing) and the hypervisor bit written in.
#pragma once

#include <cstdint>

#include "src/vmm/kvm.h"

namespace ember::x86_64 {

// Returns `supported` (from KVM_GET_SUPPORTED_CPUID) adjusted for vCPU
// `index` of `count`: one socket of `count` single-thread cores, or with
// `smt` (machine-config.smt, `count` 1 or even) of count / 2 cores of two
// threads, vCPUs 2k and 2k + 1 sharing core k; the APIC id is the index.
// Pure, so tests can feed it any host's answer.
CpuidEntries FilterCpuid(const CpuidEntries& supported, uint32_t index, uint32_t count,
                         bool smt = false);

}  // namespace ember::x86_64
