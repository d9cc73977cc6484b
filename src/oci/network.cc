#include "src/oci/network.h"

#include <net/if.h>  // before the linux/ headers, which defer to it
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_arp.h>
#include <linux/if_ether.h>
#include <linux/if_tun.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/tc_act/tc_mirred.h>
#include <sched.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "src/agent/netlink.h"
#include "src/common/errno_status.h"
#include "src/oci/vm.h"

namespace ember::oci {
namespace {

namespace nl = agent::netlink;

constexpr uint32_t kIngress = 0xffff0000;  // the ingress qdisc's handle, ffff:
// The priority Ember's filters have ("EM"): what tells them from anyone
// else's on the interface.
constexpr uint32_t kEmberPriority = 0x454d;

tcmsg* TcHeader(nl::Message& m, int index, uint32_t handle, uint32_t parent) {
  tcmsg* t = m.Header<tcmsg>();
  t->tcm_family = AF_UNSPEC;
  t->tcm_ifindex = index;
  t->tcm_handle = handle;
  t->tcm_parent = parent;
  return t;
}

// Drops the interface's ingress qdisc, and with it its filters.
void DeleteIngress(nl::Socket& s, int index) {
  nl::Message m(RTM_DELQDISC, 0);
  TcHeader(m, index, kIngress, TC_H_INGRESS);
  std::string ignored;
  s.Request(m, "tc qdisc del", &ignored);
}

// `tc qdisc add dev X ingress`. A qdisc just deleted may still be going
// (EBUSY): Kata waits for it too.
bool AddIngress(nl::Socket& s, int index, std::string* error) {
  for (int attempt = 0;; ++attempt) {
    nl::Message qdisc(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL);
    TcHeader(qdisc, index, kIngress, TC_H_INGRESS);
    qdisc.PutString(TCA_KIND, "ingress");
    int err = 0;
    if (s.Request(qdisc, "cannot add an ingress qdisc", error, &err)) return true;
    if (err != EBUSY || attempt == 20) return false;
    usleep(10 * 1000);
  }
}

// `tc filter add dev FROM parent ffff: protocol all u32 match u32 0 0
// action mirred egress redirect dev TO`.
bool AddRedirect(nl::Socket& s, int from, int to, std::string* error) {
  nl::Message filter(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL);
  TcHeader(filter, from, 0, kIngress)->tcm_info =
      TC_H_MAKE(kEmberPriority << 16, htons(ETH_P_ALL));
  filter.PutString(TCA_KIND, "u32");
  size_t options = filter.Nest(TCA_OPTIONS);
  // One key, its mask 0: every packet matches.
  char match[sizeof(tc_u32_sel) + sizeof(tc_u32_key)] = {};
  tc_u32_sel sel{};
  sel.flags = TC_U32_TERMINAL;
  sel.nkeys = 1;
  memcpy(match, &sel, sizeof(sel));
  filter.Put(TCA_U32_SEL, match, sizeof(match));
  size_t actions = filter.Nest(TCA_U32_ACT);
  size_t first = filter.Nest(1);
  filter.PutString(TCA_ACT_KIND, "mirred");
  size_t mirred = filter.Nest(TCA_ACT_OPTIONS);
  tc_mirred parms{};
  parms.action = TC_ACT_STOLEN;
  parms.eaction = TCA_EGRESS_REDIR;
  parms.ifindex = static_cast<uint32_t>(to);
  filter.Put(TCA_MIRRED_PARMS, &parms, sizeof(parms));
  filter.EndNest(mirred);
  filter.EndNest(first);
  filter.EndNest(actions);
  filter.EndNest(options);
  return s.Request(filter, "cannot add a tc redirect", error);
}

// What the interface's ingress filters are: whether any is not Ember's,
// and where Ember's redirect to (0: none, or a device that is gone).
struct Ingress {
  bool foreign = false;
  int target = 0;
};
Ingress IngressOf(nl::Socket& s, int index) {
  nl::Message m(RTM_GETTFILTER, 0);
  TcHeader(m, index, 0, kIngress);
  Ingress ingress;
  std::string ignored;
  s.Dump(m, [&](uint16_t type, std::string_view msg) {
    if (type != RTM_NEWTFILTER || msg.size() < NLMSG_ALIGN(sizeof(tcmsg))) return;
    tcmsg info;
    memcpy(&info, msg.data(), sizeof(info));
    if (TC_H_MAJ(info.tcm_info) >> 16 != kEmberPriority) {
      ingress.foreign = true;
      return;
    }
    for (const nl::Attribute& options : nl::Attributes(msg.substr(NLMSG_ALIGN(sizeof(tcmsg))))) {
      if (options.type != TCA_OPTIONS) continue;
      for (const nl::Attribute& acts : nl::Attributes(options.data)) {
        if (acts.type != TCA_U32_ACT) continue;
        for (const nl::Attribute& act : nl::Attributes(acts.data)) {
          for (const nl::Attribute& a : nl::Attributes(act.data)) {
            if (a.type != TCA_ACT_OPTIONS) continue;
            for (const nl::Attribute& p : nl::Attributes(a.data)) {
              if (p.type != TCA_MIRRED_PARMS || p.data.size() < sizeof(tc_mirred)) continue;
              tc_mirred parms;
              memcpy(&parms, p.data.data(), sizeof(parms));
              ingress.target = static_cast<int>(parms.ifindex);
            }
          }
        }
      }
    }
  }, &ignored);
  return ingress;
}

// Holds the calling thread's network namespace to itself against other
// Ember processes: the lock is on the namespace's own nsfs inode, so it
// leaves nothing behind.
class NamespaceLock {
 public:
  NamespaceLock() : fd_(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {
    if (fd_ >= 0 && flock(fd_, LOCK_EX) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~NamespaceLock() {
    if (fd_ >= 0) close(fd_);
  }
  bool held() const { return fd_ >= 0; }

 private:
  int fd_;
};

const nl::Link* Named(const std::vector<nl::Link>& links, const std::string& name) {
  for (const nl::Link& l : links) {
    if (l.name == name) return &l;
  }
  return nullptr;
}

const nl::Link* Indexed(const std::vector<nl::Link>& links, int index) {
  for (const nl::Link& l : links) {
    if (l.index == index) return &l;
  }
  return nullptr;
}

// The first Ethernet interface, other than a TAP, with an IPv4 address.
const nl::Link* Wire(const std::vector<nl::Link>& links,
                     const std::vector<nl::Address>& addresses) {
  const nl::Link* wire = nullptr;
  for (const nl::Address& a : addresses) {
    const nl::Link* l = Indexed(links, a.index);
    if (l && l->type == ARPHRD_ETHER && l->kind != "tun" && (!wire || l->index < wire->index)) {
      wire = l;
    }
  }
  return wire;
}

// What the guest takes from `wire`: its MAC, MTU, addresses, permanent
// neighbours and routes (not those the kernel made for an address's
// subnet: the guest's kernel makes its own).
absl::StatusOr<agent::NetworkSpec> SpecOf(nl::Socket& s, const nl::Link& wire,
                                          const std::vector<nl::Address>& addresses) {
  std::string error;
  std::vector<nl::Route> routes;
  std::vector<nl::Neighbour> neighbours;
  if (!nl::ListRoutes(s, &routes, &error) ||
      !nl::ListPermanentNeighbours(s, &neighbours, &error)) {
    return absl::InternalError("cannot read the container's network namespace: " + error);
  }
  agent::NetworkSpec spec;
  spec.mac = wire.mac;
  spec.mtu = wire.mtu;
  for (const nl::Address& a : addresses) {
    if (a.index == wire.index) spec.addresses.push_back({a.address, a.prefix});
  }
  for (const nl::Neighbour& n : neighbours) {
    if (n.index == wire.index) spec.neighbours.push_back({n.address, n.mac});
  }
  for (const nl::Route& r : routes) {
    if (r.index != wire.index || r.protocol == RTPROT_KERNEL) continue;
    spec.routes.push_back({r.destination, r.prefix, r.gateway, r.scope,
                           r.onlink ? agent::NetworkSpec::Route::kOnLink : 0u});
  }
  for (size_t n : {spec.addresses.size(), spec.neighbours.size(), spec.routes.size()}) {
    if (n > agent::NetworkSpec::kMaxEntries) {
      return absl::InvalidArgumentError(absl::StrCat(
          wire.name, " has more than ", agent::NetworkSpec::kMaxEntries,
          " addresses, permanent neighbours or routes"));
    }
  }
  return spec;
}

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

// setns into the network namespace at `path`.
absl::Status EnterNamespace(const std::string& path, const std::string& what) {
  int ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  absl::Status status;
  if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) status = ErrnoStatus(what);
  if (ns >= 0) close(ns);
  return status;
}

// ConnectTap, with the namespace to itself.
absl::StatusOr<Connection> ConnectLocked(const std::string& tap) {
  nl::Socket s;
  std::string error;
  std::vector<nl::Link> links;
  std::vector<nl::Address> addresses;
  if (!s.Open(&error) || !nl::ListLinks(s, &links, &error) ||
      !nl::ListAddresses(s, &addresses, &error)) {
    return absl::InternalError("cannot read the container's network namespace: " + error);
  }
  const nl::Link* own = Named(links, tap);
  if (own == nullptr) return absl::InternalError("the VM's TAP device " + tap + " is gone");
  const nl::Link* wire = Wire(links, addresses);
  if (wire == nullptr) {
    return Connection{{}, "the network namespace has no interface with an IPv4 address", false};
  }
  // Ember's redirect into a TAP that is gone is a VM's that ended without
  // cleaning up (its monitor killed): taken over, as is an ingress qdisc
  // without filters (a connect killed halfway). Filters of anyone else's
  // are left alone.
  Ingress ingress = IngressOf(s, wire->index);
  const nl::Link* holder = Indexed(links, ingress.target);
  if (ingress.foreign) {
    return Connection{{}, wire->name + " has tc ingress filters of someone else's: left alone",
                      true};
  }
  if (holder != nullptr && holder != own) {
    return Connection{{}, "another microVM has " + wire->name +
                              " (containers sharing a network namespace cannot share its "
                              "interface)", true};
  }
  auto spec = SpecOf(s, *wire, addresses);
  if (!spec.ok()) return spec.status();
  DeleteIngress(s, wire->index);
  DeleteIngress(s, own->index);
  if (!AddIngress(s, wire->index, &error) || !AddIngress(s, own->index, &error) ||
      !nl::SetLinkUp(s, own->index, nullptr, wire->mtu, &error) ||
      !AddRedirect(s, wire->index, own->index, &error) ||
      !AddRedirect(s, own->index, wire->index, &error)) {
    DeleteIngress(s, wire->index);
    DeleteIngress(s, own->index);
    return absl::InternalError(absl::StrCat("cannot join ", tap, " to ", wire->name, ": ", error));
  }
  return Connection{*std::move(spec), "", false};
}

}  // namespace

bool IsHostNetworkNamespace(const std::string& path) { return SameFile(path, "/proc/1/ns/net"); }

absl::Status JoinNetworkNamespace(const std::optional<std::string>& path) {
  // The runtime's own namespace is the host's as far as it knows (init's
  // may not be readable where it runs).
  if (!path || path->empty() || IsHostNetworkNamespace(*path) ||
      SameFile(*path, "/proc/thread-self/ns/net")) {
    if (unshare(CLONE_NEWNET) != 0) return ErrnoStatus("cannot make a network namespace");
    return absl::OkStatus();
  }
  absl::Status s = EnterNamespace(*path, "cannot join the network namespace " + *path);
  return s.ok() ? s : absl::InvalidArgumentError(s.message());
}

absl::Status JoinNamespaceOf(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/ns/net";
  return EnterNamespace(path, "cannot join the container's network namespace (" + path + ")");
}

bool IsPodSandbox(const std::map<std::string, std::string>& annotations, const std::string& id) {
  constexpr std::pair<const char*, const char*> kMarks[] = {
      {"io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id"},
      {"io.kubernetes.cri-o.ContainerType", "io.kubernetes.cri-o.SandboxID"}};
  for (const auto& [type_key, id_key] : kMarks) {
    auto type = annotations.find(type_key);
    auto sandbox = annotations.find(id_key);
    if (type != annotations.end() && type->second == "sandbox" && sandbox != annotations.end() &&
        sandbox->second == id) {
      return true;
    }
  }
  return false;
}

std::string TapName(const std::string& root, const std::string& id) {
  // "ember" and 10 hex digits of the jail's id: 15 bytes, IFNAMSIZ's limit.
  return "ember" + JailId(root, id).substr(4, 10);
}

absl::Status MakeTap(const std::string& name, uint32_t uid, uint32_t gid) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open /dev/net/tun");
  ifreq ifr{};
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name.c_str());
  // The VMM's flags (src/devices/virtio/net/tap.cc): a persistent TAP
  // opened with other queueing flags refuses it.
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  absl::Status status;
  if (ioctl(fd, TUNSETIFF, &ifr) != 0 || ioctl(fd, TUNSETOWNER, uid) != 0 ||
      ioctl(fd, TUNSETGROUP, gid) != 0 || ioctl(fd, TUNSETPERSIST, 1) != 0) {
    status = ErrnoStatus("cannot make the TAP device " + name);
  }
  close(fd);
  return status;
}

absl::StatusOr<Connection> ConnectTap(const std::string& tap) {
  if (IsHostNetworkNamespace("/proc/thread-self/ns/net")) {
    return Connection{{}, "the container's network namespace is the host's: its interfaces are "
                          "not given to a microVM", true};
  }
  // Containers starting at once in one namespace (a pod's) take turns.
  NamespaceLock lock;
  if (!lock.held()) return ErrnoStatus("cannot lock the container's network namespace");
  return ConnectLocked(tap);
}

void RemoveTap(const std::string& tap) {
  NamespaceLock lock;
  nl::Socket s;
  std::string error;
  std::vector<nl::Link> links;
  if (!s.Open(&error) || !nl::ListLinks(s, &links, &error)) return;
  const nl::Link* own = Named(links, tap);
  if (own == nullptr) return;
  for (const nl::Link& l : links) {
    if (l.index == own->index) continue;
    Ingress ingress = IngressOf(s, l.index);
    if (!ingress.foreign && ingress.target == own->index) DeleteIngress(s, l.index);
  }
  nl::DeleteLink(s, own->index, &error);
}

void RemoveTapIn(const std::string& netns_path, const std::string& tap) {
  pid_t pid = fork();
  if (pid == 0) {
    if (EnterNamespace(netns_path, "").ok()) RemoveTap(tap);
    _exit(0);
  }
  if (pid > 0) waitpid(pid, nullptr, 0);
}

}  // namespace ember::oci
