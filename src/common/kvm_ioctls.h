// KVM ioctl numbers C++ cannot take from linux/kvm.h as they are.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace ember {

// linux/kvm.h declares the trailing arrays of kvm_cpuid2 and kvm_msrs with
// __DECLARE_FLEX_ARRAY, whose empty struct is one byte in C++: sizeof, the
// array offset and so the ioctl numbers come out wrong. These are the C
// layouts: an 8-byte header, the entries right after it.
struct CountHeader {
  uint32_t count;
  uint32_t padding;
};
static_assert(sizeof(CountHeader) == 8);
inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CountHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CountHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, CountHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, CountHeader);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, CountHeader);
// kvm_msr_list: a 4-byte count, then the indices.
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, uint32_t);
// kvm_xsave: the 4 KiB region (its flex tail is for KVM_GET_XSAVE2 only).
struct Xsave {
  uint32_t region[1024];
};
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, Xsave);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, Xsave);

}  // namespace ember
