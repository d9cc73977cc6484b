#include "src/agent/netlink.h"

#include <net/if.h>  // before the linux/ headers, which defer to it
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_arp.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>

namespace ember::agent::netlink {
namespace {

constexpr size_t kReceiveBuffer = 64 * 1024;

// One datagram; an error, rather than part of it, when it does not fit.
ssize_t Receive(int fd, std::vector<char>* buffer, std::string* error) {
  while (true) {
    ssize_t n = recv(fd, buffer->data(), buffer->size(), MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || static_cast<size_t>(n) > buffer->size()) {
      *error = "netlink receive: " +
               std::string(n < 0 ? strerror(errno) : n == 0 ? "closed" : "message truncated");
      return -1;
    }
    return n;
  }
}

// An NLMSG_ERROR's (or NLMSG_DONE's) code as a positive errno; 0 for an ack.
int ErrorCode(const nlmsghdr* h) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(int))) return EPROTO;
  int code;
  memcpy(&code, NLMSG_DATA(h), sizeof(code));
  return code < 0 ? -code : 0;
}

uint32_t Ipv4At(std::string_view data) {
  uint32_t v = 0;
  if (data.size() == 4) memcpy(&v, data.data(), 4);
  return ntohl(v);
}

std::string_view Payload(std::string_view message, size_t header) {
  return message.size() < NLMSG_ALIGN(header) ? std::string_view()
                                               : message.substr(NLMSG_ALIGN(header));
}

// Dumps `get` for `family` and calls `each` with the fixed header and the
// attributes of every answer of type `reply` (after `restart`, which clears
// what an earlier attempt gathered). Each of these headers
// (ifinfomsg, ifaddrmsg, rtmsg, ndmsg) starts with its family byte.
template <class Header>
bool DumpEach(Socket& s, uint16_t get, uint16_t reply, uint8_t family,
              const std::function<void()>& restart,
              const std::function<void(const Header&, const std::vector<Attribute>&)>& each,
              std::string* error) {
  // A dump a change interrupted is read again from the start.
  for (int attempt = 0;; ++attempt) {
    restart();
    Message m(get, 0);
    *reinterpret_cast<uint8_t*>(m.Header<Header>()) = family;
    bool interrupted = false;
    bool ok = s.Dump(m, [&](uint16_t type, std::string_view msg) {
      if (type != reply || msg.size() < sizeof(Header)) return;
      Header info;
      memcpy(&info, msg.data(), sizeof(info));
      each(info, Attributes(Payload(msg, sizeof(Header))));
    }, error, &interrupted);
    if (ok || !interrupted || attempt == 4) return ok;
  }
}

}  // namespace

Message::Message(uint16_t type, uint16_t flags) {
  Append(nullptr, sizeof(nlmsghdr));
  header()->nlmsg_type = type;
  header()->nlmsg_flags = NLM_F_REQUEST | flags;
}

size_t Message::Append(const void* data, size_t size) {
  size_t at = bytes_.size();
  bytes_.resize(at + NLMSG_ALIGN(size), 0);
  if (data != nullptr) memcpy(bytes_.data() + at, data, size);
  header()->nlmsg_len = static_cast<uint32_t>(bytes_.size());
  return at;
}

void Message::Put(uint16_t type, const void* data, size_t size) {
  nlattr a{static_cast<uint16_t>(NLA_HDRLEN + size), type};
  Append(&a, sizeof(a));
  Append(data, size);
}

void Message::PutString(uint16_t type, std::string_view s) {
  std::string with_nul(s);
  Put(type, with_nul.c_str(), with_nul.size() + 1);
}

size_t Message::Nest(uint16_t type) {
  nlattr a{NLA_HDRLEN, type};
  return Append(&a, sizeof(a));
}

void Message::EndNest(size_t at) {
  reinterpret_cast<nlattr*>(bytes_.data() + at)->nla_len =
      static_cast<uint16_t>(bytes_.size() - at);
}

std::vector<Attribute> Attributes(std::string_view bytes) {
  std::vector<Attribute> out;
  while (bytes.size() >= NLA_HDRLEN) {
    nlattr a;
    memcpy(&a, bytes.data(), sizeof(a));
    if (a.nla_len < NLA_HDRLEN || a.nla_len > bytes.size()) break;
    out.push_back({static_cast<uint16_t>(a.nla_type & NLA_TYPE_MASK),
                   bytes.substr(NLA_HDRLEN, a.nla_len - NLA_HDRLEN)});
    bytes.remove_prefix(std::min<size_t>(NLA_ALIGN(a.nla_len), bytes.size()));
  }
  return out;
}

Socket::~Socket() {
  if (fd_ >= 0) close(fd_);
}

bool Socket::Open(std::string* error) {
  fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd_ < 0) *error = std::string("cannot open a netlink socket: ") + strerror(errno);
  return fd_ >= 0;
}

bool Socket::Send(Message& m, std::string* error) {
  m.header()->nlmsg_seq = ++seq_;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  ssize_t n = sendto(fd_, m.header(), m.header()->nlmsg_len, 0,
                     reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel));
  if (n == static_cast<ssize_t>(m.header()->nlmsg_len)) return true;
  *error = std::string("netlink send: ") + strerror(errno);
  return false;
}

bool Socket::Request(Message& m, const std::string& what, std::string* error, int* err) {
  m.header()->nlmsg_flags |= NLM_F_ACK;
  if (err) *err = 0;
  if (!Send(m, error)) return false;
  std::vector<char> buffer(kReceiveBuffer);
  while (true) {
    ssize_t n = Receive(fd_, &buffer, error);
    if (n < 0) return false;
    for (auto* h = reinterpret_cast<nlmsghdr*>(buffer.data()); NLMSG_OK(h, n);
         h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != seq_ || h->nlmsg_type != NLMSG_ERROR) continue;
      int code = ErrorCode(h);
      if (code == 0) return true;
      if (err) *err = code;
      *error = what + ": " + strerror(code);
      return false;
    }
  }
}

bool Socket::Dump(Message& m, const std::function<void(uint16_t, std::string_view)>& each,
                  std::string* error, bool* interrupted) {
  m.header()->nlmsg_flags |= NLM_F_DUMP;
  if (!Send(m, error)) return false;
  std::vector<char> buffer(kReceiveBuffer);
  bool partial = false;
  while (true) {
    ssize_t n = Receive(fd_, &buffer, error);
    if (n < 0) return false;
    for (auto* h = reinterpret_cast<nlmsghdr*>(buffer.data()); NLMSG_OK(h, n);
         h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != seq_) continue;
      // A table that changed during the dump may have been read in part:
      // read on to its end (the socket takes no other request before),
      // then say so.
      partial |= (h->nlmsg_flags & NLM_F_DUMP_INTR) != 0;
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
        int code = ErrorCode(h);
        if (code == 0 && h->nlmsg_type == NLMSG_DONE && !partial) return true;
        if (interrupted) *interrupted = partial;
        *error = std::string("netlink dump: ") +
                 (partial ? "interrupted by a change" : strerror(code ? code : EPROTO));
        return false;
      }
      if (!partial) {
        each(h->nlmsg_type, std::string_view(static_cast<const char*>(NLMSG_DATA(h)),
                                             h->nlmsg_len - NLMSG_HDRLEN));
      }
    }
  }
}

bool ListLinks(Socket& s, std::vector<Link>* links, std::string* error) {
  return DumpEach<ifinfomsg>(s, RTM_GETLINK, RTM_NEWLINK, AF_UNSPEC, [&] { links->clear(); },
                             [&](const ifinfomsg& info, const std::vector<Attribute>& attrs) {
    Link l;
    l.index = info.ifi_index;
    l.type = info.ifi_type;
    l.flags = info.ifi_flags;
    for (const Attribute& a : attrs) {
      if (a.type == IFLA_IFNAME) l.name = std::string(a.data.substr(0, a.data.find('\0')));
      if (a.type == IFLA_MTU && a.data.size() == 4) memcpy(&l.mtu, a.data.data(), 4);
      if (a.type == IFLA_ADDRESS && a.data.size() == 6) memcpy(l.mac.data(), a.data.data(), 6);
      if (a.type == IFLA_LINKINFO) {
        for (const Attribute& i : Attributes(a.data)) {
          if (i.type == IFLA_INFO_KIND) l.kind = std::string(i.data.substr(0, i.data.find('\0')));
        }
      }
    }
    links->push_back(l);
  }, error);
}

bool ListAddresses(Socket& s, std::vector<Address>* addresses, std::string* error) {
  return DumpEach<ifaddrmsg>(s, RTM_GETADDR, RTM_NEWADDR, AF_INET, [&] { addresses->clear(); },
                             [&](const ifaddrmsg& info, const std::vector<Attribute>& attrs) {
    if (info.ifa_family != AF_INET) return;
    Address a{static_cast<int>(info.ifa_index), 0, info.ifa_prefixlen};
    bool local = false;
    for (const Attribute& attr : attrs) {
      // IFA_LOCAL is the interface's own address (IFA_ADDRESS the peer's
      // on point-to-point links).
      if (attr.type == IFA_LOCAL) {
        a.address = Ipv4At(attr.data);
        local = true;
      }
      if (attr.type == IFA_ADDRESS && !local) a.address = Ipv4At(attr.data);
    }
    addresses->push_back(a);
  }, error);
}

bool ListRoutes(Socket& s, std::vector<Route>* routes, std::string* error) {
  return DumpEach<rtmsg>(s, RTM_GETROUTE, RTM_NEWROUTE, AF_INET, [&] { routes->clear(); },
                         [&](const rtmsg& info, const std::vector<Attribute>& attrs) {
    uint32_t table = info.rtm_table;
    Route r;
    r.prefix = info.rtm_dst_len;
    r.scope = info.rtm_scope;
    r.onlink = info.rtm_flags & RTNH_F_ONLINK;
    r.protocol = info.rtm_protocol;
    for (const Attribute& a : attrs) {
      if (a.type == RTA_TABLE && a.data.size() == 4) memcpy(&table, a.data.data(), 4);
      if (a.type == RTA_DST) r.destination = Ipv4At(a.data);
      if (a.type == RTA_GATEWAY) r.gateway = Ipv4At(a.data);
      if (a.type == RTA_OIF && a.data.size() == 4) memcpy(&r.index, a.data.data(), 4);
    }
    if (info.rtm_family == AF_INET && table == RT_TABLE_MAIN && info.rtm_type == RTN_UNICAST) {
      routes->push_back(r);
    }
  }, error);
}

bool SetLinkUp(Socket& s, int index, const std::array<uint8_t, 6>* mac, uint32_t mtu,
               std::string* error) {
  Message m(RTM_NEWLINK, 0);
  auto* info = m.Header<ifinfomsg>();
  info->ifi_family = AF_UNSPEC;
  info->ifi_index = index;
  info->ifi_flags = IFF_UP;
  info->ifi_change = IFF_UP;
  if (mac != nullptr) m.Put(IFLA_ADDRESS, mac->data(), mac->size());
  if (mtu != 0) m.PutU32(IFLA_MTU, mtu);
  return s.Request(m, "cannot set up interface " + std::to_string(index), error);
}

bool AddAddress(Socket& s, const Address& a, std::string* error) {
  Message m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  auto* info = m.Header<ifaddrmsg>();
  info->ifa_family = AF_INET;
  info->ifa_prefixlen = a.prefix;
  info->ifa_index = static_cast<uint32_t>(a.index);
  uint32_t address = htonl(a.address);
  m.Put(IFA_LOCAL, &address, 4);
  m.Put(IFA_ADDRESS, &address, 4);
  if (a.prefix < 31) {
    uint32_t broadcast = htonl(a.address | (a.prefix == 0 ? ~0u : ~0u >> a.prefix));
    m.Put(IFA_BROADCAST, &broadcast, 4);
  }
  int err;
  std::string what = "cannot add address " + FormatIpv4(a.address) + "/" +
                     std::to_string(a.prefix);
  return s.Request(m, what, error, &err) || err == EEXIST;
}

bool AddRoute(Socket& s, const Route& r, std::string* error) {
  Message m(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  auto* info = m.Header<rtmsg>();
  info->rtm_family = AF_INET;
  info->rtm_dst_len = r.prefix;
  info->rtm_table = RT_TABLE_MAIN;
  info->rtm_protocol = RTPROT_BOOT;
  info->rtm_scope = r.scope;
  info->rtm_type = RTN_UNICAST;
  info->rtm_flags = r.onlink ? RTNH_F_ONLINK : 0;
  uint32_t destination = htonl(r.destination), gateway = htonl(r.gateway);
  if (r.prefix > 0) m.Put(RTA_DST, &destination, 4);
  if (r.gateway != 0) m.Put(RTA_GATEWAY, &gateway, 4);
  m.PutU32(RTA_OIF, static_cast<uint32_t>(r.index));
  int err;
  std::string what = "cannot add route to " + FormatIpv4(r.destination) + "/" +
                     std::to_string(r.prefix) +
                     (r.gateway ? " via " + FormatIpv4(r.gateway) : std::string());
  return s.Request(m, what, error, &err) || err == EEXIST;
}

bool ListPermanentNeighbours(Socket& s, std::vector<Neighbour>* neighbours, std::string* error) {
  return DumpEach<ndmsg>(s, RTM_GETNEIGH, RTM_NEWNEIGH, AF_INET, [&] { neighbours->clear(); },
                         [&](const ndmsg& info, const std::vector<Attribute>& attrs) {
    if (info.ndm_family != AF_INET || !(info.ndm_state & NUD_PERMANENT)) return;
    Neighbour n{info.ndm_ifindex, 0, {}};
    bool has_mac = false;
    for (const Attribute& a : attrs) {
      if (a.type == NDA_DST) n.address = Ipv4At(a.data);
      if (a.type == NDA_LLADDR && a.data.size() == 6) {
        memcpy(n.mac.data(), a.data.data(), 6);
        has_mac = true;
      }
    }
    if (has_mac) neighbours->push_back(n);
  }, error);
}

bool AddNeighbour(Socket& s, const Neighbour& n, std::string* error) {
  Message m(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
  auto* info = m.Header<ndmsg>();
  info->ndm_family = AF_INET;
  info->ndm_ifindex = n.index;
  info->ndm_state = NUD_PERMANENT;
  uint32_t address = htonl(n.address);
  m.Put(NDA_DST, &address, 4);
  m.Put(NDA_LLADDR, n.mac.data(), n.mac.size());
  return s.Request(m, "cannot add the neighbour " + FormatIpv4(n.address), error);
}

bool DeleteLink(Socket& s, int index, std::string* error) {
  Message m(RTM_DELLINK, 0);
  auto* info = m.Header<ifinfomsg>();
  info->ifi_family = AF_UNSPEC;
  info->ifi_index = index;
  return s.Request(m, "cannot delete interface " + std::to_string(index), error);
}

std::string FormatIpv4(uint32_t address) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%u.%u.%u.%u", address >> 24, (address >> 16) & 255,
                (address >> 8) & 255, address & 255);
  return buf;
}

}  // namespace ember::agent::netlink
