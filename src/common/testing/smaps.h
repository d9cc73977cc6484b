// What /proc/self/smaps says of this process's mappings, for tests that
// check the advice a mapping got.
#pragma once

#include <string>

namespace ember::testing {

// The VmFlags of the mapping that holds `addr` ("rd wr mr mw me ac mg":
// "mg" is VM_MERGEABLE, "dc" VM_DONTCOPY), each flag followed by a space;
// empty if no mapping holds it.
std::string VmFlags(const void* addr);
// The value of smaps field `key` ("KernelPageSize:") for that mapping, as
// written ("2048 kB"); empty if none.
std::string SmapsField(const void* addr, const std::string& key);

}  // namespace ember::testing
