// Ember's own code and read-only data are mapped from its binary, and each
// page start-up touches once stays in the process's RSS for the life of
// the VM: the command line, the configuration, kernel loading, building the
// VM, glibc's and libstdc++'s initialisation, and, for each of them, the
// pages the kernel maps around the one touched (fault-around, 64 KiB at a
// time). That is most of the binary's 2.4 MB of code (2.0 of the 2.5 MiB
// a VM cost beside its guest memory); the running VM touches a few hundred
// KiB of it. Start-up also leaves free memory inside the heap (20 KiB).
//
// Releasing the start-up pages unmaps them (MADV_DONTNEED on the
// read-only segments): they stay in the page cache, shared by every Ember
// process, and a page touched again is mapped again from it (a minor
// fault). Text and read-only data are never written, so nothing is lost,
// except a private copy a debugger's breakpoint or a uprobe made of a page:
// those pages are kept where /proc/self/pagemap tells them apart. In a jail
// without /proc, a breakpoint or uprobe placed in Ember's code before the
// release stops firing (one placed after it is unaffected).
#pragma once

#include <cstdint>
#include <vector>

namespace ember {

struct PageRange {
  uintptr_t start, end;  // page-aligned
};

// The executable's read-only PT_LOAD segments, whole pages only (a page
// shared with a writable segment is left out), in address order.
std::vector<PageRange> ReadOnlySegments();

// Finds the binary's read-only segments and opens /proc/self/pagemap where
// there is one. Call once, on the main thread, before any other starts.
void PrepareStartupPageRelease();

// Unmaps the read-only segments' pages, keeping the private copies
// described above, and gives the heap's free pages back (malloc_trim).
// Does its work once per process, at its first call after
// PrepareStartupPageRelease (later calls, and calls without it, do
// nothing), with only read, brk and madvise(MADV_DONTNEED): every thread's
// seccomp filter allows them. Meant for the end of start-up (the VMM
// thread entering its loop, the vCPUs running).
void ReleaseStartupPages();

}  // namespace ember
