// rtnetlink, the little of it Ember needs: links, IPv4 addresses, routes
// and permanent neighbours (the agent configures the guest's interface with them; ember-oci
// reads the container's network namespace with them), and messages of any
// other kind built by the caller (ember-oci's traffic control).
//
// Dependency-free, as the rest of the agent's folder.
#pragma once

#include <linux/netlink.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ember::agent::netlink {

// One request under construction: the netlink header, the message's fixed
// header, then attributes (nested ones between Nest and EndNest).
class Message {
 public:
  Message(uint16_t type, uint16_t flags);
  // Appends the fixed header (ifinfomsg, rtmsg, tcmsg, ...), zeroed. The
  // pointer is good until the next append.
  template <class T>
  T* Header() {
    size_t at = Append(nullptr, sizeof(T));
    return reinterpret_cast<T*>(bytes_.data() + at);
  }
  void Put(uint16_t type, const void* data, size_t size);
  void PutU32(uint16_t type, uint32_t value) { Put(type, &value, sizeof(value)); }
  void PutString(uint16_t type, std::string_view s);  // with its NUL
  size_t Nest(uint16_t type);
  void EndNest(size_t at);
  nlmsghdr* header() { return reinterpret_cast<nlmsghdr*>(bytes_.data()); }

 private:
  size_t Append(const void* data, size_t size);  // padded to 4 bytes
  std::vector<uint8_t> bytes_;  // uint8_t storage kept 4-aligned by Append
};

// An attribute of a received message.
struct Attribute {
  uint16_t type;
  std::string_view data;
};
// The attributes in `bytes` (after a message's fixed header, or a nest's
// payload), stopping at the first malformed one.
std::vector<Attribute> Attributes(std::string_view bytes);

class Socket {
 public:
  Socket() = default;
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  bool Open(std::string* error);
  // Sends `m` asking for an acknowledgement and waits for it. The kernel's
  // refusal comes back as *err (errno) with *error naming `what`.
  bool Request(Message& m, const std::string& what, std::string* error, int* err = nullptr);
  // Sends a dump request and calls `each` with every message of the answer
  // (its type and the bytes after the netlink header). A dump a change
  // interrupted fails, with *interrupted set: try again.
  bool Dump(Message& m, const std::function<void(uint16_t, std::string_view)>& each,
            std::string* error, bool* interrupted = nullptr);

 private:
  bool Send(Message& m, std::string* error);
  int fd_ = -1;
  uint32_t seq_ = 0;
};

struct Link {
  int index = 0;
  std::string name;
  uint16_t type = 0;  // ARPHRD_*
  uint32_t flags = 0; // IFF_*
  uint32_t mtu = 0;
  std::array<uint8_t, 6> mac{};
  std::string kind;   // IFLA_INFO_KIND ("veth", "tun"), "" if none
};
bool ListLinks(Socket& s, std::vector<Link>* links, std::string* error);

// IPv4 only: the guest kernel is built without IPv6. Addresses are in host
// order (10.0.0.1 is 0x0a000001).
struct Address {
  int index = 0;
  uint32_t address = 0;
  uint8_t prefix = 0;
  friend bool operator==(const Address&, const Address&) = default;
};
bool ListAddresses(Socket& s, std::vector<Address>* addresses, std::string* error);

struct Route {
  uint32_t destination = 0;
  uint8_t prefix = 0;
  uint32_t gateway = 0;  // 0: none (on the link)
  uint8_t scope = 0;     // RT_SCOPE_*
  int index = 0;         // the outgoing interface
  bool onlink = false;   // RTNH_F_ONLINK: the gateway is on the link, whatever the subnets
  uint8_t protocol = 0;  // RTPROT_*: who made it (the kernel's for an address's subnet)
  friend bool operator==(const Route&, const Route&) = default;
};
// The main table's unicast routes.
bool ListRoutes(Socket& s, std::vector<Route>* routes, std::string* error);

// A permanent ARP entry (a CNI plugin's for a gateway that does not answer
// ARP).
struct Neighbour {
  int index = 0;
  uint32_t address = 0;
  std::array<uint8_t, 6> mac{};
  friend bool operator==(const Neighbour&, const Neighbour&) = default;
};
bool ListPermanentNeighbours(Socket& s, std::vector<Neighbour>* neighbours, std::string* error);
bool AddNeighbour(Socket& s, const Neighbour& n, std::string* error);

// Sets the link's MAC (when `mac` is not null) and MTU (when not 0), then
// brings it up.
bool SetLinkUp(Socket& s, int index, const std::array<uint8_t, 6>* mac, uint32_t mtu,
               std::string* error);
// Adds an address or a route; one that is there already is no error.
bool AddAddress(Socket& s, const Address& a, std::string* error);
bool AddRoute(Socket& s, const Route& r, std::string* error);
bool DeleteLink(Socket& s, int index, std::string* error);

std::string FormatIpv4(uint32_t address);

}  // namespace ember::agent::netlink
