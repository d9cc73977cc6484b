// Thread stacks kept in 4 KiB pages.
#pragma once

namespace ember {

// Where transparent huge pages are "always" (Debian's kernels) and the
// kernel does not advise MAP_STACK mappings so itself (6.1 does not; recent
// kernels do), khugepaged collapses the used corner of a thread's 8 MiB
// stack into a 2 MiB page: 2 MiB more RSS per thread for a few KiB of
// stack, which a host of many VMMs pays many times. Each long-lived thread
// calls this first, before its seccomp filter.
void KeepStackInSmallPages();

}  // namespace ember
