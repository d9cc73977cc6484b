// The guest's side of a container's network: its one Ethernet interface
// takes the address, MTU, addresses and routes of the interface the
// container's network namespace has on the host (NetworkSpec, protocol.h),
// whose traffic ember-oci redirects to and from the guest's TAP device.
#pragma once

#include <string>

#include "src/agent/protocol.h"

namespace ember::agent {

// Brings the loopback interface up, then the first Ethernet interface with
// `network`'s MAC and MTU, adds its addresses and neighbours, then its
// routes (those on the link first, so a gateway outside every subnet, as
// Calico's, is reachable when the routes through it are added). What is
// there already is no error. False with *error on the first failure.
bool ConfigureNetwork(const NetworkSpec& network, std::string* error);

}  // namespace ember::agent
