// The VMM loop over one device's backend fd, as the device manager
// registers it (level-triggered, the device's own events), for tests that
// check a device cannot make that loop spin.
#pragma once

#include <sys/epoll.h>

#include <gtest/gtest.h>

#include "src/common/unique_fd.h"
#include "src/devices/virtio/mmio_transport.h"

namespace ember::virtio::testing {

// Waits `rounds` times, `timeout_ms` each, handing every wakeup to the
// transport, and returns how many waits woke: a device that leaves its fd
// ready wakes every round.
inline int BackendWakeups(MmioTransport& transport, int rounds = 1000, int timeout_ms = 0) {
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev = {};
  ev.events = transport.device().backend_events();
  EXPECT_EQ(epoll_ctl(ep.get(), EPOLL_CTL_ADD, transport.device().backend_fd(), &ev), 0);
  int wakeups = 0;
  for (int i = 0; i < rounds; i++) {
    if (epoll_wait(ep.get(), &ev, 1, timeout_ms) != 1) continue;
    wakeups++;
    transport.NotifyBackend(ev.events);
  }
  return wakeups;
}

// The same over the device's timer_fd: how many of `rounds` waits of
// `timeout_ms` found the timer expired (each expiry handed to the transport).
inline int TimerWakeups(MmioTransport& transport, int rounds = 1000, int timeout_ms = 0) {
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  epoll_event ev = {};
  ev.events = EPOLLIN;
  EXPECT_EQ(epoll_ctl(ep.get(), EPOLL_CTL_ADD, transport.device().timer_fd(), &ev), 0);
  int wakeups = 0;
  for (int i = 0; i < rounds; i++) {
    if (epoll_wait(ep.get(), &ev, 1, timeout_ms) != 1) continue;
    wakeups++;
    transport.NotifyTimer();
  }
  return wakeups;
}

}  // namespace ember::virtio::testing
