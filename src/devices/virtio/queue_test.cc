#include "src/devices/virtio/queue.h"

#include <gtest/gtest.h>

#include <sys/eventfd.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "src/devices/virtio/testing/driver_queue.h"

namespace ember::virtio {
namespace {

using testing::Buffer;
using testing::DriverQueue;

constexpr uint64_t kMemSize = 1 << 20;
constexpr uint64_t kRings = 0x1000;
constexpr uint64_t kData = 0x10000;

class QueueTest : public ::testing::Test {
 protected:
  QueueTest() : mem_(*GuestMemory::Create({{0, kMemSize}})), driver_(mem_, kRings, 8), queue_(8) {
    driver_.Configure(queue_);
  }

  // Pops and expects an error mentioning `needle`, and a broken queue.
  void ExpectBroken(const std::string& needle) {
    auto chain = queue_.Pop(mem_);
    ASSERT_FALSE(chain.ok());
    EXPECT_TRUE(queue_.broken());
    EXPECT_NE(queue_.error().find(needle), std::string::npos) << queue_.error();
    EXPECT_FALSE(queue_.Pop(mem_).ok()) << "stays broken";
    EXPECT_FALSE(queue_.AddUsed(mem_, 0, 0).ok());
  }

  GuestMemory mem_;
  DriverQueue driver_;
  Queue queue_;
};

TEST_F(QueueTest, EmptyRingPopsNothing) {
  ASSERT_TRUE(queue_.Validate(mem_).ok());
  auto chain = queue_.Pop(mem_);
  ASSERT_TRUE(chain.ok());
  EXPECT_FALSE(chain->has_value());
}

TEST_F(QueueTest, PopsChainsInOrderWithTheirBuffers) {
  uint16_t a = driver_.Add({{kData, 16, false}, {kData + 16, 512, true}, {kData + 528, 1, true}});
  uint16_t b = driver_.Add({{kData + 4096, 8, false}});
  auto first = queue_.Pop(mem_);
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ((*first)->head, a);
  ASSERT_EQ((*first)->descriptors.size(), 3u);
  EXPECT_EQ((*first)->descriptors[1].addr, kData + 16);
  EXPECT_EQ((*first)->descriptors[1].len, 512u);
  EXPECT_FALSE((*first)->descriptors[0].device_writable);
  EXPECT_TRUE((*first)->descriptors[2].device_writable);
  auto second = queue_.Pop(mem_);
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ((*second)->head, b);
  EXPECT_FALSE(queue_.Pop(mem_)->has_value());
}

TEST_F(QueueTest, UsedElementsReachTheDriver) {
  uint16_t head = driver_.Add({{kData, 64, true}});
  ASSERT_TRUE(queue_.Pop(mem_).ok());
  ASSERT_TRUE(queue_.AddUsed(mem_, head, 42).ok());
  auto used = driver_.PopUsed();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->id, head);
  EXPECT_EQ(used->len, 42u);
  EXPECT_FALSE(driver_.PopUsed());
}

TEST_F(QueueTest, IndicesWrapAround) {
  // Start both sides just below 65536 so the free-running indices wrap.
  for (int i = 0; i < 70000; i += 1) {
    uint16_t head = driver_.Add({{kData, 8, true}});
    auto chain = queue_.Pop(mem_);
    ASSERT_TRUE(chain.ok() && chain->has_value()) << i;
    ASSERT_TRUE(queue_.AddUsed(mem_, head, 8).ok());
    ASSERT_TRUE(driver_.PopUsed());
  }
}

TEST_F(QueueTest, UndoReturnsTheChain) {
  uint16_t head = driver_.Add({{kData, 8, false}});
  ASSERT_TRUE(queue_.Pop(mem_)->has_value());
  queue_.Undo();
  auto again = queue_.Pop(mem_);
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ((*again)->head, head);
}

TEST(QueueValidateTest, SizesAndAlignment) {
  GuestMemory mem = *GuestMemory::Create({{0, kMemSize}});
  Queue q(256);
  DriverQueue(mem, kRings, 256).Configure(q);
  EXPECT_TRUE(q.Validate(mem).ok());
  for (uint16_t size : {0, 3, 100, 512}) {
    q.set_size(size);
    EXPECT_FALSE(q.Validate(mem).ok()) << size;
  }
  q.set_size(256);
  q.set_desc_table(kRings + 8);
  EXPECT_FALSE(q.Validate(mem).ok()) << "descriptor table must be 16-byte aligned";
  q.set_desc_table(kRings);
  q.set_avail_ring(q.avail_ring() + 1);
  EXPECT_FALSE(q.Validate(mem).ok()) << "avail ring must be 2-byte aligned";
  q.set_avail_ring(q.avail_ring() - 1);
  q.set_used_ring(q.used_ring() + 2);
  EXPECT_FALSE(q.Validate(mem).ok()) << "used ring must be 4-byte aligned";
  q.set_used_ring(kMemSize - 8);
  EXPECT_FALSE(q.Validate(mem).ok()) << "used ring runs off memory";
  q.set_desc_table(UINT64_MAX - 15);
  EXPECT_FALSE(q.Validate(mem).ok()) << "descriptor table wraps";
}

TEST_F(QueueTest, LoopingChainBreaksTheQueue) {
  driver_.WriteDescriptor(0, kData, 8, kDescFlagNext, 1);
  driver_.WriteDescriptor(1, kData, 8, kDescFlagNext, 0);
  driver_.Publish(0);
  ExpectBroken("loop");
}

TEST_F(QueueTest, SelfLoop) {
  driver_.WriteDescriptor(3, kData, 8, kDescFlagNext, 3);
  driver_.Publish(3);
  ExpectBroken("loop");
}

TEST_F(QueueTest, NextIndexBeyondTheTable) {
  driver_.WriteDescriptor(0, kData, 8, kDescFlagNext, 8);
  driver_.Publish(0);
  ExpectBroken("beyond the table");
}

TEST_F(QueueTest, HeadBeyondTheTable) {
  driver_.Publish(200);
  ExpectBroken("beyond the table");
}

TEST_F(QueueTest, BufferOutsideMemory) {
  driver_.Add({{kMemSize - 4, 8, true}});
  ExpectBroken("outside guest memory");
}

TEST_F(QueueTest, BufferAddressWraps) {
  driver_.Add({{UINT64_MAX - 3, 16, false}});
  ExpectBroken("outside guest memory");
}

TEST_F(QueueTest, AvailIndexJumpsPastTheQueue) {
  driver_.SetAvailIdx(9);
  ExpectBroken("avail index moved 9");
}

TEST_F(QueueTest, IndirectTable) {
  const uint64_t table = kData + 0x8000;
  DriverQueue inner(mem_, table, 4);  // reuse its descriptor writer
  inner.WriteDescriptor(0, kData, 16, kDescFlagNext, 2);
  inner.WriteDescriptor(2, kData + 64, 100, kDescFlagWrite, 0);
  driver_.WriteDescriptor(0, table, 4 * 16, kDescFlagIndirect, 0);
  driver_.Publish(0);
  auto chain = queue_.Pop(mem_);
  ASSERT_TRUE(chain.ok() && chain->has_value()) << chain.status();
  ASSERT_EQ((*chain)->descriptors.size(), 2u);
  EXPECT_EQ((*chain)->descriptors[1].len, 100u);
  EXPECT_TRUE((*chain)->descriptors[1].device_writable);
}

TEST_F(QueueTest, HostileIndirectTables) {
  const uint64_t table = kData + 0x8000;
  struct Case {
    const char* name;
    uint32_t len;
    uint16_t flags;
    uint16_t inner_flags;
    uint16_t inner_next;
    const char* needle;
  } cases[] = {
      {"empty", 0, kDescFlagIndirect, 0, 0, "not 1 to"},
      {"ragged", 24, kDescFlagIndirect, 0, 0, "not 1 to"},
      {"nested", 32, kDescFlagIndirect, kDescFlagIndirect, 0, "inside an indirect"},
      {"loop", 32, kDescFlagIndirect, kDescFlagNext, 0, "loops"},
      {"next out of table", 32, kDescFlagIndirect, kDescFlagNext, 7, "beyond the table"},
      {"indirect with next", 32, kDescFlagIndirect | kDescFlagNext, 0, 0, "alone"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Queue q(8);
    DriverQueue d(mem_, kRings, 8);
    d.Configure(q);
    DriverQueue inner(mem_, table, 2);
    inner.WriteDescriptor(0, kData, 8, c.inner_flags, c.inner_next);
    inner.WriteDescriptor(1, kData, 8, 0, 0);
    d.WriteDescriptor(0, table, c.len, c.flags, 1);
    d.Publish(0);
    auto chain = q.Pop(mem_);
    ASSERT_FALSE(chain.ok());
    EXPECT_NE(q.error().find(c.needle), std::string::npos) << q.error();
  }
}

TEST_F(QueueTest, IndirectTableOutsideMemory) {
  driver_.WriteDescriptor(0, kMemSize - 16, 32, kDescFlagIndirect, 0);
  driver_.Publish(0);
  ExpectBroken("outside guest memory");
}

TEST_F(QueueTest, AddUsedRefusesAHeadBeyondTheQueue) {
  EXPECT_FALSE(queue_.AddUsed(mem_, 8, 0).ok());
  EXPECT_TRUE(queue_.broken());
}

TEST_F(QueueTest, ResetRepairs) {
  driver_.SetAvailIdx(100);
  ASSERT_FALSE(queue_.Pop(mem_).ok());
  queue_.Reset();
  EXPECT_FALSE(queue_.broken());
  EXPECT_FALSE(queue_.ready());
  EXPECT_EQ(queue_.size(), 8);
}

TEST_F(QueueTest, NoInterruptFlagWithoutEventIdx) {
  uint16_t head = driver_.Add({{kData, 8, true}});
  ASSERT_TRUE(queue_.Pop(mem_).ok());
  EXPECT_FALSE(*queue_.NeedsInterrupt(mem_)) << "nothing used yet";
  ASSERT_TRUE(queue_.AddUsed(mem_, head, 8).ok());
  driver_.SetAvailFlags(1);
  EXPECT_FALSE(*queue_.NeedsInterrupt(mem_)) << "driver suppressed interrupts";
  driver_.SetAvailFlags(0);
  head = driver_.Add({{kData, 8, true}});
  ASSERT_TRUE(queue_.Pop(mem_).ok());
  ASSERT_TRUE(queue_.AddUsed(mem_, head, 8).ok());
  EXPECT_TRUE(*queue_.NeedsInterrupt(mem_));
  EXPECT_FALSE(*queue_.NeedsInterrupt(mem_)) << "already told";
}

TEST(QueueEventIdxTest, InterruptsOnlyPastUsedEventAndPublishesAvailEvent) {
  GuestMemory mem = *GuestMemory::Create({{0, kMemSize}});
  DriverQueue driver(mem, kRings, 8);
  Queue queue(8);
  driver.Configure(queue, /*event_idx=*/true);
  driver.SetUsedEvent(2);  // interrupt when used idx passes 2, i.e. reaches 3
  for (int i = 0; i < 4; i++) {
    uint16_t head = driver.Add({{kData, 8, true}});
    ASSERT_TRUE(queue.Pop(mem)->has_value());
    EXPECT_EQ(driver.AvailEvent(), i + 1) << "avail_event follows what the device took";
    ASSERT_TRUE(queue.AddUsed(mem, head, 8).ok());
    bool want = i == 2;
    EXPECT_EQ(*queue.NeedsInterrupt(mem), want) << "used idx " << i + 1;
  }
}

TEST(QueueEventIdxTest, NotifyOnNextAvailAsksForTheNextBufferWhateverWasTaken) {
  GuestMemory mem = *GuestMemory::Create({{0, kMemSize}});
  DriverQueue driver(mem, kRings, 8);
  Queue queue(8);
  driver.Configure(queue, /*event_idx=*/true);
  for (int i = 0; i < 4; i++) driver.Add({{kData, 8, true}});
  ASSERT_TRUE(queue.Pop(mem)->has_value());  // one of four taken
  driver.Add({{kData, 8, true}});
  EXPECT_FALSE(driver.KickNeeded(4)) << "Pop asked for a kick only past the one it took";
  EXPECT_EQ(*queue.NotifyOnNextAvail(mem), 5);
  driver.Add({{kData, 8, true}});
  EXPECT_TRUE(driver.KickNeeded(5));
}

// Linux's side of a queue on another thread, as fast as it goes: write
// the ring entry, publish the avail index, full barrier, read avail_event
// and kick if asked. The device pops until empty, then sleeps until kicked.
// Every buffer must be seen, none misread: a 2-byte copy done as two loads
// read indexes half old, half new and broke the queue; and the device's last
// look at the index must come after its avail_event store is visible, or
// both sides read old values and a buffer waits for a kick that never comes.
TEST(QueueEventIdxTest, ADriverOnAnotherThreadIsNeitherMisreadNorMissed) {
  constexpr uint16_t kSize = 256;
  constexpr uint32_t kBuffers = 2'000'000;
  GuestMemory mem = *GuestMemory::Create({{0, kMemSize}});
  DriverQueue driver(mem, kRings, kSize);
  Queue queue(kSize);
  driver.Configure(queue, /*event_idx=*/true);
  for (uint16_t i = 0; i < kSize; i++) driver.Add({{kData, 8, true}});
  driver.SetAvailIdx(0);  // every descriptor written; nothing published yet

  auto word = [&](uint64_t addr) {
    return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(mem.Slice(addr, 2)->data()));
  };
  const uint64_t avail = driver.avail_ring();
  const uint64_t avail_event = driver.used_ring() + 4 + 8ull * kSize;  // after the used ring
  int kick = eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(kick, 0);
  std::atomic<uint32_t> taken{0};
  std::atomic<bool> stop{false};

  std::thread guest([&] {
    for (uint32_t i = 0; i < kBuffers; i++) {
      while (i - taken.load(std::memory_order_acquire) >= kSize) {
        if (stop.load()) return;
        std::this_thread::yield();
      }
      uint16_t new_idx = static_cast<uint16_t>(i + 1);
      word(avail + 4 + 2ull * (i % kSize))
          .store(static_cast<uint16_t>(i % kSize), std::memory_order_relaxed);
      word(avail + 2).store(new_idx, std::memory_order_release);
      std::atomic_thread_fence(std::memory_order_seq_cst);  // virtio_mb
      uint16_t event = word(avail_event).load(std::memory_order_relaxed);
      if (static_cast<uint16_t>(new_idx - event - 1) < 1) {  // vring_need_event
        uint64_t one = 1;
        if (write(kick, &one, sizeof(one)) != sizeof(one)) return;
      }
    }
  });

  uint32_t n = 0;
  std::string failure;
  while (n < kBuffers && failure.empty()) {
    for (;;) {
      absl::StatusOr<std::optional<DescriptorChain>> chain = queue.Pop(mem);
      if (!chain.ok()) {
        failure = absl::StrCat(chain.status().ToString(), " after ", n, " buffers");
        break;
      }
      if (!chain->has_value()) break;
      taken.store(++n, std::memory_order_release);
    }
    if (n == kBuffers || !failure.empty()) break;
    pollfd p{kick, POLLIN, 0};
    uint64_t count;
    if (poll(&p, 1, 2000) != 1 || read(kick, &count, sizeof(count)) != sizeof(count)) {
      failure = absl::StrCat("buffer ", n, " was published and never kicked for");
    }
  }
  stop = true;
  guest.join();
  close(kick);
  EXPECT_EQ(failure, "");
}

// Random bytes in every ring, over and over: the queue may refuse, but it
// must never crash, hang, or hand out a buffer outside guest memory.
TEST(QueueFuzzTest, RandomRingsNeverEscapeGuestMemory) {
  GuestMemory mem = *GuestMemory::Create({{0, 64 << 10}});
  std::mt19937_64 rng(12345);
  for (int round = 0; round < 2000; round++) {
    Queue queue(16);
    DriverQueue driver(mem, 0x1000, 16);
    driver.Configure(queue, round % 2 == 0);
    for (uint64_t a = 0x1000; a < driver.end(); a += 8) {
      uint64_t v = rng();
      // Bias addresses toward memory so chains get walked, not just refused.
      if (rng() % 2) v &= 0x0000ffff0000ffffULL;
      ASSERT_TRUE(mem.WriteObj(a, v).ok());
    }
    for (int i = 0; i < 20; i++) {
      auto chain = queue.Pop(mem);
      if (!chain.ok() || !chain->has_value()) break;
      ASSERT_LE((*chain)->descriptors.size(), kMaxQueueSize);
      for (const Descriptor& d : (*chain)->descriptors) {
        ASSERT_TRUE(mem.Contains(d.addr, d.len));
      }
      (void)queue.AddUsed(mem, (*chain)->head, 0);
    }
  }
}

}  // namespace
}  // namespace ember::virtio
