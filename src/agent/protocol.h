// The wire protocol between ember-exec (host) and ember-agent (guest): one
// stream connection per command, framed messages in both directions.
// PROTOCOL.md beside this file describes it for readers of the wire; this
// header is the one definition both programs compile.
//
// Dependency-free on purpose: resources/rootfs/build.sh compiles the agent
// with plain `g++ -static`, without Abseil or CMake.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ember::agent {

// A frame: u32 payload length (little-endian), u8 type, then the payload.
// 2: STDIN takes the agent's WINDOW.
inline constexpr uint32_t kVersion = 2;
inline constexpr size_t kHeaderSize = 5;
inline constexpr uint32_t kMaxPayload = 64 * 1024;
// EXEC alone may be larger: an environment can outgrow 64 KiB (Kubernetes
// puts a few variables per service of the namespace in every container's).
// Linux's own limit on exec's arguments and environment is a quarter of the
// stack limit (2 MiB by default), so above that the guest's execve refuses
// (E2BIG) before this does.
inline constexpr uint32_t kMaxExecPayload = 4 * 1024 * 1024;
// SYNC carries a whole directory tree, its files' bytes included.
inline constexpr uint32_t kMaxSyncPayload = 2 * 1024 * 1024;
// The STDIN bytes a client may send before the agent grants more: the
// agent's queue for the command never holds more, so it always reads the
// connection and a SIGNAL behind stdin the command does not read gets
// through.
inline constexpr uint32_t kStdinWindow = 256 * 1024;
// The port the guest agent listens on (AF_VSOCK, any CID).
inline constexpr uint32_t kDefaultPort = 1024;

enum class Type : uint8_t {
  // Both directions: u32 version. The client sends it first; the agent
  // answers with its own.
  kHello = 1,
  // Client to agent.
  kExec = 2,      // ExecRequest
  kStdin = 3,     // bytes for the command's stdin
  kStdinEof = 4,  // empty: close the command's stdin
  kSignal = 5,    // u32 signal number, sent to the command's process group
  kResize = 6,    // u16 rows, u16 columns: the command's terminal size (kFlagTty)
  kSync = 7,      // SyncRequest, instead of EXEC: make a directory as the host's
  // Agent to client.
  kStarted = 16,  // u32 pid: the command was exec'd
  kError = 17,    // u8 ErrorKind, then text; the agent closes afterwards
  kStdout = 18,   // bytes
  kStderr = 19,   // bytes
  kExit = 20,     // u8 0 (exited) or 1 (killed by a signal), u32 code/signo
  kWindow = 21,   // u32: that many more STDIN bytes may be sent
  kSynced = 22,   // empty: the SYNC is done; the agent closes afterwards
};

// Whether `type` is one this version defines (either direction).
bool IsKnownType(uint8_t type);
// The largest payload a frame of `type` may carry.
uint32_t MaxPayload(Type type);

struct Frame {
  Type type;
  std::string payload;
};

// Appends one frame to `out`. The caller keeps payload <= MaxPayload(type).
void AppendFrame(std::string* out, Type type, std::string_view payload);

// Splits a byte stream into frames. Feed it what arrives; take frames out
// with Next. A bad header (oversized length, unknown type, or a type the
// peer does not send) is final: the stream cannot be resynchronised, so the
// connection must be closed.
class FrameDecoder {
 public:
  enum class Result { kFrame, kNeedMore, kBad };
  // Whose frames these are: the agent takes only a client's types, the
  // client only an agent's (so a guest cannot make it buffer a 4 MiB EXEC).
  enum class From { kEither, kClient, kAgent };
  explicit FrameDecoder(From from = From::kEither) : from_(from) {}
  void Feed(std::string_view bytes) { buffer_.append(bytes); }
  // kFrame fills *frame; kBad fills *error with why.
  Result Next(Frame* frame, std::string* error);
  size_t buffered() const { return buffer_.size() - start_; }

 private:
  From from_;
  std::string buffer_;
  size_t start_ = 0;  // consumed bytes at the front, dropped lazily
  bool bad_ = false;
};

// Fixed-size payloads. The decoders reject any other length.
std::string EncodeU32(uint32_t value);
bool DecodeU32(std::string_view payload, uint32_t* value);

// One of config.json's mounts as the guest makes it, under the root:
// mount(2)'s arguments, `target` absolute within the container's root.
// MS_BIND with `source` equal to `target` remounts what the image holds
// there (a bind mount's copy) with `flags` (read-only, say).
struct MountSpec {
  std::string type;
  std::string source;
  std::string target;
  uint32_t flags = 0;  // MS_* (all below 2^32)
  std::string data;    // options the file system reads ("size=64k,mode=755")
  friend bool operator==(const MountSpec&, const MountSpec&) = default;
};

// The guest's network, as the container's network namespace on the host has
// it: the guest's one interface gets `mac` and `mtu` and comes up with
// `addresses`, then `neighbours` (a CNI plugin's static ARP entries, as
// AWS's for its gateway) and `routes` are added (IPv4: the guest has no
// IPv6). Addresses in host order (10.0.0.1 is 0x0a000001).
struct NetworkSpec {
  static constexpr uint32_t kMaxEntries = 64;
  std::array<uint8_t, 6> mac{};
  uint32_t mtu = 0;  // 0: the guest's default
  struct Address {
    uint32_t address = 0;
    uint32_t prefix = 0;  // 0-32
    friend bool operator==(const Address&, const Address&) = default;
  };
  std::vector<Address> addresses;
  struct Neighbour {
    uint32_t address = 0;
    std::array<uint8_t, 6> mac{};
    friend bool operator==(const Neighbour&, const Neighbour&) = default;
  };
  std::vector<Neighbour> neighbours;
  struct Route {
    static constexpr uint32_t kOnLink = 1;  // the gateway is on the link (RTNH_F_ONLINK)
    uint32_t destination = 0;
    uint32_t prefix = 0;   // 0: the default route
    uint32_t gateway = 0;  // 0: none
    uint32_t scope = 0;    // RT_SCOPE_*: 0 universe, 253 link, 254 host
    uint32_t flags = 0;    // kOnLink
    friend bool operator==(const Route&, const Route&) = default;
  };
  std::vector<Route> routes;
  friend bool operator==(const NetworkSpec&, const NetworkSpec&) = default;
};

// A container's process (ExecRequest::kFlagContainer): who it runs as and
// the root it sees. The agent mounts `root_device` (ext4) at `root_dir`
// once, with proc, sysfs and the guest's /dev inside it, then `mounts` in
// order; later requests for the same root find it mounted and only enter it.
struct ContainerSpec {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;  // additional group ids
  std::string root_device;       // empty: root_dir is entered as it is
  std::string root_dir;          // empty: the guest's root
  std::string hostname;          // empty: unchanged
  std::vector<MountSpec> mounts;
  // OCI's process.capabilities as masks (bit N: capability N), applied
  // only with set_capabilities (the bounding set is dropped to
  // cap_bounding before the change of user, the rest set after it).
  bool set_capabilities = false;
  uint64_t cap_bounding = 0, cap_effective = 0, cap_permitted = 0, cap_inheritable = 0,
           cap_ambient = 0;
  bool no_new_privileges = false;
  // config.json's root.readonly: the root is remounted read-only once the
  // mounts are made (they keep their own flags).
  bool root_readonly = false;
  // process.rlimits, set before the change of user.
  struct Rlimit {
    uint32_t resource = 0;  // RLIMIT_*
    uint64_t soft = 0, hard = 0;
    friend bool operator==(const Rlimit&, const Rlimit&) = default;
  };
  std::vector<Rlimit> rlimits;
  // Set up before the mounts, once per guest: only the init carries it.
  bool has_network = false;
  NetworkSpec network;
};

// EXEC's payload.
struct ExecRequest {
  static constexpr uint32_t kFlagStdin = 1;  // STDIN frames follow; else /dev/null
  // The command runs on a pseudo-terminal: its output (stdout and stderr
  // together) comes as STDOUT, STDIN goes to the terminal, STDIN_EOF is
  // ignored (a terminal has no end of input), RESIZE sets its size.
  static constexpr uint32_t kFlagTty = 2;
  // A ContainerSpec follows the environment, and the environment is the
  // request's alone (not merged over the agent's).
  static constexpr uint32_t kFlagContainer = 4;
  // The container's init (with kFlagContainer and a root_dir): once it
  // exits, every process whose root is root_dir is killed, as a pid
  // namespace ends with its init, so EXIT comes at once rather than when
  // a background process lets go of the output.
  static constexpr uint32_t kFlagInit = 8;
  static constexpr uint32_t kKnownFlags = kFlagStdin | kFlagTty | kFlagContainer | kFlagInit;
  uint32_t flags = 0;
  std::string cwd;                 // empty: "/"
  std::vector<std::string> argv;   // at least one; argv[0] searched in PATH
  std::vector<std::string> env;    // "KEY=VALUE", over the agent's own
  ContainerSpec container;         // with kFlagContainer
};
// Layout: u32 flags, string cwd, u32 argc, argc strings, u32 envc, envc
// strings; with kFlagContainer then u32 uid, u32 gid, u32 count and that
// many u32 groups, string root_device, string root_dir, string hostname,
// u32 count and that many mounts (string type, string source, string
// target, u32 flags, string data), u32 bits (1: set_capabilities, 2:
// no_new_privileges, 4: root_readonly, 8: network), then the bounding, effective, permitted, inheritable
// and ambient masks as u64 (little-endian, like every number here), then
// u32 count and that many rlimits (u32 resource, u64 soft, u64 hard), and
// with bits 8 the network: u64 MAC (its first byte lowest), u32 MTU, u32
// count and that many addresses (u32 address, u32 prefix), u32 count and
// that many neighbours (u32 address, u64 MAC), u32 count and that many
// routes (u32 destination, u32 prefix, u32 gateway, u32 scope, u32 flags).
// A string is u32 length + bytes (no NUL bytes in it).
std::string EncodeExec(const ExecRequest& request);
bool DecodeExec(std::string_view payload, ExecRequest* request, std::string* error);

// SYNC's payload: the directory `top` in the file system on `device` (the
// container's root device: a bind mount's copy, "/.ember-binds/0") is made
// to hold exactly `entries`, as the host's source of that bind mount holds
// them now. The agent writes it through a mount of its own, so the
// container sees the change through its bind, read-only or not.
struct TreeEntry {
  enum Kind : uint8_t { kDirectory = 1, kFile = 2, kLink = 3 };
  Kind kind = kDirectory;
  // Relative to `top`, components joined by '/'; "" is `top` itself (the
  // first entry, a directory). Every other entry's parent comes before it.
  std::string path;
  uint32_t mode = 0;  // permission bits (07777); ignored for a link
  uint32_t uid = 0, gid = 0;
  std::string data;   // a file's bytes, a link's target
  friend bool operator==(const TreeEntry&, const TreeEntry&) = default;
};
struct SyncRequest {
  static constexpr uint32_t kMaxEntries = 1024;
  std::string device;  // absolute: "/dev/vdb"
  std::string top;     // absolute in the device's file system, not "/"
  std::vector<TreeEntry> entries;
  friend bool operator==(const SyncRequest&, const SyncRequest&) = default;
};
// The agent's own temporary names in a synced directory: a tree holding a
// name with this prefix is refused.
inline constexpr char kSyncTemporary[] = ".ember-sync.";
// Layout: string device, string top, u32 count, then count entries of u8
// kind, string path, u32 mode, u32 uid, u32 gid, string data.
std::string EncodeSync(const SyncRequest& request);
bool DecodeSync(std::string_view payload, SyncRequest* request, std::string* error);

// RESIZE's payload.
struct WindowSize {
  uint16_t rows = 0;
  uint16_t cols = 0;
};
std::string EncodeResize(WindowSize size);
bool DecodeResize(std::string_view payload, WindowSize* size);

// ERROR's payload: what the client should make of it (ember-exec maps them
// to a shell's 127, 126 and its own 125).
enum class ErrorKind : uint8_t { kNotFound = 1, kNotExecutable = 2, kOther = 3 };
std::string EncodeError(ErrorKind kind, std::string_view message);
bool DecodeError(std::string_view payload, ErrorKind* kind, std::string* message);

// EXIT's payload.
struct ExitStatus {
  bool signaled = false;
  uint32_t value = 0;  // exit code, or signal number when signaled
};
std::string EncodeExit(ExitStatus status);
bool DecodeExit(std::string_view payload, ExitStatus* status);

}  // namespace ember::agent
