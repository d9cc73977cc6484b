// Facts about the host that change how Ember boots a guest.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ember {

// Kernel options a guest needs on a PVM host (KVM's software hypervisor,
// shared/PLATFORM.md): the emulator lacks XSAVE, POPCNT, CMPXCHG16B and
// CLAC/STAC, and cannot emulate the INT3 of the kernel's self-test. The
// last two come from Ember's kernel patches (resources/kernels/patches):
// noint3selftest skips that self-test, and pvmuser lets user space make
// system calls (PVM delivers them as page faults) and skips the fwait the
// emulator stops on.
inline constexpr char kPvmGuestArgs[] =
    "noxsave clearcpuid=popcnt,cx16,smap,smep noint3selftest pvmuser";

// Whether this CPU has VMX or SVM (CPUID).
bool CpuHasHardwareVirtualization();

// True when the host's KVM is PVM: its module is in sysfs or, where sysfs
// is not mounted (in a jail), the CPU has no VMX or SVM. `sysfs_module` is
// for tests.
bool IsPvmHost(const std::string& sysfs_module = "/sys/module/kvm_pvm");

// `boot_args` plus kPvmGuestArgs on a PVM host (once, however often called).
std::string AddHostBootArgs(const std::string& boot_args, bool pvm_host);

// The CPUs' physical address width (CPUID.80000008h:EAX[7:0]), which the
// guest's CPUID passes on: guest memory and pmem must end below it.
uint32_t HostPhysicalAddressBits();
// Host RAM in MiB, from sysinfo(2).
absl::StatusOr<uint64_t> HostMemoryMib();

}  // namespace ember
