// The token buckets on a clock the test moves: no sleeping.
#include "src/devices/virtio/rate_limiter.h"

#include <gtest/gtest.h>

namespace ember::virtio {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSecond = 1000 * kMs;

RateLimiterConfig Bytes(uint64_t size, uint64_t refill_ms, uint64_t burst = 0) {
  return {TokenBucketConfig{size, refill_ms, burst}, std::nullopt};
}

// Serves requests of `bytes` as fast as the limiter lets them for
// `duration`, waking exactly when it says; returns the bytes served.
uint64_t Stream(RateLimiter& rl, uint64_t start, uint64_t duration, uint64_t bytes,
                int* waits = nullptr) {
  uint64_t now = start, served = 0;
  while (now <= start + duration) {
    if (rl.Consume(1, bytes, now)) {
      served += bytes;
    } else {
      now += rl.WaitNs(now);
      if (waits) (*waits)++;
    }
  }
  return served;
}

TEST(RateLimiterTest, WithoutBucketsNothingIsLimited) {
  RateLimiter rl;
  EXPECT_FALSE(rl.enabled());
  for (int i = 0; i < 1000; i++) EXPECT_TRUE(rl.Consume(1, 1 << 30, 0));
  RateLimiter empty(RateLimiterConfig{}, 0);  // "rx_rate_limiter": {}
  EXPECT_FALSE(empty.enabled());
}

TEST(RateLimiterTest, AFullBucketThenTheRefillRate) {
  RateLimiter rl(Bytes(1000, 100), 0);  // 10,000 bytes/s
  EXPECT_TRUE(rl.Consume(1, 1000, 0)) << "it starts full";
  EXPECT_FALSE(rl.Consume(1, 100, 0));
  EXPECT_EQ(rl.WaitNs(0), 10 * kMs) << "100 bytes take 10 ms to refill";
  EXPECT_FALSE(rl.Consume(1, 100, 5 * kMs)) << "still waiting";
  EXPECT_TRUE(rl.Consume(1, 100, 10 * kMs));
}

TEST(RateLimiterTest, ThroughputKeepsToTheRate) {
  // 1 MiB per 100 ms = 10 MiB/s, 4 KiB requests, 10 s: 100 MiB plus the
  // initial full bucket (1 MiB), within one request.
  RateLimiter rl(Bytes(1 << 20, 100), 0);
  int waits = 0;
  uint64_t served = Stream(rl, 0, 10 * kSecond, 4096, &waits);
  EXPECT_NEAR(static_cast<double>(served), 101.0 * (1 << 20), 4096);
  EXPECT_LT(waits, 30000) << "one wait per refused request, no busy retries";
}

TEST(RateLimiterTest, AnIdleBucketHoldsNoMoreThanItsSize) {
  RateLimiter rl(Bytes(1000, 100), 0);
  EXPECT_TRUE(rl.Consume(1, 600, 0));
  // A second later the bucket is full again: 1000, not the 400 left plus a
  // refill on top.
  EXPECT_TRUE(rl.Consume(1, 400, kSecond));
  EXPECT_TRUE(rl.Consume(1, 600, kSecond));
  EXPECT_FALSE(rl.Consume(1, 1, kSecond));
}

TEST(RateLimiterTest, OpsAreLimitedApartFromBytes) {
  RateLimiter rl(RateLimiterConfig{std::nullopt, TokenBucketConfig{100, 1000, 0}}, 0);
  uint64_t served = Stream(rl, 0, 5 * kSecond, 1 << 20);  // 100 ops/s
  EXPECT_EQ(served / (1 << 20), 600u) << "100 at once, then 100 a second for 5 s";
}

TEST(RateLimiterTest, OneTimeBurstComesFirstAndOnce) {
  RateLimiter rl(Bytes(1000, 1000, 5000), 0);
  EXPECT_TRUE(rl.Consume(1, 5000, 0)) << "the burst";
  EXPECT_TRUE(rl.Consume(1, 1000, 0)) << "then the bucket";
  EXPECT_FALSE(rl.Consume(1, 1, 0));
  EXPECT_EQ(rl.bandwidth()->one_time_burst(), 0u);
  // A burst that cannot cover a request pays the rest from the bucket.
  RateLimiter partial(Bytes(1000, 1000, 300), 0);
  EXPECT_TRUE(partial.Consume(1, 800, 0));
  EXPECT_EQ(partial.bandwidth()->budget(), 500u);
}

TEST(RateLimiterTest, ARequestLargerThanTheBucketGoesOnceThenPays) {
  RateLimiter rl(Bytes(1000, 100), 0);  // 10 bytes/ms
  EXPECT_TRUE(rl.Consume(1, 3000, 0)) << "Firecracker lets it overdraw once";
  EXPECT_EQ(rl.WaitNs(0), 200 * kMs) << "the 2000 bytes it borrowed take 200 ms";
  EXPECT_FALSE(rl.Consume(1, 1, 199 * kMs));
  EXPECT_FALSE(rl.Consume(1, 1, 200 * kMs)) << "and the bucket earned nothing meanwhile";
  EXPECT_TRUE(rl.Consume(1, 1, 200 * kMs + kMs / 10));
  // A stream of such requests keeps to the rate.
  RateLimiter big(Bytes(1000, 100), 0);
  uint64_t served = Stream(big, 0, 10 * kSecond, 4000);
  EXPECT_NEAR(static_cast<double>(served), 100000.0 + 1000, 4000);
}

// Saved at `saved_at` on one clock, restored at `restored_at` on another
// (another process's), onto a limiter made from `config`.
RateLimiter SavedAndRestored(const RateLimiter& rl, uint64_t saved_at,
                             const std::optional<RateLimiterConfig>& config,
                             uint64_t restored_at) {
  ByteWriter w;
  rl.Save(w, saved_at);
  std::vector<uint8_t> bytes = w.Take();
  RateLimiter back(config, restored_at);
  ByteReader r(bytes);
  EXPECT_TRUE(back.Restore(r, restored_at));
  EXPECT_TRUE(r.Finish("limiter").ok());
  return back;
}

TEST(RateLimiterTest, ASnapshotKeepsTheTokensTheBurstAndTheRefillClock) {
  RateLimiterConfig config = {TokenBucketConfig{1000, 100, 500}, TokenBucketConfig{10, 100, 0}};
  RateLimiter rl(config, 0);
  ASSERT_TRUE(rl.Consume(4, 1200, 0));  // the burst, then 700 of the bucket
  RateLimiter back = SavedAndRestored(rl, 5 * kMs, config, 7 * kSecond);
  EXPECT_EQ(back.bandwidth()->one_time_burst(), 0u) << "no fresh burst";
  EXPECT_EQ(back.ops()->budget(), 6u);
  // 5 ms had passed when it was saved: 50 bytes earned, not the seven
  // seconds between the save and the restore.
  EXPECT_TRUE(back.Consume(1, 350, 7 * kSecond));
  EXPECT_FALSE(back.Consume(1, 1, 7 * kSecond));
  // An overdraft being paid is still owed.
  RateLimiter big(Bytes(1000, 100), 0);
  ASSERT_TRUE(big.Consume(1, 3000, 0));
  RateLimiter owed = SavedAndRestored(big, 50 * kMs, Bytes(1000, 100), kSecond);
  EXPECT_FALSE(owed.Consume(1, 1, kSecond + 149 * kMs));
  EXPECT_TRUE(owed.Consume(1, 1, kSecond + 151 * kMs));
}

TEST(RateLimiterTest, ARestoreFitsTheStateToTheConfiguredBuckets) {
  RateLimiter rl(Bytes(1000, 100, 500), 0);
  // A smaller bucket now: clamped to it. A bucket the state lacks stays full.
  RateLimiterConfig smaller = {TokenBucketConfig{100, 100, 10}, TokenBucketConfig{5, 100, 0}};
  RateLimiter back = SavedAndRestored(rl, 0, smaller, 0);
  EXPECT_EQ(back.bandwidth()->budget(), 100u);
  EXPECT_EQ(back.bandwidth()->one_time_burst(), 10u);
  EXPECT_EQ(back.ops()->budget(), 5u);
  // Saved buckets with none configured are read and dropped.
  RateLimiter none = SavedAndRestored(rl, 0, std::nullopt, 0);
  EXPECT_FALSE(none.enabled());
  EXPECT_TRUE(none.Consume(1, 1 << 30, 0));
}

TEST(RateLimiterTest, ASavedWaitOfMoreThanADayIsRefused) {
  RateLimiter rl(Bytes(1000, 100), 0);
  ByteWriter w;
  w.Bool(true);
  for (uint64_t v : {uint64_t{0}, uint64_t{0}, uint64_t{0}, ~uint64_t{0}}) w.U64(v);
  w.Bool(false);
  w.U64(0);
  std::vector<uint8_t> bytes = w.Take();
  ByteReader r(bytes);
  EXPECT_FALSE(rl.Restore(r, 0));
  EXPECT_NE(r.Finish("limiter").message().find("more than a day"), std::string::npos);
  ByteReader cut(std::span(bytes.data(), 10));
  EXPECT_FALSE(rl.Restore(cut, 0)) << "truncated";
}

TEST(RateLimiterTest, BytesRefusedGiveTheOpBack) {
  RateLimiter rl(RateLimiterConfig{TokenBucketConfig{100, 1000, 0}, TokenBucketConfig{10, 1000, 0}}, 0);
  EXPECT_TRUE(rl.Consume(1, 100, 0));
  EXPECT_FALSE(rl.Consume(1, 50, 0));
  EXPECT_EQ(rl.ops()->budget(), 9u) << "the refused request took no op";
  rl.GiveBack(1, 100);
  EXPECT_EQ(rl.ops()->budget(), 10u);
  EXPECT_EQ(rl.bandwidth()->budget(), 100u);
}

TEST(RateLimiterTest, ChangedAndRemovedBucketsTakeEffectAtOnce) {
  RateLimiter rl(Bytes(1000, 1000), 0);
  EXPECT_TRUE(rl.Consume(1, 1000, 0));
  EXPECT_FALSE(rl.Consume(1, 1000, 0));
  rl.Set(Bytes(10000, 1000), 0);
  EXPECT_TRUE(rl.Consume(1, 1000, 0)) << "a new bucket starts full, the wait is over";
  rl.Set(std::nullopt, 0);
  EXPECT_FALSE(rl.enabled());
  EXPECT_TRUE(rl.Consume(1, 1 << 30, 0));
}

// Firecracker's PATCH: a bucket left out keeps its tokens (no new burst),
// one named starts fresh and full, one named as null goes.
TEST(RateLimiterTest, AnUpdateKeepsTheBucketItLeavesOut) {
  RateLimiter rl(RateLimiterConfig{TokenBucketConfig{1000, 1000, 0}, TokenBucketConfig{10, 1000, 0}},
                 0);
  EXPECT_TRUE(rl.Consume(10, 1000, 0));
  RateLimiterUpdate ops_only;
  ops_only.ops.emplace(TokenBucketConfig{20, 1000, 0});
  rl.Update(ops_only, 0);
  EXPECT_EQ(rl.bandwidth()->budget(), 0u) << "the bandwidth bucket was not refilled";
  EXPECT_EQ(rl.ops()->budget(), 20u);
  EXPECT_FALSE(rl.Consume(1, 1, 0)) << "still out of bytes";
  RateLimiterUpdate drop_bandwidth;
  drop_bandwidth.bandwidth.emplace(std::nullopt);
  rl.Update(drop_bandwidth, 0);
  EXPECT_FALSE(rl.bandwidth().has_value());
  EXPECT_TRUE(rl.Consume(1, 1 << 20, 0)) << "the wait is over without the bucket";
  EXPECT_EQ(rl.ops()->budget(), 19u) << "the ops bucket kept its state";
  rl.Update(RateLimiterUpdate{}, 0);
  EXPECT_EQ(rl.ops()->budget(), 19u) << "an empty update changes nothing";
}

TEST(RateLimiterTest, HugeValuesDoNotOverflow) {
  RateLimiter rl(Bytes(UINT64_MAX, UINT64_MAX / kMs), 0);
  EXPECT_TRUE(rl.Consume(1, UINT64_MAX - 1, 0));
  EXPECT_FALSE(rl.Consume(1, 2, 0));
  EXPECT_GT(rl.WaitNs(0), 0u);
  EXPECT_TRUE(rl.Consume(1, 2, UINT64_MAX / 2));
}

}  // namespace
}  // namespace ember::virtio
