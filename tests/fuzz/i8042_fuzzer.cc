// libFuzzer target: the i8042 keyboard controller's ports (0x60 data, 0x64
// command/status) read and written in any order, width and count, and its
// snapshot state. Checked beyond ASan and UBSan: the CPU reset runs for the
// reset command (0xfe at 0x64) and nothing else; the bytes waiting on port
// 0x60 stay few however many commands the guest sends without reading
// (Firecracker keeps 16); the snapshot state decodes to itself and a
// restored controller saves the same state.
#include "src/devices/legacy/i8042.h"
#include "tests/fuzz/device_filter.h"
#include "tests/fuzz/fuzz_input.h"

using namespace ember;
using namespace ember::fuzz;

namespace {
// Bytes a guest may find waiting after any sequence: a bounded queue.
constexpr int kMaxPending = 1024;
}  // namespace

namespace {

// One input, under the filter of Ember's VMM thread, port accesses under
// its vCPU threads' (device_filter.h).
void Input(const uint8_t* data, size_t size) {
  int resets = 0, expected_resets = 0;
  I8042 dev([&] { resets++; }, [] {});
  FuzzInput in(data, size);
  auto write = [&](uint64_t port, uint8_t value, size_t width = 1) {
    uint8_t b[4] = {value, value, value, value};
    OnVcpu([&] { dev.Write(port, std::span<const uint8_t>(b, width)); });
    if (port == 4 && width == 1 && value == 0xfe) expected_resets++;
  };
  auto read = [&](uint64_t port) {
    uint8_t b = 0;
    OnVcpu([&] { dev.Read(port, std::span<uint8_t>(&b, 1)); });
    return b;
  };
  while (!in.empty()) {
    uint8_t op = in.U8();
    switch (op % 8) {
      case 0: write(0, in.U8()); break;
      case 1: write(4, in.U8()); break;
      case 2: (void)read(in.U8() % 5); break;
      case 3: {  // the same byte many times, never read: a flood
        uint8_t port = in.Bool() ? 4 : 0;
        uint8_t value = in.U8();
        int count = 1 + in.U16() % 4096;
        OnVcpu([&] {  // one hand-over for the flood
          for (int i = 0; i < count; i++) write(port, value);
        });
        break;
      }
      case 4: {  // other widths and ports
        uint8_t b[8] = {};
        uint64_t port = in.U8() % 8;
        size_t width = 1 + in.U8() % 8;
        if (in.Bool()) {
          OnVcpu([&] { dev.Read(port, std::span<uint8_t>(b, width)); });
        } else {
          b[0] = in.U8();
          OnVcpu([&] { dev.Write(port, std::span<const uint8_t>(b, width)); });
          if (port == 4 && width == 1 && b[0] == 0xfe) expected_resets++;
        }
        break;
      }
      case 5: {  // saved, encoded, decoded, restored, saved again
        I8042::State s = dev.SaveState();
        ByteWriter w;
        s.Encode(w);
        std::vector<uint8_t> bytes = w.Take();
        ByteReader r(bytes);
        I8042::State back;
        if (!back.Decode(r) || !r.Finish("fuzz").ok() || !(back == s)) {
          Fail("the i8042 state does not decode to itself");
        }
        dev.RestoreState(back);
        if (!(dev.SaveState() == s)) Fail("a restored i8042 saves another state");
        break;
      }
      case 6: {  // a snapshot state of the fuzzer's bytes, if it decodes
        ByteReader r(in.Bytes(in.U8() % 40));
        I8042::State s;
        if (s.Decode(r)) dev.RestoreState(s);
        break;
      }
      case 7:
        (void)dev.SendCtrlAltDel();
        break;
    }
  }
  if (resets != expected_resets) Fail("a CPU reset without the reset command, or none with it");
  int pending = 0;
  OnVcpu([&] {
    while ((read(4) & 1) && pending <= kMaxPending) {
      (void)read(0);
      pending++;
    }
  });
  if (pending > kMaxPending) Fail("the i8042's output queue grows without a bound");

}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  OnDeviceThread([&] { Input(data, size); });
  return 0;
}
