#include "src/agent/network.h"

#include <net/if.h>  // before the linux/ headers, which defer to it
#include <linux/if_arp.h>
#include <linux/rtnetlink.h>

#include <algorithm>

#include "src/agent/netlink.h"

namespace ember::agent {

bool ConfigureNetwork(const NetworkSpec& network, std::string* error) {
  netlink::Socket s;
  std::vector<netlink::Link> links;
  if (!s.Open(error) || !netlink::ListLinks(s, &links, error)) return false;
  const netlink::Link* ethernet = nullptr;
  for (const netlink::Link& l : links) {
    if (l.type == ARPHRD_LOOPBACK && !netlink::SetLinkUp(s, l.index, nullptr, 0, error)) {
      return false;
    }
    if (l.type == ARPHRD_ETHER && (ethernet == nullptr || l.index < ethernet->index)) {
      ethernet = &l;
    }
  }
  if (ethernet == nullptr) {
    *error = "the guest has no network interface for the container's network";
    return false;
  }
  int index = ethernet->index;
  bool has_mac = network.mac != std::array<uint8_t, 6>{};
  if (!netlink::SetLinkUp(s, index, has_mac ? &network.mac : nullptr, network.mtu, error)) {
    return false;
  }
  for (const NetworkSpec::Address& a : network.addresses) {
    netlink::Address address{index, a.address, static_cast<uint8_t>(a.prefix)};
    if (!netlink::AddAddress(s, address, error)) return false;
  }
  for (const NetworkSpec::Neighbour& n : network.neighbours) {
    if (!netlink::AddNeighbour(s, {index, n.address, n.mac}, error)) return false;
  }
  // Narrower scopes first (host, link, site, then universe): a gateway is
  // reachable once the routes to it are there.
  std::vector<NetworkSpec::Route> routes = network.routes;
  std::stable_sort(routes.begin(), routes.end(),
                   [](const auto& a, const auto& b) { return a.scope > b.scope; });
  for (const NetworkSpec::Route& r : routes) {
    netlink::Route route{r.destination, static_cast<uint8_t>(r.prefix), r.gateway,
                         static_cast<uint8_t>(r.scope), index,
                         (r.flags & NetworkSpec::Route::kOnLink) != 0};
    if (!netlink::AddRoute(s, route, error)) return false;
  }
  return true;
}

}  // namespace ember::agent
