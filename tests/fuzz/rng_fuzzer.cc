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
#include <algorithm>
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

constexpr uint8_t kSentinel = 0xa5;
constexpr uint64_t kMaxChains = 32;

// A bandwidth bucket smaller than one large request (so it overdraws) and
// an ops bucket smaller than a burst of chains, both refilling within an
// input.
const TokenBucketConfig kBytes{16384, 1, 8192}, kOps{4, 1, 2};

struct Rng {
  std::unique_ptr<TransportHarness> h;
  EntropyDevice* device = nullptr;
  bool limited = false;
  std::vector<uint8_t> fresh;      // the saved state of a device nothing touched
  std::map<uint16_t, Chain> mine;  // by head
  uint64_t start_ns = 0, ops0 = 0, bytes0 = 0;
  int restores = 0;

  explicit Rng(bool limit) : limited(limit) {
    EntropyConfig config;
    if (limit) config.rate_limiter = RateLimiterConfig{kBytes, kOps};
    auto dev = EntropyDevice::Create(config);
    if (!dev.ok()) Fail("cannot make the entropy device");
    device = dev->get();
    h = std::make_unique<TransportHarness>(std::move(*dev));
    h->set_extra_op([this](FuzzInput& in) { Extra(in); });
    fresh = device->SaveDeviceState();
  }

  MmioTransport& t() { return h->transport(); }
  const GuestMemory& mem() { return h->mem(); }

  // One to four buffers of any size, writable mostly, holding the sentinel.
  std::vector<Descriptor> Buffers(FuzzInput& in) {
    std::vector<Descriptor> buffers;
    size_t n = 1 + in.U8() % 4;
    for (size_t i = 0; i < n; i++) {
      uint8_t how = in.U8();
      uint32_t len = how < 160   ? 1 + in.U16() % 4096
                     : how < 230 ? in.U32() % 0x14000  // past the 64 KiB a request gets
                     : how < 240 ? 0
                                 : in.U32();
      bool writable = in.U8() < 245;
      uint64_t addr = BufferAddress(in, len);
      buffers.push_back({addr, len, writable});
      if (len <= kAreaSize) (void)mem().Write(addr, std::vector<uint8_t>(len, kSentinel));
    }
    return buffers;
  }

  // Up to kMaxChains chains published, then one kick.
  void Request(FuzzInput& in) {
    std::optional<Queue::State> q = h->QueueState();
    if (!q) return;
    PublishBurst(in, mem(), *q, kMaxChains, [this](FuzzInput& in) { return Buffers(in); }, mine);
    Served([&] { t().Notify(0); });
  }

  // Runs `serve` (a kick or the timer) and checks what it did to guest
  // memory (TransportHarness::Watch), the used ring and the ring's
  // leftovers.
  template <typename F>
  void Served(F serve) {
    std::optional<Watched> w = h->Watch(serve);
    h->CheckWaiting();
    CheckRate();
    if (!w) return;
    for (const Watched::Used& u : w->used) {
      if (u.len > kMaxBytesPerRequest) Fail("more bytes than one request gets");
      auto it = mine.find(static_cast<uint16_t>(u.id));
      if (it != mine.end() && it->second.Intact(mem())) CheckServed(it->second, u.len);
    }
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

  // Since the input began: requests and bytes within what the buckets held
  // (more after each restore, which may refill them and forgive a debt of
  // up to one request), plus what they earned, plus one for rounding.
  void CheckRate() {
    if (!limited) return;
    const EntropyCounters& c = device->entropy_counters();
    uint64_t elapsed = MonotonicNs() - start_ns;
    if (c.entropy_event_count - ops0 > MostAllowed(kOps, elapsed, restores, 0)) {
      Fail("more requests than the limiter allows");
    }
    if (c.entropy_bytes - bytes0 > MostAllowed(kBytes, elapsed, restores, kMaxBytesPerRequest)) {
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
    absl::Status st = h->RestoreDeviceState(bytes);
    if (st.ok()) {
      restores++;
      if (!h->TimerPending()) Fail("a restored device does not look at its ring");
      CheckBuckets();
    }
    return st;
  }

  void Extra(FuzzInput& in) {
    uint8_t op = in.U8();
    switch (op < 112 ? 0 : op % 6) {
      case 0:
        Request(in);
        break;
      case 1:  // the VMM loop sees the timer expire
        if (h->TimerDue()) Served([&] { t().NotifyTimer(); });
        break;
      case 2:
        h->LetTimePass(in);
        break;
      case 3: {  // the saved state, garbage or changed here and there
        (void)Restore(GarbledState(in, h->SaveDeviceState(), 95));
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
        if (!Restore(h->SaveDeviceState()).ok()) Fail("the device's saved state does not restore");
        if (tokens() != was) Fail("the device's saved state restores to other buckets");
        break;
      }
      case 5:
        h->LinuxInit(in.U8(), 0, /*indirect=*/true);
        break;
    }
  }

  void Run(FuzzInput& in, LogCounter& log) {
    // Each input starts from full buckets and forgets the last one's chains.
    if (!Restore(fresh).ok()) Fail("the fresh state does not restore");
    mine.clear();
    restores = 0;
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
