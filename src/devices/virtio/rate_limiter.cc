#include "src/devices/virtio/rate_limiter.h"

#include <sys/timerfd.h>
#include <time.h>

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace ember::virtio {
namespace {
constexpr uint64_t kNsPerMs = 1'000'000;
constexpr uint16_t kLimitersStateVersion = 1;
// The longest wait a saved limiter may ask of its device: a snapshot file
// is input, and a wait of years would stop the device for good.
constexpr uint64_t kMaxSavedWaitNs = 24 * 3600 * 1'000'000'000ull;
using u128 = unsigned __int128;
}  // namespace

uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(ts.tv_nsec);
}

void ArmTimer(int fd, uint64_t ns) {
  itimerspec when = {};
  when.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  when.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  timerfd_settime(fd, 0, &when, nullptr);
}

// The parser keeps size and refill_time positive and refill_time * 10^6
// within 64 bits.
TokenBucket::TokenBucket(const TokenBucketConfig& c, uint64_t now_ns)
    : size_(c.size),
      refill_ns_(c.refill_time_ms * kNsPerMs),
      initial_burst_(c.one_time_burst),
      burst_(c.one_time_burst),
      budget_(c.size),  // starts full
      last_ns_(now_ns) {
  uint64_t g = std::gcd(size_, refill_ns_);
  rate_tokens_ = size_ / g;
  rate_ns_ = refill_ns_ / g;
}

void TokenBucket::Refill(uint64_t now_ns) {
  if (now_ns <= last_ns_) return;
  uint64_t delta = now_ns - last_ns_;
  if (delta >= refill_ns_) {
    budget_ = size_;
    last_ns_ = now_ns;
    return;
  }
  u128 tokens = u128{delta} * rate_tokens_ / rate_ns_;
  // Time is spent only for whole tokens, rounded up: the fraction of a
  // token earned so far carries over to the next refill.
  u128 spent = (tokens * rate_ns_ + rate_tokens_ - 1) / rate_tokens_;
  last_ns_ += static_cast<uint64_t>(spent);
  budget_ = static_cast<uint64_t>(std::min<u128>(u128{budget_} + tokens, size_));
}

uint64_t TokenBucket::NsFor(uint64_t tokens) const {
  u128 ns = (u128{tokens} * rate_ns_ + rate_tokens_ - 1) / rate_tokens_;
  return static_cast<uint64_t>(std::min<u128>(ns, UINT64_MAX));
}

TokenBucket::Result TokenBucket::Take(uint64_t tokens, uint64_t now_ns) {
  // The one-time burst goes first, and does not refill.
  if (burst_ > 0) {
    if (burst_ >= tokens) {
      burst_ -= tokens;
      last_ns_ = now_ns;
      return Result::kTaken;
    }
    tokens -= burst_;
    burst_ = 0;
  }
  // Refilled on every take, not only when short: tokens earned while the
  // bucket was full are lost, as they should be (Firecracker refills only
  // when short, and so credits a bucket that sat part-empty and idle with up
  // to a bucket more than its size).
  Refill(now_ns);
  if (tokens > budget_) {
    if (tokens > size_) {
      // More than the bucket can ever hold: Firecracker lets it through
      // once, empties the bucket and makes the device wait as long as the
      // bucket needs to earn the rest. Unlike Firecracker the bucket earns
      // nothing during that wait (it pays the debt), so a stream of large
      // requests keeps to the rate instead of exceeding it by size/request.
      overdraft_ns_ = NsFor(tokens - budget_);
      budget_ = 0;
      last_ns_ = std::max(last_ns_, now_ns) + overdraft_ns_;
      return Result::kOverdrawn;
    }
    if (tokens > budget_) return Result::kShort;
  }
  budget_ -= tokens;
  return Result::kTaken;
}

void TokenBucket::GiveBack(uint64_t tokens) {
  if (burst_ > 0) {
    burst_ = std::min(burst_ + tokens, initial_burst_);
    return;
  }
  budget_ = std::min(budget_ + tokens, size_);
}

uint64_t TokenBucket::WaitNs(uint64_t tokens) const {
  return tokens > budget_ ? NsFor(tokens - budget_) : 1;
}

void TokenBucket::Save(ByteWriter& w, uint64_t now_ns) const {
  w.U64(budget_);
  w.U64(burst_);
  w.U64(now_ns > last_ns_ ? now_ns - last_ns_ : 0);
  w.U64(last_ns_ > now_ns ? last_ns_ - now_ns : 0);  // an overdraft being paid
}

void TokenBucket::Load(uint64_t budget, uint64_t burst, uint64_t behind_ns, uint64_t ahead_ns,
                       uint64_t now_ns) {
  budget_ = std::min(budget, size_);
  burst_ = std::min(burst, initial_burst_);
  // Longer ago than a whole refill is as good as a full refill.
  last_ns_ = ahead_ns > 0 ? now_ns + ahead_ns : now_ns - std::min({behind_ns, refill_ns_, now_ns});
  overdraft_ns_ = 0;
}

void RateLimiter::Save(ByteWriter& w, uint64_t now_ns) const {
  for (const std::optional<TokenBucket>* b : {&bandwidth_, &ops_}) {
    w.Bool(b->has_value());
    if (*b) (*b)->Save(w, now_ns);
  }
  w.U64(blocked_until_ns_ > now_ns ? blocked_until_ns_ - now_ns : 0);
}

bool RateLimiter::Restore(ByteReader& r, uint64_t now_ns) {
  // All read and checked before anything changes.
  struct Saved {
    bool present = false;
    uint64_t budget = 0, burst = 0, behind = 0, ahead = 0;
  } saved[2];
  for (Saved& b : saved) {
    if (!r.Bool(&b.present)) return false;
    if (!b.present) continue;
    if (!r.U64(&b.budget) || !r.U64(&b.burst) || !r.U64(&b.behind) || !r.U64(&b.ahead)) {
      return false;
    }
    if (b.ahead > kMaxSavedWaitNs) return r.Fail("a rate limiter bucket owes more than a day");
  }
  uint64_t blocked_for = 0;
  if (!r.U64(&blocked_for)) return false;
  if (blocked_for > kMaxSavedWaitNs) return r.Fail("a rate limiter waits more than a day");
  std::optional<TokenBucket>* buckets[2] = {&bandwidth_, &ops_};
  for (int i = 0; i < 2; i++) {
    const Saved& b = saved[i];
    if (b.present && *buckets[i]) (*buckets[i])->Load(b.budget, b.burst, b.behind, b.ahead, now_ns);
  }
  blocked_until_ns_ = enabled() && blocked_for > 0 ? now_ns + blocked_for : 0;
  return true;
}

bool RateLimiter::Consume(uint64_t ops, uint64_t bytes, uint64_t now_ns) {
  if (now_ns < blocked_until_ns_) return false;
  uint64_t overdraft_ns = 0;
  if (ops_ && ops > 0) {
    TokenBucket::Result r = ops_->Take(ops, now_ns);
    if (r == TokenBucket::Result::kShort) {
      blocked_until_ns_ = now_ns + ops_->WaitNs(ops);
      return false;
    }
    if (r == TokenBucket::Result::kOverdrawn) overdraft_ns = ops_->overdraft_ns();
  }
  if (bandwidth_ && bytes > 0) {
    TokenBucket::Result r = bandwidth_->Take(bytes, now_ns);
    if (r == TokenBucket::Result::kShort) {
      if (ops_ && ops > 0) ops_->GiveBack(ops);
      blocked_until_ns_ = now_ns + bandwidth_->WaitNs(bytes);
      return false;
    }
    if (r == TokenBucket::Result::kOverdrawn) {
      overdraft_ns = std::max(overdraft_ns, bandwidth_->overdraft_ns());
    }
  }
  blocked_until_ns_ = now_ns + overdraft_ns;
  return true;
}

void RateLimiter::GiveBack(uint64_t ops, uint64_t bytes) {
  if (ops_ && ops > 0) ops_->GiveBack(ops);
  if (bandwidth_ && bytes > 0) bandwidth_->GiveBack(bytes);
}

void RateLimiter::Set(const std::optional<RateLimiterConfig>& config, uint64_t now_ns) {
  bandwidth_.reset();
  ops_.reset();
  blocked_until_ns_ = 0;
  if (!config) return;
  if (config->bandwidth) bandwidth_.emplace(*config->bandwidth, now_ns);
  if (config->ops) ops_.emplace(*config->ops, now_ns);
}

void RateLimiter::Update(const RateLimiterUpdate& update, uint64_t now_ns) {
  auto apply = [now_ns](std::optional<TokenBucket>& bucket,
                        const std::optional<std::optional<TokenBucketConfig>>& change) {
    if (!change) return;
    if (*change) bucket.emplace(**change, now_ns);
    else bucket.reset();
  };
  apply(bandwidth_, update.bandwidth);
  apply(ops_, update.ops);
  blocked_until_ns_ = 0;  // Consume works out the wait again
}

std::vector<uint8_t> SaveLimiters(std::initializer_list<const RateLimiter*> limiters) {
  ByteWriter w;
  w.U16(kLimitersStateVersion);
  uint64_t now = MonotonicNs();
  for (const RateLimiter* l : limiters) l->Save(w, now);
  return w.Take();
}

absl::Status RestoreLimiters(std::span<const uint8_t> state,
                             std::initializer_list<RateLimiter*> limiters, absl::string_view what) {
  if (state.empty()) return absl::OkStatus();
  ByteReader r(state);
  uint16_t version = 0;
  if (r.U16(&version) && version != kLimitersStateVersion) {
    return absl::InvalidArgumentError(absl::StrCat(what, " state version ", version,
                                                   "; this Ember reads version ",
                                                   kLimitersStateVersion));
  }
  uint64_t now = MonotonicNs();
  for (RateLimiter* l : limiters) {
    if (!l->Restore(r, now)) break;
  }
  return r.Finish(absl::StrCat(what, " state"));
}

}  // namespace ember::virtio
