#include "src/agent/protocol.h"

#include <sys/mount.h>

#include <set>

namespace ember::agent {
namespace {

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

void PutU64(std::string* out, uint64_t v) {
  PutU32(out, static_cast<uint32_t>(v));
  PutU32(out, static_cast<uint32_t>(v >> 32));
}

void PutString(std::string* out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}

// Reads fields front to back from bytes that may be hostile; every read is
// bounds-checked against what is left.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : rest_(bytes) {}
  bool U32(uint32_t* v) {
    if (rest_.size() < 4) return false;
    *v = GetU32(rest_.data());
    rest_.remove_prefix(4);
    return true;
  }
  bool Bytes(std::string* s) {
    uint32_t n;
    if (!U32(&n) || n > rest_.size()) return false;
    s->assign(rest_.substr(0, n));
    rest_.remove_prefix(n);
    return true;
  }
  bool String(std::string* s) {
    return Bytes(s) && s->find('\0') == std::string::npos;  // exec takes C strings
  }
  bool U8(uint8_t* v) {
    if (rest_.empty()) return false;
    *v = static_cast<uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return true;
  }
  bool U64(uint64_t* v) {
    uint32_t lo, hi;
    if (!U32(&lo) || !U32(&hi)) return false;
    *v = uint64_t{hi} << 32 | lo;
    return true;
  }
  bool done() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

// Each string takes at least its 4-byte length, so a count larger than a
// quarter of the payload is a lie. Items are added as they are read, so a
// hostile count reserves nothing.
bool Strings(Reader* r, size_t payload_size, std::vector<std::string>* out) {
  uint32_t n;
  if (!r->U32(&n) || n > payload_size / 4) return false;
  out->clear();
  for (uint32_t i = 0; i < n; ++i) {
    if (!r->String(&out->emplace_back())) return false;
  }
  return true;
}

// A MAC address as a u64, its first byte lowest; the top 16 bits clear.
bool Mac(Reader* r, std::array<uint8_t, 6>* mac) {
  uint64_t v;
  if (!r->U64(&v) || v >> 48) return false;
  for (int i = 0; i < 6; ++i) (*mac)[i] = static_cast<uint8_t>(v >> (8 * i));
  return true;
}

uint64_t MacBits(const std::array<uint8_t, 6>& mac) {
  uint64_t v = 0;
  for (int i = 0; i < 6; ++i) v |= uint64_t{mac[i]} << (8 * i);
  return v;
}

bool Network(Reader* r, NetworkSpec* n) {
  uint32_t count;
  if (!Mac(r, &n->mac) || !r->U32(&n->mtu) || !r->U32(&count) ||
      count > NetworkSpec::kMaxEntries) {
    return false;
  }
  for (uint32_t i = 0; i < count; ++i) {
    NetworkSpec::Address& a = n->addresses.emplace_back();
    if (!r->U32(&a.address) || !r->U32(&a.prefix) || a.prefix > 32) return false;
  }
  if (!r->U32(&count) || count > NetworkSpec::kMaxEntries) return false;
  for (uint32_t i = 0; i < count; ++i) {
    NetworkSpec::Neighbour& neighbour = n->neighbours.emplace_back();
    if (!r->U32(&neighbour.address) || !Mac(r, &neighbour.mac)) return false;
  }
  if (!r->U32(&count) || count > NetworkSpec::kMaxEntries) return false;
  for (uint32_t i = 0; i < count; ++i) {
    NetworkSpec::Route& route = n->routes.emplace_back();
    if (!r->U32(&route.destination) || !r->U32(&route.prefix) || !r->U32(&route.gateway) ||
        !r->U32(&route.scope) || !r->U32(&route.flags) || route.prefix > 32 ||
        route.scope > 255 || (route.flags & ~NetworkSpec::Route::kOnLink)) {
      return false;
    }
  }
  return true;
}

bool Container(Reader* r, size_t payload_size, ContainerSpec* c) {
  uint32_t n;
  if (!r->U32(&c->uid) || !r->U32(&c->gid) || !r->U32(&n) || n > payload_size / 4) return false;
  for (uint32_t i = 0; i < n; ++i) {
    if (!r->U32(&c->groups.emplace_back())) return false;
  }
  if (!r->String(&c->root_device) || !r->String(&c->root_dir) || !r->String(&c->hostname) ||
      !r->U32(&n) || n > payload_size / 16) {  // a mount takes at least 16 bytes
    return false;
  }
  for (uint32_t i = 0; i < n; ++i) {
    MountSpec& m = c->mounts.emplace_back();
    if (!r->String(&m.type) || !r->String(&m.source) || !r->String(&m.target) ||
        !r->U32(&m.flags) || !r->String(&m.data)) {
      return false;
    }
  }
  uint32_t bits;
  if (!r->U32(&bits) || bits > 15) return false;
  c->set_capabilities = bits & 1;
  c->no_new_privileges = bits & 2;
  c->root_readonly = bits & 4;
  c->has_network = bits & 8;
  for (uint64_t* mask : {&c->cap_bounding, &c->cap_effective, &c->cap_permitted,
                         &c->cap_inheritable, &c->cap_ambient}) {
    if (!r->U64(mask)) return false;
  }
  // Linux has 16 resources; each once at most.
  if (!r->U32(&n) || n > 16) return false;
  for (uint32_t i = 0; i < n; ++i) {
    ContainerSpec::Rlimit& l = c->rlimits.emplace_back();
    if (!r->U32(&l.resource) || !r->U64(&l.soft) || !r->U64(&l.hard) || l.resource >= 16 ||
        l.soft > l.hard) {
      return false;
    }
  }
  return !c->has_network || Network(r, &c->network);
}

// Whether a component of `path` is "..": a mount target must stay under
// the container's root.
bool HasDotDot(std::string_view path) {
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    if (path.substr(start, end - start) == "..") return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

bool IsKnownType(uint8_t type) {
  return (type >= 1 && type <= 7) || (type >= 16 && type <= 22);
}

uint32_t MaxPayload(Type type) {
  switch (type) {
    case Type::kExec:
      return kMaxExecPayload;
    case Type::kSync:
      return kMaxSyncPayload;
    default:
      return kMaxPayload;
  }
}

void AppendFrame(std::string* out, Type type, std::string_view payload) {
  PutU32(out, static_cast<uint32_t>(payload.size()));
  out->push_back(static_cast<char>(type));
  out->append(payload);
}

FrameDecoder::Result FrameDecoder::Next(Frame* frame, std::string* error) {
  if (bad_) {
    *error = "stream already failed";
    return Result::kBad;
  }
  if (buffered() < kHeaderSize) return Result::kNeedMore;
  const char* p = buffer_.data() + start_;
  uint32_t length = GetU32(p);
  uint8_t type = static_cast<uint8_t>(p[4]);
  if (!IsKnownType(type)) {
    bad_ = true;
    *error = "unknown frame type " + std::to_string(type);
    return Result::kBad;
  }
  bool from_client = type < static_cast<uint8_t>(Type::kStarted);
  if (type != static_cast<uint8_t>(Type::kHello) &&
      ((from_ == From::kClient && !from_client) || (from_ == From::kAgent && from_client))) {
    bad_ = true;
    *error = "frame type " + std::to_string(type) + " is not one the " +
             (from_ == From::kClient ? "client" : "agent") + " sends";
    return Result::kBad;
  }
  if (uint32_t max = MaxPayload(static_cast<Type>(type)); length > max) {
    bad_ = true;
    *error = "frame of " + std::to_string(length) + " bytes exceeds the maximum of " +
             std::to_string(max);
    return Result::kBad;
  }
  if (buffered() < kHeaderSize + length) return Result::kNeedMore;
  frame->type = static_cast<Type>(type);
  frame->payload.assign(p + kHeaderSize, length);
  start_ += kHeaderSize + length;
  // Drop consumed bytes once they outweigh the rest: amortised O(1).
  if (start_ > buffer_.size() / 2) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  return Result::kFrame;
}

std::string EncodeU32(uint32_t value) {
  std::string out;
  PutU32(&out, value);
  return out;
}

bool DecodeU32(std::string_view payload, uint32_t* value) {
  if (payload.size() != 4) return false;
  *value = GetU32(payload.data());
  return true;
}

std::string EncodeExec(const ExecRequest& request) {
  std::string out;
  PutU32(&out, request.flags);
  PutString(&out, request.cwd);
  PutU32(&out, static_cast<uint32_t>(request.argv.size()));
  for (const auto& a : request.argv) PutString(&out, a);
  PutU32(&out, static_cast<uint32_t>(request.env.size()));
  for (const auto& e : request.env) PutString(&out, e);
  if (request.flags & ExecRequest::kFlagContainer) {
    const ContainerSpec& c = request.container;
    PutU32(&out, c.uid);
    PutU32(&out, c.gid);
    PutU32(&out, static_cast<uint32_t>(c.groups.size()));
    for (uint32_t g : c.groups) PutU32(&out, g);
    PutString(&out, c.root_device);
    PutString(&out, c.root_dir);
    PutString(&out, c.hostname);
    PutU32(&out, static_cast<uint32_t>(c.mounts.size()));
    for (const MountSpec& m : c.mounts) {
      PutString(&out, m.type);
      PutString(&out, m.source);
      PutString(&out, m.target);
      PutU32(&out, m.flags);
      PutString(&out, m.data);
    }
    PutU32(&out, (c.set_capabilities ? 1 : 0) | (c.no_new_privileges ? 2 : 0) |
                     (c.root_readonly ? 4 : 0) | (c.has_network ? 8 : 0));
    for (uint64_t mask : {c.cap_bounding, c.cap_effective, c.cap_permitted, c.cap_inheritable,
                          c.cap_ambient}) {
      PutU64(&out, mask);
    }
    PutU32(&out, static_cast<uint32_t>(c.rlimits.size()));
    for (const ContainerSpec::Rlimit& l : c.rlimits) {
      PutU32(&out, l.resource);
      PutU64(&out, l.soft);
      PutU64(&out, l.hard);
    }
    if (c.has_network) {
      const NetworkSpec& n = c.network;
      PutU64(&out, MacBits(n.mac));
      PutU32(&out, n.mtu);
      PutU32(&out, static_cast<uint32_t>(n.addresses.size()));
      for (const NetworkSpec::Address& a : n.addresses) {
        PutU32(&out, a.address);
        PutU32(&out, a.prefix);
      }
      PutU32(&out, static_cast<uint32_t>(n.neighbours.size()));
      for (const NetworkSpec::Neighbour& neighbour : n.neighbours) {
        PutU32(&out, neighbour.address);
        PutU64(&out, MacBits(neighbour.mac));
      }
      PutU32(&out, static_cast<uint32_t>(n.routes.size()));
      for (const NetworkSpec::Route& route : n.routes) {
        PutU32(&out, route.destination);
        PutU32(&out, route.prefix);
        PutU32(&out, route.gateway);
        PutU32(&out, route.scope);
        PutU32(&out, route.flags);
      }
    }
  }
  return out;
}

bool DecodeExec(std::string_view payload, ExecRequest* request, std::string* error) {
  Reader r(payload);
  ExecRequest req;
  if (!r.U32(&req.flags) || !r.String(&req.cwd) || !Strings(&r, payload.size(), &req.argv) ||
      !Strings(&r, payload.size(), &req.env) ||
      ((req.flags & ExecRequest::kFlagContainer) &&
       !Container(&r, payload.size(), &req.container)) ||
      !r.done()) {
    *error = "malformed EXEC request";
    return false;
  }
  if (req.flags & ~ExecRequest::kKnownFlags) {
    *error = "EXEC request has unknown flags";
    return false;
  }
  // Its processes are those whose root is root_dir: "/" would be all.
  if ((req.flags & ExecRequest::kFlagInit) &&
      (!(req.flags & ExecRequest::kFlagContainer) || req.container.root_dir.empty() ||
       req.container.root_dir.find_first_not_of('/') == std::string::npos)) {
    *error = "EXEC request's init flag needs a container with a root";
    return false;
  }
  // The guest's network is set up once, for its container's init.
  if (req.container.has_network && !(req.flags & ExecRequest::kFlagInit)) {
    *error = "EXEC request's network needs the init flag";
    return false;
  }
  if (req.argv.empty() || req.argv[0].empty()) {
    *error = "EXEC request has no program";
    return false;
  }
  const ContainerSpec& c = req.container;
  if ((!c.root_dir.empty() && c.root_dir[0] != '/') ||
      (!c.root_device.empty() && (c.root_device[0] != '/' || c.root_dir.empty()))) {
    *error = "EXEC request's root must be absolute paths (a device needs a directory)";
    return false;
  }
  if (c.hostname.size() > 64) {
    *error = "EXEC request's hostname is longer than 64 bytes";
    return false;
  }
  for (size_t i = 0; i < c.rlimits.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (c.rlimits[i].resource == c.rlimits[j].resource) {
        *error = "EXEC request sets one rlimit twice";
        return false;
      }
    }
  }
  for (const MountSpec& m : c.mounts) {
    bool bind_source_bad = (m.flags & MS_BIND) &&
                           (m.source.empty() || m.source[0] != '/' || HasDotDot(m.source));
    if (c.root_device.empty() || m.target.size() < 2 || m.target[0] != '/' ||
        HasDotDot(m.target) || bind_source_bad) {
      *error = "EXEC request's mount must be at an absolute path below the root, without '..' "
               "(a bind's source too): " + m.target;
      return false;
    }
  }
  for (const auto& e : req.env) {
    if (e.find('=') == std::string::npos || e[0] == '=') {
      *error = "environment entry without NAME=: " + e;
      return false;
    }
  }
  *request = std::move(req);
  return true;
}

std::string EncodeSync(const SyncRequest& request) {
  std::string out;
  PutString(&out, request.device);
  PutString(&out, request.top);
  PutU32(&out, static_cast<uint32_t>(request.entries.size()));
  for (const TreeEntry& e : request.entries) {
    out.push_back(static_cast<char>(e.kind));
    PutString(&out, e.path);
    PutU32(&out, e.mode);
    PutU32(&out, e.uid);
    PutU32(&out, e.gid);
    PutString(&out, e.data);
  }
  return out;
}

bool DecodeSync(std::string_view payload, SyncRequest* request, std::string* error) {
  Reader r(payload);
  SyncRequest req;
  uint32_t n;
  bool ok = r.String(&req.device) && r.String(&req.top) && r.U32(&n) &&
            n <= SyncRequest::kMaxEntries;
  for (uint32_t i = 0; ok && i < n; ++i) {
    TreeEntry& e = req.entries.emplace_back();
    uint8_t kind = 0;
    ok = r.U8(&kind) && kind >= TreeEntry::kDirectory && kind <= TreeEntry::kLink &&
         r.String(&e.path) && r.U32(&e.mode) && r.U32(&e.uid) && r.U32(&e.gid) &&
         r.Bytes(&e.data) && e.mode <= 07777;
    e.kind = static_cast<TreeEntry::Kind>(kind);
  }
  if (!ok || !r.done()) {
    *error = "malformed SYNC request";
    return false;
  }
  auto absolute = [](const std::string& p) { return !p.empty() && p[0] == '/' && !HasDotDot(p); };
  if (!absolute(req.device) || !absolute(req.top) ||
      req.top.find_first_not_of('/') == std::string::npos) {
    *error = "SYNC request's device and directory must be absolute paths without '..' (not /)";
    return false;
  }
  if (req.entries.empty() || !req.entries[0].path.empty() ||
      req.entries[0].kind != TreeEntry::kDirectory || !req.entries[0].data.empty()) {
    *error = "SYNC request's first entry must be its directory";
    return false;
  }
  // Parents before children, each path once, plain names only: the agent
  // walks it front to back without looking anything up twice.
  std::set<std::string_view> directories = {""}, seen = {""};
  for (size_t i = 1; i < req.entries.size(); ++i) {
    const TreeEntry& e = req.entries[i];
    size_t slash = e.path.rfind('/');
    std::string_view parent =
        slash == std::string::npos ? std::string_view() : std::string_view(e.path).substr(0, slash);
    std::string_view name = std::string_view(e.path).substr(slash + 1);
    if (slash == 0 || name.empty() || name == "." || name == ".." || name.size() > 255 ||
        name.rfind(kSyncTemporary, 0) == 0 || !directories.count(parent) ||
        !seen.insert(e.path).second) {
      *error = "SYNC request's entry '" + e.path +
               "' is not a new plain name in a directory listed before it";
      return false;
    }
    if ((e.kind == TreeEntry::kDirectory && !e.data.empty()) ||
        (e.kind == TreeEntry::kLink &&
         (e.data.empty() || e.data.size() >= 4096 || e.data.find('\0') != std::string::npos))) {
      *error = "SYNC request's entry '" + e.path + "' has data its kind cannot hold";
      return false;
    }
    if (e.kind == TreeEntry::kDirectory) directories.insert(e.path);
  }
  *request = std::move(req);
  return true;
}

std::string EncodeResize(WindowSize size) {
  std::string out;
  PutU32(&out, size.rows | static_cast<uint32_t>(size.cols) << 16);
  return out;
}

bool DecodeResize(std::string_view payload, WindowSize* size) {
  uint32_t v;
  if (!DecodeU32(payload, &v)) return false;
  size->rows = static_cast<uint16_t>(v & 0xffff);
  size->cols = static_cast<uint16_t>(v >> 16);
  return true;
}

std::string EncodeError(ErrorKind kind, std::string_view message) {
  std::string out(1, static_cast<char>(kind));
  out.append(message.substr(0, kMaxPayload - 1));
  return out;
}

bool DecodeError(std::string_view payload, ErrorKind* kind, std::string* message) {
  if (payload.empty()) return false;
  uint8_t k = static_cast<uint8_t>(payload[0]);
  *kind = k >= 1 && k <= 3 ? static_cast<ErrorKind>(k) : ErrorKind::kOther;
  message->assign(payload.substr(1));
  return true;
}

std::string EncodeExit(ExitStatus status) {
  std::string out(1, status.signaled ? 1 : 0);
  PutU32(&out, status.value);
  return out;
}

bool DecodeExit(std::string_view payload, ExitStatus* status) {
  if (payload.size() != 5 || static_cast<uint8_t>(payload[0]) > 1) return false;
  status->signaled = payload[0] == 1;
  status->value = GetU32(payload.data() + 1);
  return true;
}

}  // namespace ember::agent
