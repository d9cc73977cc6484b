// libFuzzer target: the 8250 UART's eight registers read and written in any
// order and width (DLAB, loopback, FIFO control, scratch), host input
// queued, output flushed, and its snapshot state. Checked beyond ASan and
// UBSan: the receive FIFO never holds more than Serial::kMaxInput bytes,
// whatever the host or the loopback put in; the snapshot state decodes to
// itself; the guest's output reaches the host fd byte for byte, but for
// what an output rate limiter (on for some inputs) drops and counts.
#include <sys/mman.h>
#include <unistd.h>

#include "src/devices/legacy/serial.h"
#include "tests/fuzz/device_filter.h"
#include "tests/fuzz/fuzz_input.h"

using namespace ember;
using namespace ember::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int out = memfd_create("ember-fuzz-serial", 0);
  if (ftruncate(out, 0) != 0 || lseek(out, 0, SEEK_SET) != 0) Fail("memfd");
  size_t sent = 0;  // bytes written to THR with DLAB and loopback off
  uint64_t limited = 0;  // bytes the rate limiter dropped
  // Built before the filters, as in Ember; driven under the filter of
  // Ember's VMM thread, port accesses under its vCPU threads'
  // (device_filter.h).
  Serial dev(out, [] {});
  OnDeviceThread([&] {
    FuzzInput in(data, size);
    if (in.U8() & 1) dev.LimitOutput({1 + uint64_t{in.U16()}, 1 + uint64_t{in.U8()}, in.U8()});
    uint8_t lcr = 0, mcr = 0;
    auto write = [&](uint64_t reg, uint8_t value) {
      OnVcpu([&] { dev.Write(reg, std::span<const uint8_t>(&value, 1)); });
      if (reg == 3) lcr = value;
      if (reg == 4) mcr = value;
      if (reg == 0 && !(lcr & 0x80) && !(mcr & 0x10)) sent++;
    };
    auto read = [&](uint64_t reg) {
      uint8_t b = 0;
      OnVcpu([&] { dev.Read(reg, std::span<uint8_t>(&b, 1)); });
      return b;
    };
    while (!in.empty()) {
      switch (in.U8() % 8) {
        case 0: write(in.U8() % 8, in.U8()); break;
        case 1: (void)read(in.U8() % 8); break;
        case 2: {  // host input
          std::span<const uint8_t> bytes = in.Bytes(in.U8());
          size_t copies = 1 + in.U8() % 64;
          for (size_t i = 0; i < copies; i++) (void)dev.EnqueueInput(bytes);
          break;
        }
        case 3: {  // a burst of one register, as rep outsb makes it
          uint64_t reg = in.U8() % 8;
          uint8_t value = in.U8();
          int count = 1 + in.U16() % 5000;
          OnVcpu([&] {  // one hand-over for the burst
            for (int i = 0; i < count; i++) write(reg, value);
          });
          break;
        }
        case 4: {  // other widths and offsets: ignored
          uint8_t b[8] = {};
          uint64_t reg = in.U8() % 16;
          size_t width = 1 + in.U8() % 8;
          if (in.Bool()) {
            OnVcpu([&] { dev.Read(reg, std::span<uint8_t>(b, width)); });
          } else {
            b[0] = in.U8();
            OnVcpu([&] { dev.Write(reg, std::span<const uint8_t>(b, width)); });
            if (width == 1 && reg < 8) {
              if (reg == 3) lcr = b[0];
              if (reg == 4) mcr = b[0];
              if (reg == 0 && !(lcr & 0x80) && !(mcr & 0x10)) sent++;
            }
          }
          break;
        }
        case 5: {  // saved, encoded, decoded, restored
          Serial::State s = dev.SaveState();
          ByteWriter w;
          s.Encode(w);
          std::vector<uint8_t> bytes = w.Take();
          ByteReader r(bytes);
          Serial::State back;
          if (!back.Decode(r) || !r.Finish("fuzz").ok() || !(back == s)) {
            Fail("the serial state does not decode to itself");
          }
          dev.RestoreState(back);
          lcr = back.lcr;
          mcr = back.mcr;
          break;
        }
        case 6:
          dev.Flush();
          break;
        case 7: {  // the receive FIFO drained, counting
          size_t n = 0;
          uint8_t saved_lcr = lcr;
          write(3, lcr & 0x7f);
          OnVcpu([&] {
            while ((read(5) & 1) && n <= Serial::kMaxInput) {
              (void)read(0);
              n++;
            }
          });
          if (n > Serial::kMaxInput) Fail("the receive FIFO holds more than kMaxInput");
          write(3, saved_lcr);
          break;
        }
      }
    }
    dev.Flush();
    limited = dev.counters().rate_limiter_dropped_bytes;
  });
  if (static_cast<size_t>(lseek(out, 0, SEEK_END)) + limited != sent) {
    Fail("the guest's output did not reach the host fd byte for byte");
  }
  return 0;
}
