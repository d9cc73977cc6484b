#include "src/devices/legacy/i8042.h"

#include <gtest/gtest.h>

#include <vector>

namespace ember {
namespace {

class I8042Test : public ::testing::Test {
 protected:
  uint8_t Status() { return Get(4); }
  uint8_t Get(uint64_t port) {
    uint8_t v;
    dev_.Read(port, std::span(&v, 1));
    return v;
  }
  void Put(uint64_t port, uint8_t v) { dev_.Write(port, std::span<const uint8_t>(&v, 1)); }
  // Everything waiting on port 0x60.
  std::vector<uint8_t> Drain() {
    std::vector<uint8_t> out;
    while (Status() & 0x01) out.push_back(Get(0));
    return out;
  }

  int resets_ = 0;
  int interrupts_ = 0;
  I8042 dev_{[this] { resets_++; }, [this] { interrupts_++; }};
};

TEST_F(I8042Test, LinuxProbeSequence) {
  EXPECT_EQ(Status() & 0x01, 0) << "nothing to read at first";
  Put(4, 0x20);  // read CTR
  EXPECT_EQ(Drain(), std::vector<uint8_t>{0x45});
  Put(4, 0x60);  // write CTR: interrupts off while probing
  Put(0, 0x44);
  Put(4, 0x20);
  EXPECT_EQ(Drain(), std::vector<uint8_t>{0x44});
  Put(4, 0xaa);  // controller self-test
  EXPECT_EQ(Drain(), std::vector<uint8_t>{0x55});
  Put(4, 0xd3);  // AUX loopback: the byte comes back marked as AUX data
  Put(0, 0x5a);
  EXPECT_TRUE(Status() & 0x20);
  EXPECT_EQ(Drain(), std::vector<uint8_t>{0x5a});
  Put(4, 0xa7);
  Put(4, 0x20);
  EXPECT_TRUE(Drain()[0] & 0x20) << "AUX disabled shows in CTR";
  EXPECT_EQ(resets_, 0);
}

TEST_F(I8042Test, KeyboardAnswersAtkbd) {
  int before = interrupts_;
  Put(0, 0xf2);  // identify
  EXPECT_EQ(Drain(), (std::vector<uint8_t>{0xfa, 0xab, 0x83}));
  EXPECT_EQ(interrupts_ - before, 3) << "one interrupt per byte";
  Put(0, 0xed);  // LEDs, then their value
  Put(0, 0x02);
  EXPECT_EQ(Drain(), (std::vector<uint8_t>{0xfa, 0xfa}));
  Put(0, 0xf0);  // which scancode set?
  Put(0, 0x00);
  EXPECT_EQ(Drain(), (std::vector<uint8_t>{0xfa, 0xfa, 0x02}));
  Put(0, 0xff);  // reset
  EXPECT_EQ(Drain(), (std::vector<uint8_t>{0xfa, 0xaa}));
}

TEST_F(I8042Test, CtrlAltDelInBothScancodeSets) {
  ASSERT_TRUE(dev_.SendCtrlAltDel());
  EXPECT_EQ(Drain(), (std::vector<uint8_t>{0x1d, 0x38, 0xe0, 0x53})) << "translated: set 1";
  Put(4, 0x60);
  Put(0, 0x01);  // no translation
  ASSERT_TRUE(dev_.SendCtrlAltDel());
  EXPECT_EQ(Drain(), (std::vector<uint8_t>{0x14, 0x11, 0xe0, 0x71})) << "set 2";
  Put(4, 0x60);
  Put(0, 0x00);  // keyboard interrupt off: nobody would read the keys
  EXPECT_FALSE(dev_.SendCtrlAltDel());
}

TEST_F(I8042Test, ResetCommand) {
  Put(4, 0xfe);
  EXPECT_EQ(resets_, 1);
}

TEST_F(I8042Test, AGuestThatNeverReadsCannotGrowTheOutputQueue) {
  // outb 0xff, 0x60 in a loop (keyboard reset: two reply bytes each), and
  // never a read of port 0x60.
  for (int i = 0; i < 100000; i++) Put(0, 0xff);
  EXPECT_EQ(dev_.SaveState().out_count, I8042::kOutputCapacity);
  EXPECT_EQ(dev_.dropped_bytes(), 2 * 100000u - I8042::kOutputCapacity);
  std::vector<uint8_t> queued = Drain();
  ASSERT_EQ(queued.size(), I8042::kOutputCapacity);
  for (size_t i = 0; i < queued.size(); i += 2) {
    EXPECT_EQ(queued[i], 0xfa) << "whole replies only, ack first";
    EXPECT_EQ(queued[i + 1], 0xaa);
  }
  // A reply that does not fit whole is dropped whole.
  for (int i = 0; i < 6; i++) Put(0, 0xf2);  // identify: three bytes each, 18 in all
  EXPECT_EQ(Drain().size(), 15u);
  Put(0, 0xee);  // and the keyboard still answers once read
  EXPECT_EQ(Drain(), std::vector<uint8_t>{0xee});
}

TEST_F(I8042Test, CountsWhatFirecrackersI8042MetricsCount) {
  Put(4, 0x20);   // read CTR: a write, and a byte to read
  Get(0);         // a read
  Status();       // a read too
  Get(2);         // no register there
  uint8_t wide[2] = {};
  dev_.Write(0, std::span<const uint8_t>(wide, 2));
  Put(4, 0xfe);   // CPU reset
  I8042Counters c = dev_.counters();
  EXPECT_EQ(c.write_count, 1u);
  EXPECT_EQ(c.read_count, 2u);
  EXPECT_EQ(c.missed_read_count, 1u);
  EXPECT_EQ(c.missed_write_count, 1u);
  EXPECT_EQ(c.reset_count, 1u);
  EXPECT_EQ(resets_, 1);
}

}  // namespace
}  // namespace ember
