// libFuzzer target: virtio-rng (the entropy device) behind its transport
// (transport_harness.h), unlimited or behind a small rate limiter (the
// first byte picks), with guest requests of one to four buffers, direct or
// in an indirect table, writable mostly, of any size, in RAM or across its
// end, one chain or a burst of them at a kick; the device's timer firing
// when it is due, time passing, and its saved limiter state as garbage and
// round-tripped.
//
// Beyond the harness's checks, what the device promises: it writes guest
// memory only in writable buffers its descriptor tables name (and in the
// used ring); it answers a chain with a read-only buffer with 0 bytes and
// a sound one with all its bytes up to 64 KiB, and the bytes it reports
// are written; a request it leaves in the ring always has the timer armed
// (none is forgotten); the limiter lets through no more requests and bytes
// than its buckets held plus what they earned since; a restore arms the
// timer, and saved state restores to the same buckets.
#include <poll.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "src/devices/virtio/rng/entropy_device.h"
#include "tests/fuzz/transport_harness.h"

using namespace ember;
using namespace ember::fuzz;
using namespace ember::virtio;
using ember::virtio::rng::EntropyCounters;
using ember::virtio::rng::EntropyDevice;
using ember::virtio::rng::kMaxBytesPerRequest;

namespace {

constexpr uint64_t kTables = 0xb0000;  // indirect tables, 64 bytes a chain
constexpr uint64_t kArea = 0xc0000;    // the buffers, to the end of RAM
constexpr uint64_t kAreaSize = kMemSize - kArea;
constexpr uint8_t kSentinel = 0xa5;
constexpr uint64_t kMaxChains = 32;
constexpr int kMaxWaits = 4;  // per input, up to 2 ms each

// A bandwidth bucket smaller than one large request (so it overdraws) and
// an ops bucket smaller than a burst of chains, both refilling within an
// input.
const TokenBucketConfig kBytes{16384, 1, 8192}, kOps{4, 1, 2};

struct Span {
  uint64_t at, len;
};
bool Overlap(const Span& a, const Span& b) { return a.at < b.at + b.len && b.at < a.at + a.len; }

// A chain this fuzzer published: its buffers, and the descriptor bytes
// that make it (still the device's view of it while they are unchanged).
struct Chain {
  std::vector<Descriptor> buffers;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> made;
};

struct Rng {
  std::unique_ptr<TransportHarness> h;
  std::unique_ptr<testing::MmioDriver> driver;  // Linux's start, below
  EntropyDevice* device = nullptr;
  bool limited = false;
  std::vector<uint8_t> fresh;      // the saved state of a device nothing touched
  std::map<uint16_t, Chain> mine;  // by head
  uint64_t start_ns = 0, ops0 = 0, bytes0 = 0;
  int restores = 0, waits = 0;

  explicit Rng(bool limit) : limited(limit) {
    EntropyConfig config;
    if (limit) config.rate_limiter = RateLimiterConfig{kBytes, kOps};
    auto dev = EntropyDevice::Create(config);
    if (!dev.ok()) Fail("cannot make the entropy device");
    device = dev->get();
    h = std::make_unique<TransportHarness>(std::move(*dev));
    h->set_extra_op([this](FuzzInput& in) { Extra(in); });
    driver = std::make_unique<testing::MmioDriver>(t(), mem(), kRingBase);
    fresh = device->SaveDeviceState();
  }

  MmioTransport& t() { return h->transport(); }
  const GuestMemory& mem() { return h->mem(); }

  // Armed, or expired and not yet read (asked outside: the filters allow
  // no timerfd_gettime or poll). A timer armed for a moment ago reads as
  // neither until the kernel has run it: then a few ms tell.
  bool TimerPending() {
    bool pending = false;
    Outside([&] {
      itimerspec now = {};
      pollfd p = {device->timer_fd(), POLLIN, 0};
      pending = (timerfd_gettime(device->timer_fd(), &now) == 0 &&
                 (now.it_value.tv_sec != 0 || now.it_value.tv_nsec != 0)) ||
                poll(&p, 1, 0) == 1 || poll(&p, 1, 5) == 1;
    });
    return pending;
  }

  uint64_t BufferAddress(FuzzInput& in, uint32_t len) {
    uint8_t how = in.U8();
    uint64_t room = len < kAreaSize ? kAreaSize - len : 0;
    if (how < 230) return kArea + (in.U16() * 16ull) % (room + 1);
    if (how < 245) return kMemSize - in.U8();  // across RAM's end
    return in.U32() % kMemSize;
  }

  // Up to kMaxChains chains published, then one kick.
  void Request(FuzzInput& in) {
    std::optional<Queue::State> q = h->QueueState();
    if (!q) return;
    size_t chains = in.U8() < 160 ? 1 : 1 + in.U8() % kMaxChains;
    uint16_t next = in.U16();
    uint16_t idx = mem().ReadObj<uint16_t>(q->avail_ring + 2).value_or(0);
    for (size_t c = 0; c < chains; c++) {
      Chain chain;
      size_t n = 1 + in.U8() % 4;
      for (size_t i = 0; i < n; i++) {
        uint8_t how = in.U8();
        uint32_t len = how < 160   ? 1 + in.U16() % 4096
                       : how < 230 ? in.U32() % 0x14000  // past the 64 KiB a request gets
                       : how < 240 ? 0
                                   : in.U32();
        bool writable = in.U8() < 245;
        uint64_t addr = BufferAddress(in, len);
        chain.buffers.push_back({addr, len, writable});
        if (len <= kAreaSize) (void)mem().Write(addr, std::vector<uint8_t>(len, kSentinel));
      }
      uint16_t head = next % q->size;
      if (in.U8() >= 224) {  // one indirect descriptor naming a table of them
        uint64_t table = kTables + 64 * c;
        std::vector<uint8_t> entries;
        for (size_t i = 0; i < n; i++) {
          std::vector<uint8_t> e = Entry(chain.buffers, i, n, static_cast<uint16_t>(i + 1));
          entries.insert(entries.end(), e.begin(), e.end());
        }
        chain.made.push_back({table, entries});
        chain.made.push_back(
            {q->desc_table + 16ull * head,
             DescriptorBytes(table, static_cast<uint32_t>(entries.size()), kDescFlagIndirect, 0)});
        next++;
      } else if (n <= q->size) {
        for (size_t i = 0; i < n; i++) {
          uint16_t at = (next + i) % q->size, after = (next + i + 1) % q->size;
          chain.made.push_back({q->desc_table + 16ull * at, Entry(chain.buffers, i, n, after)});
        }
        next += n;
      } else {
        continue;  // it would loop on itself
      }
      for (auto& [at, bytes] : chain.made) (void)mem().Write(at, bytes);
      (void)mem().WriteObj<uint16_t>(q->avail_ring + 4 + 2ull * (idx % q->size), head);
      idx++;
      mine[head] = std::move(chain);
    }
    (void)mem().WriteObj<uint16_t>(q->avail_ring + 2, idx);
    Served([&] { t().Notify(0); });
  }

  // The descriptor for buffer `i` of `n`, chained to `next`.
  static std::vector<uint8_t> Entry(const std::vector<Descriptor>& bufs, size_t i, size_t n,
                                    uint16_t next) {
    uint16_t flags =
        (bufs[i].device_writable ? kDescFlagWrite : 0) | (i + 1 < n ? kDescFlagNext : 0);
    return DescriptorBytes(bufs[i].addr, bufs[i].len, flags, next);
  }

  // What the device may write: every writable buffer the tables name, and
  // the used ring. Unknown (false) when a buffer overlaps a table or a
  // ring, where the device's own writes could change the chains or what
  // it said of them.
  bool MayWrite(const Queue::State& q, std::vector<Span>* out) {
    Span used = {q.used_ring, 6 + 8ull * q.size};
    std::vector<Span> tables = {
        {q.desc_table, 16ull * q.size}, {q.avail_ring, 6 + 2ull * q.size}, used};
    size_t indirect = 0;
    struct Desc {
      uint64_t addr;
      uint32_t len;
      uint16_t flags;
    };
    auto read = [&](uint64_t at, Desc* d) {
      std::array<uint8_t, 16> e;
      if (!mem().Read(at, e).ok()) return false;
      std::memcpy(&d->addr, e.data(), 8);
      std::memcpy(&d->len, e.data() + 8, 4);
      std::memcpy(&d->flags, e.data() + 12, 2);
      return true;
    };
    for (uint32_t i = 0; i < q.size; i++) {
      Desc d;
      if (!read(q.desc_table + 16ull * i, &d)) return false;
      if (!(d.flags & kDescFlagIndirect)) {
        if (d.flags & kDescFlagWrite) out->push_back({d.addr, d.len});
        continue;
      }
      if (d.len == 0 || d.len % 16 || d.len / 16 > 256) continue;  // the queue refuses it
      if ((indirect += d.len / 16) > 1024) return false;           // too many to look at
      tables.push_back({d.addr, d.len});
      for (uint32_t j = 0; j < d.len / 16; j++) {
        Desc in_table;
        if (!read(d.addr + 16ull * j, &in_table)) break;
        if (in_table.flags & kDescFlagWrite) out->push_back({in_table.addr, in_table.len});
      }
    }
    for (const Span& w : *out) {
      for (const Span& table : tables) {
        if (Overlap(w, table)) return false;
      }
    }
    out->push_back(used);
    return true;
  }

  // Runs `serve` (a kick or the timer) and checks what it did to guest
  // memory, the used ring and the ring's leftovers.
  template <typename F>
  void Served(F serve) {
    std::optional<Queue::State> q = h->QueueState();
    if (!q) return serve();
    static std::vector<uint8_t> before(kAreaSize), after(kAreaSize);
    (void)mem().Read(kArea, before);
    std::vector<Span> may;
    bool known = MayWrite(*q, &may);
    serve();
    CheckWaiting();
    CheckRate();
    if (!known) return;
    (void)mem().Read(kArea, after);
    CheckWrites(may, before, after);
    // The used entries it wrote (the ring's own index is the guest's to
    // scribble on; the queue's count is not).
    std::optional<Queue::State> now = h->QueueState();
    if (!now || now->used_ring != q->used_ring || now->size != q->size) return;
    uint16_t count = std::min<uint16_t>(now->next_used - q->next_used, q->size);
    for (uint16_t k = now->next_used - count; k != now->next_used; k++) {
      uint64_t slot = q->used_ring + 4 + 8ull * (k % q->size);
      uint32_t id = mem().ReadObj<uint32_t>(slot).value_or(~0u);
      uint32_t len = mem().ReadObj<uint32_t>(slot + 4).value_or(0);
      if (len > kMaxBytesPerRequest) Fail("more bytes than one request gets");
      auto it = mine.find(static_cast<uint16_t>(id));
      if (it != mine.end() && Intact(it->second)) CheckServed(it->second, len);
    }
  }

  void CheckWrites(std::vector<Span> may, const std::vector<uint8_t>& before,
                   const std::vector<uint8_t>& after) {
    std::sort(may.begin(), may.end(), [](const Span& a, const Span& b) { return a.at < b.at; });
    // Covered up to (a running maximum over the sorted spans).
    size_t s = 0;
    uint64_t covered = 0;
    for (uint64_t i = 0; i < kAreaSize; i++) {
      // A page at a time while nothing changed.
      if (i % 4096 == 0 && std::memcmp(&before[i], &after[i], 4096) == 0) {
        i += 4095;
        continue;
      }
      if (before[i] == after[i]) continue;
      uint64_t a = kArea + i;
      while (s < may.size() && may[s].at <= a) {
        covered = std::max(covered, may[s].at + may[s].len);
        s++;
      }
      if (a >= covered) {
        fprintf(stderr, "guest byte %#lx changed\n", static_cast<unsigned long>(a));
        Fail("the device wrote guest memory outside the buffers it was given");
      }
    }
  }

  bool Intact(const Chain& c) {
    for (const auto& [at, bytes] : c.made) {
      std::vector<uint8_t> now(bytes.size());
      if (!mem().Read(at, now).ok() || now != bytes) return false;
    }
    return true;
  }

  void CheckServed(const Chain& c, uint32_t len) {
    uint64_t total = 0;
    bool writable = true, empty = false;
    for (const Descriptor& d : c.buffers) {
      total += d.len;
      writable &= d.device_writable;
      empty |= d.len == 0;
    }
    uint64_t want = writable ? std::min<uint64_t>(total, kMaxBytesPerRequest) : 0;
    if (len > want || (!empty && len != want)) {
      fprintf(stderr, "answered %u bytes for %lu\n", len, static_cast<unsigned long>(want));
      Fail("a request answered with the wrong length");
    }
    // The bytes it reports are written: no 32 of them left as they were.
    uint64_t left = len;
    for (const Descriptor& d : c.buffers) {
      uint64_t n = std::min<uint64_t>(d.len, left);
      std::vector<uint8_t> got(n);
      (void)mem().Read(d.addr, got);
      for (uint64_t at = 0; at + 32 <= n; at += 32) {
        if (std::all_of(got.begin() + at, got.begin() + at + 32,
                        [](uint8_t b) { return b == kSentinel; })) {
          Fail("bytes reported as written are not");
        }
      }
      left -= n;
    }
  }

  // A request left in the ring waits for the timer; none is forgotten.
  void CheckWaiting() {
    MmioTransport::State st = t().SaveState();
    if (!st.registers.activated || (st.registers.status & kStatusNeedsReset)) return;
    const Queue::State& q = st.queues[0];
    if (!q.ready || !mem().Contains(q.used_ring, 6 + 8ull * q.size) ||
        !mem().Contains(q.avail_ring, 6 + 2ull * q.size)) {
      return;
    }
    uint16_t pending = mem().ReadObj<uint16_t>(q.avail_ring + 2).value_or(0) - q.next_avail;
    if (pending == 0 || pending > q.size) return;  // the next kick breaks the queue
    if (!TimerPending()) Fail("a request waits in the ring with no timer armed");
  }

  // Since the input began: requests and bytes within what the buckets held
  // (more after each restore, which may refill them and forgive a debt of
  // up to one request), plus what they earned, plus one for rounding.
  void CheckRate() {
    if (!limited) return;
    const EntropyCounters& c = device->entropy_counters();
    uint64_t elapsed = MonotonicNs() - start_ns;
    auto bound = [&](const TokenBucketConfig& b, uint64_t debt) {
      uint64_t earned = static_cast<uint64_t>(static_cast<unsigned __int128>(elapsed) * b.size /
                                              (b.refill_time_ms * 1'000'000));
      return (1 + restores) * (b.size + b.one_time_burst + debt) + earned + b.size;
    };
    if (c.entropy_event_count - ops0 > bound(kOps, 0)) {
      Fail("more requests than the limiter allows");
    }
    if (c.entropy_bytes - bytes0 > bound(kBytes, kMaxBytesPerRequest)) {
      Fail("more bytes than the limiter allows");
    }
  }

  void CheckBuckets() {
    const RateLimiter& l = device->rate_limiter();
    if (l.bandwidth() && (l.bandwidth()->budget() > kBytes.size ||
                          l.bandwidth()->one_time_burst() > kBytes.one_time_burst)) {
      Fail("a restore overfilled the bandwidth bucket");
    }
    if (l.ops() &&
        (l.ops()->budget() > kOps.size || l.ops()->one_time_burst() > kOps.one_time_burst)) {
      Fail("a restore overfilled the ops bucket");
    }
  }

  absl::Status Restore(std::span<const uint8_t> bytes) {
    absl::Status st = t().WithDevice([&](VirtioDevice& d) { return d.RestoreDeviceState(bytes); });
    if (st.ok()) {
      restores++;
      if (!TimerPending()) Fail("a restored device does not look at its ring");
      CheckBuckets();
    }
    return st;
  }

  std::vector<uint8_t> Save() {
    return t().WithDevice([](VirtioDevice& d) { return d.SaveDeviceState(); });
  }

  void Extra(FuzzInput& in) {
    uint8_t op = in.U8();
    switch (op < 112 ? 0 : op % 6) {
      case 0:
        Request(in);
        break;
      case 1: {  // the VMM loop sees the timer expire
        bool due = false;
        Outside([&] {
          pollfd p = {device->timer_fd(), POLLIN, 0};
          due = poll(&p, 1, 0) == 1;
        });
        if (due) Served([&] { t().NotifyTimer(); });
        break;
      }
      case 2: {  // time passes: the buckets refill, the timer comes due
        uint32_t us = 1 + in.U16() % 2000;
        if (waits++ < kMaxWaits) Outside([&] { usleep(us); });
        break;
      }
      case 3: {  // the saved state, garbage or changed here and there
        (void)Restore(GarbledState(in, Save(), 95));
        break;
      }
      case 4: {  // saved and restored: the same buckets
        auto tokens = [&] {
          const RateLimiter& l = device->rate_limiter();
          std::vector<uint64_t> v;
          for (const auto* b : {&l.bandwidth(), &l.ops()}) {
            if (*b) v.insert(v.end(), {(*b)->budget(), (*b)->one_time_burst()});
          }
          return v;
        };
        std::vector<uint64_t> was = tokens();
        if (!Restore(Save()).ok()) Fail("the device's saved state does not restore");
        if (tokens() != was) Fail("the device's saved state restores to other buckets");
        break;
      }
      case 5: {  // the driver starts as Linux's does (the harness's own start
                 // takes any features)
        uint8_t how = in.U8();
        uint64_t features = kFeatureVersion1 | (how & 1 ? kFeatureEventIdx : 0) |
                            (how & 2 ? kFeatureIndirectDesc : 0);
        OnVcpu([&] { driver->Init(features, static_cast<uint16_t>(1u << (how >> 2) % 9)); });
        break;
      }
    }
  }

  void Run(FuzzInput& in, LogCounter& log) {
    // Each input starts from full buckets and forgets the last one's chains.
    if (!Restore(fresh).ok()) Fail("the fresh state does not restore");
    mine.clear();
    restores = waits = 0;
    start_ns = MonotonicNs();
    ops0 = device->entropy_counters().entropy_event_count;
    bytes0 = device->entropy_counters().entropy_bytes;
    h->Run(in, log);
    CheckRate();
  }
};

struct Devices {
  LogCounter log;
  Rng unlimited{false}, limited{true};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Devices* devices = new Devices();
  FuzzInput in(data, size);
  Rng& rng = in.U8() & 1 ? devices->limited : devices->unlimited;
  rng.Run(in, devices->log);
  return 0;
}
