#include "src/vstate/bus.h"

#include <gtest/gtest.h>

#include <vector>

namespace ember {
namespace {

struct Recorder : BusDevice {
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    for (auto& b : data) b = static_cast<uint8_t>(offset);
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    writes.push_back({offset, data.size()});
  }
  std::vector<std::pair<uint64_t, size_t>> writes;
};

TEST(BusTest, DispatchesByRangeWithOffsets) {
  Bus bus;
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  ASSERT_TRUE(bus.Insert(a, 0x100, 0x10).ok());
  ASSERT_TRUE(bus.Insert(b, 0x110, 0x10).ok());
  uint8_t v[2];
  ASSERT_TRUE(bus.Read(0x105, v));
  EXPECT_EQ(v[0], 5);
  ASSERT_TRUE(bus.Write(0x11e, std::span<const uint8_t>(v, 2)));
  ASSERT_EQ(b->writes.size(), 1u);
  EXPECT_EQ(b->writes[0].first, 0xeu);
  EXPECT_TRUE(a->writes.empty());
}

TEST(BusTest, MissesAndStraddlesAreDropped) {
  Bus bus;
  ASSERT_TRUE(bus.Insert(std::make_shared<Recorder>(), 0x100, 0x10).ok());
  uint8_t v[4];
  EXPECT_FALSE(bus.Read(0xff, std::span(v, 1)));
  EXPECT_FALSE(bus.Read(0x110, std::span(v, 1)));
  EXPECT_FALSE(bus.Read(0x10e, std::span(v, 4))) << "access runs past the device";
  EXPECT_FALSE(bus.Read(UINT64_MAX, std::span(v, 4)));
}

TEST(BusTest, RefusesOverlapsAndEmptyRanges) {
  Bus bus;
  ASSERT_TRUE(bus.Insert(std::make_shared<Recorder>(), 0x100, 0x10).ok());
  EXPECT_FALSE(bus.Insert(std::make_shared<Recorder>(), 0x10f, 1).ok());
  EXPECT_FALSE(bus.Insert(std::make_shared<Recorder>(), 0xf8, 0x10).ok());
  EXPECT_FALSE(bus.Insert(std::make_shared<Recorder>(), 0x200, 0).ok());
  EXPECT_FALSE(bus.Insert(std::make_shared<Recorder>(), UINT64_MAX, 2).ok());
  EXPECT_TRUE(bus.Insert(std::make_shared<Recorder>(), 0x110, 1).ok());
}

}  // namespace
}  // namespace ember
