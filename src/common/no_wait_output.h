// Output a peer may stop reading: the guest's console on stdout and the
// log on stderr. A pipe, FIFO or socket nobody reads would hold the thread
// that writes to it (a vCPU, the API or the VMM thread) and every pause,
// snapshot or stop that waits for that thread. Ember drops what does not
// fit instead (the serial and logger metrics count it) and leaves the
// flags of the descriptors it shares with its parent alone.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace ember {

// A non-blocking opening of its own of `fd` if `fd` is a pipe or FIFO
// (through /proc/self/fd), else `fd` itself; `fd` too without /proc (a
// jail that has none). A socket cannot be opened again: WriteNoWait
// sends to it without waiting.
int OwnNoWaitOpening(int fd);

bool IsSocket(int fd);

// write(), or for a socket send(MSG_DONTWAIT | MSG_NOSIGNAL), which waits
// for nothing on this call only. Async-signal-safe.
ssize_t WriteNoWait(int fd, bool socket, const void* data, size_t len);

}  // namespace ember
