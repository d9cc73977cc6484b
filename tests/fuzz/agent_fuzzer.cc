// libFuzzer target: the agent protocol's decoding (src/agent/protocol.h),
// which both sides run on what the other sent: a hostile guest's frames
// reach ember-exec and the container monitors, a host's the agent. The
// input is the byte stream; its first byte chooses the peer (the agent's
// decoder, the client's, or either) and the sizes it arrives in.
//
// Checked beyond ASan and UBSan: fed whole or in pieces, the decoder gives
// the same frames and the same verdict; a frame is never larger than its
// type allows nor of a type the peer does not send; it buffers at most a
// header and a frame's payload past what it handed out; and every payload
// a decoder accepts encodes back to the same bytes (one wire form per
// message), with an accepted EXEC's invariants (a program, NAME=VALUE
// environment, mount targets absolute below a container root, no '..') and
// an accepted SYNC's (its directory first, every other entry a plain name
// in a directory listed before it).
#include <algorithm>
#include <string>
#include <vector>

#include "src/agent/protocol.h"
#include "tests/fuzz/fuzz_input.h"

using namespace ember;
using namespace ember::agent;
using namespace ember::fuzz;

namespace {

using From = FrameDecoder::From;

struct Decoded {
  std::vector<Frame> frames;
  bool bad = false;
  size_t consumed = 0;
};

Decoded Decode(From from, std::string_view stream, size_t piece) {
  FrameDecoder decoder(from);
  Decoded out;
  size_t fed = 0;
  while (true) {
    Frame frame;
    std::string error;
    FrameDecoder::Result r = decoder.Next(&frame, &error);
    if (r == FrameDecoder::Result::kBad) {
      if (error.empty()) Fail("a refusal without a reason");
      out.bad = true;
      return out;
    }
    if (r == FrameDecoder::Result::kFrame) {
      out.consumed += kHeaderSize + frame.payload.size();
      out.frames.push_back(std::move(frame));
      continue;
    }
    if (decoder.buffered() > kHeaderSize + kMaxExecPayload) Fail("buffered past one frame");
    if (fed == stream.size()) return out;
    size_t n = std::min(piece, stream.size() - fed);
    decoder.Feed(stream.substr(fed, n));
    fed += n;
  }
}

bool HasDotDot(const std::string& path) {
  return path == ".." || path.rfind("../", 0) == 0 || path.find("/../") != std::string::npos ||
         (path.size() >= 3 && path.compare(path.size() - 3, 3, "/..") == 0);
}

void CheckExec(const std::string& payload) {
  ExecRequest r;
  std::string error;
  if (!DecodeExec(payload, &r, &error)) {
    if (error.empty()) Fail("an EXEC refused without a reason");
    return;
  }
  if (EncodeExec(r) != payload) Fail("an accepted EXEC does not encode back to its bytes");
  if (r.argv.empty() || r.argv[0].empty()) Fail("an accepted EXEC without a program");
  for (const std::string& e : r.env) {
    if (e.empty() || e[0] == '=' || e.find('=') == std::string::npos) Fail("an env entry");
  }
  const ContainerSpec& c = r.container;
  if (!(r.flags & ExecRequest::kFlagContainer) && (!c.mounts.empty() || !c.root_dir.empty())) {
    Fail("container fields without the container flag");
  }
  if ((r.flags & ExecRequest::kFlagInit) && c.root_dir.empty()) Fail("an init without a root");
  for (const MountSpec& m : c.mounts) {
    if (c.root_device.empty() || m.target.size() < 2 || m.target[0] != '/' ||
        HasDotDot(m.target)) {
      Fail("an accepted mount target outside the root");
    }
  }
}

void CheckSync(const std::string& payload) {
  SyncRequest r;
  std::string error;
  if (!DecodeSync(payload, &r, &error)) {
    if (error.empty()) Fail("a SYNC refused without a reason");
    return;
  }
  if (EncodeSync(r) != payload) Fail("an accepted SYNC does not encode back to its bytes");
  if (r.entries.empty() || !r.entries[0].path.empty()) Fail("a SYNC without its directory first");
  std::vector<std::string> directories = {""};
  for (size_t i = 1; i < r.entries.size(); ++i) {
    const std::string& path = r.entries[i].path;
    size_t slash = path.rfind('/');
    std::string parent = slash == std::string::npos ? "" : path.substr(0, slash);
    std::string name = path.substr(slash + 1);
    if (name.empty() || name == "." || name == ".." || HasDotDot(path)) Fail("a SYNC entry's name");
    if (std::find(directories.begin(), directories.end(), parent) == directories.end()) {
      Fail("a SYNC entry before its directory");
    }
    if (r.entries[i].kind == TreeEntry::kDirectory) directories.push_back(path);
  }
}

void CheckPayload(const Frame& f) {
  uint32_t value;
  switch (f.type) {
    case Type::kHello:
    case Type::kSignal:
    case Type::kStarted:
    case Type::kWindow:
      if (DecodeU32(f.payload, &value) && EncodeU32(value) != f.payload) Fail("u32 round trip");
      return;
    case Type::kExec:
      return CheckExec(f.payload);
    case Type::kSync:
      return CheckSync(f.payload);
    case Type::kResize: {
      WindowSize size;
      if (DecodeResize(f.payload, &size) && EncodeResize(size) != f.payload) Fail("RESIZE");
      return;
    }
    case Type::kError: {
      ErrorKind kind;
      std::string message;
      bool known = !f.payload.empty() && f.payload[0] >= 1 && f.payload[0] <= 3;
      if (DecodeError(f.payload, &kind, &message) && known &&
          EncodeError(kind, message) != f.payload) {
        Fail("ERROR round trip");
      }
      return;
    }
    case Type::kExit: {
      ExitStatus status;
      if (DecodeExit(f.payload, &status) && EncodeExit(status) != f.payload) Fail("EXIT");
      return;
    }
    default:
      return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  uint8_t choice = in.U8();
  From from = choice % 3 == 0 ? From::kClient : choice % 3 == 1 ? From::kAgent : From::kEither;
  size_t piece = 1 + (choice >> 2) % 17;
  auto rest = in.Rest();
  std::string_view stream(reinterpret_cast<const char*>(rest.data()), rest.size());
  Decoded whole = Decode(from, stream, stream.size() + 1);
  Decoded pieces = Decode(from, stream, piece);
  if (whole.bad != pieces.bad || whole.frames.size() != pieces.frames.size() ||
      whole.consumed != pieces.consumed) {
    Fail("whole and in pieces decode differently");
  }
  std::string again;
  for (size_t i = 0; i < whole.frames.size(); ++i) {
    const Frame& f = whole.frames[i];
    if (f.type != pieces.frames[i].type || f.payload != pieces.frames[i].payload) {
      Fail("a frame differs between whole and pieces");
    }
    if (f.payload.size() > MaxPayload(f.type)) Fail("a frame over its type's maximum");
    bool client_type = static_cast<uint8_t>(f.type) < static_cast<uint8_t>(Type::kStarted);
    if (f.type != Type::kHello && ((from == From::kClient && !client_type) ||
                                   (from == From::kAgent && client_type))) {
      Fail("a frame of a type the peer does not send");
    }
    AppendFrame(&again, f.type, f.payload);
    CheckPayload(f);
  }
  if (stream.substr(0, again.size()) != again) Fail("the frames are not the stream's bytes");
  return 0;
}
