// Firecracker's rate limiter (its src/vmm/src/rate_limiter): two token
// buckets, bytes and operations. A device asks Consume before it serves a
// request; on false nothing is taken and the request waits (the device
// leaves it in its queue and arms its timer for wait_ns()). Never dropped.
//
// Pure arithmetic on a monotonic clock the caller passes (ns), so tests
// can drive it without sleeping; devices pass MonotonicNs().
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#include "src/common/byte_codec.h"
#include "src/config/vm_config.h"

namespace ember::virtio {

uint64_t MonotonicNs();
// Arms the timerfd `fd` to expire `ns` from now, once; 0 disarms it (and
// clears an expiry not yet read). The one timer call every thread's
// seccomp filter allows.
void ArmTimer(int fd, uint64_t ns);

class TokenBucket {
 public:
  TokenBucket(const TokenBucketConfig& config, uint64_t now_ns);

  enum class Result {
    kTaken,
    kShort,  // not enough tokens: nothing was taken
    // More than the bucket holds: taken all the same (the bucket is left
    // empty), and the caller must wait overdraft_ns() before the next one.
    kOverdrawn,
  };
  Result Take(uint64_t tokens, uint64_t now_ns);
  // Puts back tokens taken for a request that was not served after all.
  void GiveBack(uint64_t tokens);
  // After kShort: how long until `tokens` are in the bucket.
  uint64_t WaitNs(uint64_t tokens) const;
  // After kOverdrawn: how long the bucket takes to earn what was borrowed.
  uint64_t overdraft_ns() const { return overdraft_ns_; }

  uint64_t budget() const { return budget_; }
  uint64_t one_time_burst() const { return burst_; }

  // Snapshots: the tokens left, the burst left, and the refill clock as
  // an offset from `now_ns` (so it carries across processes).
  void Save(ByteWriter& w, uint64_t now_ns) const;
  // Onto a bucket of the same configuration: what it reads is clamped to
  // the bucket's size and burst.
  void Load(uint64_t budget, uint64_t burst, uint64_t behind_ns, uint64_t ahead_ns,
            uint64_t now_ns);

 private:
  void Refill(uint64_t now_ns);
  // ns for `tokens` to refill, rounded up.
  uint64_t NsFor(uint64_t tokens) const;

  uint64_t size_;
  uint64_t refill_ns_;
  uint64_t initial_burst_;
  uint64_t burst_;
  uint64_t budget_;
  uint64_t last_ns_;
  // size / refill_ns reduced by their gcd: exact refills without overflow
  // (in 128 bits).
  uint64_t rate_tokens_, rate_ns_;
  uint64_t overdraft_ns_ = 0;
};

class RateLimiter {
 public:
  RateLimiter() = default;
  RateLimiter(const std::optional<RateLimiterConfig>& config, uint64_t now_ns) {
    Set(config, now_ns);
  }

  // False when nothing limits: the one branch the unlimited path pays.
  bool enabled() const { return bandwidth_.has_value() || ops_.has_value(); }
  // Takes `ops` operations and `bytes` bytes, or nothing (false: wait
  // until wait_ns() from now). While an overdraft is being paid back every
  // request waits.
  bool Consume(uint64_t ops, uint64_t bytes, uint64_t now_ns);
  // Gives back what Consume took for a request that was not served.
  void GiveBack(uint64_t ops, uint64_t bytes);
  // After a false Consume: when to try again, in ns from `now_ns`.
  uint64_t WaitNs(uint64_t now_ns) const {
    return blocked_until_ns_ > now_ns ? blocked_until_ns_ - now_ns : 1;
  }
  uint64_t blocked_until_ns() const { return blocked_until_ns_; }
  // Replaces the buckets (fresh and full); nullopt or {} removes limiting.
  // A request waiting may go at once.
  void Set(const std::optional<RateLimiterConfig>& config, uint64_t now_ns);
  // A PATCH, as Firecracker's: each bucket the update names is replaced
  // (fresh and full) or removed; one it leaves out keeps its tokens, so a
  // PATCH of one bucket gives no extra burst through the other.
  void Update(const RateLimiterUpdate& update, uint64_t now_ns);

  // Snapshots, as Firecracker's: a restored device goes on with the tokens
  // and the one-time burst its buckets had, not fresh ones. Restore applies
  // the state to the buckets this limiter's configuration made (the
  // snapshot's own); a bucket only one side has stays as it is.
  void Save(ByteWriter& w, uint64_t now_ns) const;
  bool Restore(ByteReader& r, uint64_t now_ns);

  const std::optional<TokenBucket>& bandwidth() const { return bandwidth_; }
  const std::optional<TokenBucket>& ops() const { return ops_; }

 private:
  std::optional<TokenBucket> bandwidth_;
  std::optional<TokenBucket> ops_;
  uint64_t blocked_until_ns_ = 0;
};

// The state of a device whose own state is its limiters (block, net,
// entropy): a version, then each limiter in turn. An empty state, from an
// Ember that saved none, leaves them fresh.
std::vector<uint8_t> SaveLimiters(std::initializer_list<const RateLimiter*> limiters);
absl::Status RestoreLimiters(std::span<const uint8_t> state,
                             std::initializer_list<RateLimiter*> limiters, absl::string_view what);

}  // namespace ember::virtio
