// For tests of network set-up (the agent's in the guest, ember-oci's on
// the host): a network namespace of the test's own, so nothing the host
// has is touched and everything made goes with it.
#pragma once

#include <sched.h>

#include <functional>
#include <string>
#include <thread>

namespace ember::testing {

// Runs `body` on a thread of its own in a new network namespace (a
// thread's namespace is its own; what it forks inherits it). The namespace
// and what is in it go when the thread ends. False when the namespace
// cannot be made (not root).
inline bool InNewNetworkNamespace(const std::function<void()>& body) {
  bool made = false;
  std::thread([&] {
    made = unshare(CLONE_NEWNET) == 0;
    if (made) body();
  }).join();
  return made;
}

}  // namespace ember::testing
