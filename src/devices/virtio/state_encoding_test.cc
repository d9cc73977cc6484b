// The snapshot encodings of a virtqueue's and an MMIO transport's State:
// field by field, round trips, and refusal of short or malformed input.
#include <gtest/gtest.h>

#include <string>

#include <vector>

#include "src/common/byte_codec.h"
#include "src/common/testing/state_testing.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/queue.h"

namespace ember::virtio {
namespace {

using ember::testing::Decode;
using ember::testing::Encode;
using ember::testing::ExpectEveryTruncationRefused;
using ember::testing::ExpectGarbledInputHandled;

Queue::State SampleQueue(uint16_t k) {
  Queue::State s;
  s.size = 256;
  s.desc_table = 0x1111222233334440ull + k;
  s.avail_ring = 0x5555666677778880ull + k;
  s.used_ring = 0x9999aaaabbbbccc0ull + k;
  s.ready = true;
  s.event_idx = true;
  s.next_avail = static_cast<uint16_t>(0x0102 + k);
  s.next_used = static_cast<uint16_t>(0x0304 + k);
  s.signalled_used = static_cast<uint16_t>(0x0506 + k);
  return s;
}

TEST(QueueState, EncodesEachFieldInOrder) {
  Queue::State s = SampleQueue(0);
  s.desc_table = 0x0807060504030201ull;
  s.avail_ring = 0x10;
  s.used_ring = 0x20;
  s.event_idx = false;
  EXPECT_EQ(Encode(s), (std::vector<uint8_t>{0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0x10, 0, 0, 0, 0, 0,
                                             0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 1, 4, 3,
                                             6, 5}));
}

TEST(QueueState, RoundTrips) {
  Queue::State in = SampleQueue(1), out;
  ASSERT_TRUE(Decode(Encode(in), &out).ok());
  EXPECT_EQ(out.size, 256);
  EXPECT_EQ(out.desc_table, in.desc_table);
  EXPECT_EQ(out.avail_ring, in.avail_ring);
  EXPECT_EQ(out.used_ring, in.used_ring);
  EXPECT_TRUE(out.ready);
  EXPECT_TRUE(out.event_idx);
  EXPECT_EQ(out.next_avail, 0x0103);
  EXPECT_EQ(out.next_used, 0x0305);
  EXPECT_EQ(out.signalled_used, 0x0507);
  EXPECT_EQ(out, in);
}

TEST(QueueState, MalformedInputIsRefused) {
  ExpectEveryTruncationRefused(SampleQueue(0));
  ExpectGarbledInputHandled(SampleQueue(0));
  // A driver may leave any QueueNum in a queue it never enables: it
  // decodes (the device's activation checks the size), so the snapshot of
  // such a guest still loads.
  Queue::State odd = SampleQueue(0), out;
  odd.ready = false;
  for (uint16_t size : {0, 3, 0xffff}) {
    odd.size = size;
    EXPECT_TRUE(Decode(Encode(odd), &out).ok()) << size;
    EXPECT_EQ(out, odd);
  }
  std::vector<uint8_t> bytes = Encode(SampleQueue(0));
  bytes[27] = 3;  // event_idx
  EXPECT_NE(Decode(bytes, &out).message().find("not a bool"), std::string::npos);
}

MmioTransport::State SampleTransport() {
  MmioTransport::State s;
  s.device_type = 5;
  s.registers = {0x0f, 1, 2, 3, 0x0000000100000031ull, 0x3, 7, true};
  s.queues = {SampleQueue(0), SampleQueue(1), SampleQueue(2)};
  s.device = {9, 8, 7, 6};
  return s;
}

TEST(MmioTransportState, RoundTrips) {
  MmioTransport::State in = SampleTransport(), out;
  ASSERT_TRUE(Decode(Encode(in), &out).ok());
  EXPECT_EQ(out.device_type, 5u);
  const MmioTransport::Registers& r = out.registers;
  EXPECT_EQ(r.status, 0x0fu);
  EXPECT_EQ(r.device_features_sel, 1u);
  EXPECT_EQ(r.driver_features_sel, 2u);
  EXPECT_EQ(r.queue_sel, 3u);
  EXPECT_EQ(r.driver_features, 0x0000000100000031ull);
  EXPECT_EQ(r.interrupt_status, 3u);
  EXPECT_EQ(r.config_generation, 7u);
  EXPECT_TRUE(r.activated);
  ASSERT_EQ(out.queues.size(), 3u);
  for (uint16_t i = 0; i < 3; i++) EXPECT_EQ(out.queues[i], SampleQueue(i)) << i;
  EXPECT_EQ(out.device, (std::vector<uint8_t>{9, 8, 7, 6}));
  EXPECT_EQ(out, in);

  MmioTransport::State empty = {}, back;
  ASSERT_TRUE(Decode(Encode(empty), &back).ok());
  EXPECT_EQ(back, empty);
}

TEST(MmioTransportState, MalformedInputIsRefused) {
  ExpectEveryTruncationRefused(SampleTransport());
  ExpectGarbledInputHandled(SampleTransport());
  MmioTransport::State out;
  MmioTransport::State many = SampleTransport();
  many.queues.assign(MmioTransport::State::kMaxQueues + 1, SampleQueue(0));
  EXPECT_NE(Decode(Encode(many), &out).message().find("count 17"), std::string::npos);
  MmioTransport::State big = SampleTransport();
  big.device.assign(MmioTransport::State::kMaxDeviceState + 1, 0);
  EXPECT_NE(Decode(Encode(big), &out)
                .message()
                .find("is over " + std::to_string(MmioTransport::State::kMaxDeviceState)),
            std::string::npos);
}

}  // namespace
}  // namespace ember::virtio
