// libFuzzer target: virtio-pmem behind its transport (transport_harness.h),
// on a 64 KiB memfd (so a flush is a real msync, under the VMM thread's
// filter), unlimited or behind a small flush limiter (the first byte
// picks). Guest flush requests, well formed mostly, else with one thing
// wrong (a length, a direction, an unknown type, a buffer missing or one
// too many) or one to four buffers of any kind; direct or in an indirect
// table, in RAM or across its end, one chain or a burst of them at a kick.
// Config-space reads and writes of every width; the limiter's timer and
// time passing; the device's saved state as garbage and round-tripped.
//
// Beyond the harness's checks, what the device promises: it writes guest
// memory only in writable buffers its tables name (and the used ring); a
// well-formed flush (a 4-byte FLUSH read, then a 4-byte status written,
// 5.19.6) is answered with 4 bytes and status 0 (an msync of a memfd
// cannot fail); any other chain with 0 bytes, nothing written and one
// event_fails; a request left in the ring has the timer armed; the limiter
// lets through no more flushes than its buckets allow; the config space
// reads the region's start and size, and a write changes nothing; a
// restore takes only the configured region, arms the timer and leaves the
// buckets within their sizes; saved state restores to the same buckets.
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <string>

#include "src/common/byte_codec.h"
#include "src/devices/virtio/pmem/pmem_device.h"
#include "tests/fuzz/transport_harness.h"

using namespace ember;
using namespace ember::fuzz;
using namespace ember::virtio;
using namespace ember::virtio::pmem;

namespace {

constexpr uint64_t kGuestAddr = 4ull << 30;
constexpr uint64_t kFileSize = 64 * 1024;
constexpr uint64_t kRegionSize = kAlignment;  // the file and its padding
constexpr uint8_t kSentinel = 0xa5;
constexpr uint64_t kMaxChains = 32;

// An ops bucket smaller than a few kicks, and a bandwidth bucket smaller
// than one flush (each costs the file's size, so each overdraws), both
// refilling within an input.
const TokenBucketConfig kBytes{48 * 1024, 1, 0}, kOps{2, 2, 1};

// The saved state: the region, then the limiter's buckets (the tokens and
// the one-time burst left, bandwidth then ops; none for absent ones, or
// for an older Ember's state, the region alone).
struct Saved {
  uint64_t start = 0, size = 0;
  std::vector<uint64_t> tokens;
};

Saved Parse(std::span<const uint8_t> bytes) {
  Saved s;
  ByteReader r(bytes);
  if (!r.U64(&s.start) || !r.U64(&s.size)) Fail("the device's saved state does not read back");
  for (int i = 0; i < 2 && r.remaining() > 0; i++) {
    bool present = false;
    uint64_t budget = 0, burst = 0, ns;
    if (!r.Bool(&present)) Fail("the device's saved state does not read back");
    if (!present) continue;
    if (!r.U64(&budget) || !r.U64(&burst) || !r.U64(&ns) || !r.U64(&ns)) {
      Fail("the device's saved state does not read back");
    }
    s.tokens.insert(s.tokens.end(), {budget, burst});
  }
  return s;
}

struct Pmem {
  std::unique_ptr<TransportHarness> h;
  PmemDevice* device = nullptr;
  bool limited = false;
  std::vector<uint8_t> fresh;      // the saved state of a device nothing touched
  std::map<uint16_t, Chain> mine;  // by head
  uint64_t start_ns = 0, flushes = 0;
  int restores = 0;

  explicit Pmem(bool limit) : limited(limit) {
    int file = memfd_create("ember-fuzz-pmem", 0);
    if (file < 0 || ftruncate(file, kFileSize) != 0) Fail("memfd pmem");
    PmemConfig config{"fuzz", "/proc/self/fd/" + std::to_string(file)};
    if (limit) config.rate_limiter = RateLimiterConfig{kBytes, kOps};
    auto backing = PmemBacking::Map(config.path_on_host, false);
    if (!backing.ok()) Fail("cannot map the pmem file");
    auto dev = PmemDevice::Create(config, std::move(*backing), kGuestAddr);
    if (!dev.ok()) Fail("cannot make the pmem device");
    device = dev->get();
    h = std::make_unique<TransportHarness>(std::move(*dev));
    h->set_extra_op([this](FuzzInput& in) { Extra(in); });
    fresh = device->SaveDeviceState();
  }

  MmioTransport& t() { return h->transport(); }
  const GuestMemory& mem() { return h->mem(); }

  // Mostly not 4: a few bytes, up to 64 KiB, or any.
  static uint32_t WrongLength(FuzzInput& in) {
    uint8_t how = in.U8();
    return how < 160 ? how % 9 : how < 240 ? in.U16() : in.U32();
  }

  // A flush as Linux sends it mostly (its type read, then its status
  // written, 4 bytes each), else one thing wrong or any one to four
  // buffers. All hold the sentinel, the first the type over it.
  std::vector<Descriptor> Buffers(FuzzInput& in) {
    uint32_t type = in.U8() < 240 ? kRequestFlush : in.U32();
    std::vector<Descriptor> b = {{0, 4, false}, {0, 4, true}};
    uint8_t shape = in.U8();
    if (shape >= 176) {
      switch (shape % 6) {
        case 0:
          b[0].len = WrongLength(in);
          break;
        case 1:
          b[1].len = WrongLength(in);
          break;
        case 2:
          b[in.U8() & 1].device_writable ^= true;
          break;
        case 3:
          b.pop_back();
          break;
        case 4:
          b.push_back({0, 4, in.Bool()});
          break;
        case 5:
          b.resize(1 + in.U8() % 4);
          for (Descriptor& d : b) d = {0, in.Bool() ? 4 : WrongLength(in), in.Bool()};
          break;
      }
    }
    for (Descriptor& d : b) {
      d.addr = BufferAddress(in, d.len);
      if (d.len <= kAreaSize) (void)mem().Write(d.addr, std::vector<uint8_t>(d.len, kSentinel));
    }
    (void)mem().WriteObj<uint32_t>(b[0].addr, type);
    return b;
  }

  // Up to kMaxChains chains published, then one kick.
  void Request(FuzzInput& in) {
    std::optional<Queue::State> q = h->QueueState();
    if (!q) return;
    PublishBurst(in, mem(), *q, kMaxChains, [this](FuzzInput& in) { return Buffers(in); }, mine);
    Served([&] { t().Notify(0); });
  }

  // Runs `serve` (a kick or the timer) and checks what it did to guest
  // memory (TransportHarness::Watch), its answers, its counters and the
  // ring's leftovers.
  template <typename F>
  void Served(F serve) {
    std::optional<Queue::State> q = h->QueueState();
    uint64_t fails = device->pmem_counters().event_fails;
    std::optional<Watched> w = h->Watch(serve);
    std::optional<Queue::State> now = h->QueueState();
    // One flush (and one take from the limiter) per call that served anything.
    if (q && now && now->next_used != q->next_used) flushes++;
    h->CheckWaiting();
    CheckRate();
    if (!w) return;
    Span used = {q->used_ring, 6 + 8ull * q->size};
    uint64_t nothing = 0;
    for (const Watched::Used& u : w->used) {
      if (u.len != 0 && u.len != 4) Fail("a request answered with neither 0 nor 4 bytes");
      nothing += u.len == 0;
      auto it = mine.find(static_cast<uint16_t>(u.id));
      if (it != mine.end() && it->second.Intact(mem())) Judge(it->second, u.len, *w, used);
    }
    // Unless the queue broke, when what it popped is never answered.
    if (!(t().status() & kStatusNeedsReset) &&
        device->pmem_counters().event_fails - fails != nothing) {
      Fail("event_fails does not count the requests answered with nothing");
    }
  }

  // An answer against the chain's buffers.
  void Judge(const Chain& c, uint32_t len, const Watched& w, const Span& used) {
    const std::vector<Descriptor>& b = c.buffers;
    bool sound = b.size() == 2 && !b[0].device_writable && b[0].len == 4 &&
                 b[1].device_writable && b[1].len == 4;
    if (sound) {
      // The type the device read, unless a status or the used ring
      // (written in this call) lies over it.
      Span type = {b[0].addr, 4};
      if (Overlap(used, type)) return;
      for (const Span& s : w.writable) {
        if (Overlap(s, type)) return;
      }
      sound = mem().ReadObj<uint32_t>(b[0].addr).value_or(~0u) == kRequestFlush;
    }
    if (sound) {
      if (len != 4) Fail("a sound flush was not answered with its status");
      if (mem().ReadObj<uint32_t>(b[1].addr).value_or(~0u) != kResponseOk) {
        Fail("a sound flush's status is not 0");
      }
      return;
    }
    if (len != 0) Fail("a malformed request was answered with bytes");
    // Nothing written: none of its writable buffers that no other
    // descriptor names changed.
    for (const Descriptor& d : b) {
      Span own = {d.addr, d.len};
      if (!d.device_writable || d.len == 0) continue;
      if (std::count_if(w.writable.begin(), w.writable.end(),
                        [&](const Span& s) { return Overlap(s, own); }) > 1) {
        continue;
      }
      for (const Span& s : w.changed) {
        if (Overlap(s, own)) Fail("a malformed request's buffer was written");
      }
    }
  }

  // Since the input began: flushes within what the buckets held (more
  // after each restore, which may refill them and forgive one flush of
  // debt), plus what they earned, plus one for rounding.
  void CheckRate() {
    if (!limited) return;
    uint64_t elapsed = MonotonicNs() - start_ns;
    if (flushes > MostAllowed(kOps, elapsed, restores, 0)) {
      Fail("more flushes than the limiter allows");
    }
    if (flushes * kFileSize > MostAllowed(kBytes, elapsed, restores, kFileSize)) {
      Fail("more flushed bytes than the limiter allows");
    }
  }

  // The config space at `width` bytes from `offset`: start and size
  // (le64), zeros past them.
  void CheckConfig(uint64_t offset, size_t width) {
    uint8_t want[24] = {};
    std::memcpy(want, &kGuestAddr, 8);
    std::memcpy(want + 8, &kRegionSize, 8);
    uint8_t got[8] = {};
    OnVcpu([&] { t().Read(0x100 + offset, std::span<uint8_t>(got, width)); });
    for (size_t i = 0; i < width; i++) {
      if (got[i] != (offset + i < sizeof(want) ? want[offset + i] : 0)) {
        Fail("the config space is not the region's start and size");
      }
    }
  }

  absl::Status Restore(std::span<const uint8_t> bytes) {
    absl::Status st = h->RestoreDeviceState(bytes);
    if (!st.ok()) return st;
    restores++;
    Saved taken = Parse(bytes), now = Parse(h->SaveDeviceState());
    if (taken.start != kGuestAddr || taken.size != kRegionSize) {
      Fail("a restore took another region");
    }
    if (!h->TimerPending()) Fail("a restored device does not look at its ring");
    const TokenBucketConfig* buckets[] = {&kBytes, &kOps};
    if (now.tokens.size() != (limited ? 4u : 0u)) Fail("a restore changed the limiter's buckets");
    for (size_t i = 0; i < now.tokens.size(); i += 2) {
      const TokenBucketConfig& b = *buckets[i / 2];
      if (now.tokens[i] > b.size || now.tokens[i + 1] > b.one_time_burst) {
        Fail("a restore overfilled a bucket");
      }
    }
    return st;
  }

  void Extra(FuzzInput& in) {
    uint8_t op = in.U8();
    switch (op < 112 ? 0 : op % 7) {
      case 0:
        Request(in);
        break;
      case 1:  // the VMM loop sees the timer expire
        if (h->TimerDue()) Served([&] { t().NotifyTimer(); });
        break;
      case 2:
        h->LetTimePass(in);
        break;
      case 3:  // the saved state, garbage or changed here and there
        (void)Restore(GarbledState(in, h->SaveDeviceState(), 95));
        break;
      case 4: {  // saved and restored: the same buckets
        std::vector<uint8_t> saved = h->SaveDeviceState();
        if (!Restore(saved).ok()) Fail("the device's saved state does not restore");
        if (Parse(h->SaveDeviceState()).tokens != Parse(saved).tokens) {
          Fail("the device's saved state restores to other buckets");
        }
        break;
      }
      case 5:
        h->LinuxInit(in.U8(), 0, /*indirect=*/true);
        break;
      case 6: {  // the config space read at any width and offset, maybe
                 // after a write, which it refuses and counts
        uint8_t how = in.U8();
        size_t width = size_t{1} << (how & 3);
        uint64_t offset = in.U8() % 32;
        if (how & 4) {
          uint64_t value = in.U64();
          uint64_t was = device->pmem_counters().cfg_fails;
          OnVcpu([&] {
            t().Write(0x100 + offset,
                      std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&value), width));
          });
          if (device->pmem_counters().cfg_fails != was + 1) Fail("a config write not counted");
        }
        CheckConfig(offset, width);
        break;
      }
    }
  }

  void Run(FuzzInput& in, LogCounter& log) {
    // Each input starts from full buckets and forgets the last one's chains.
    if (!Restore(fresh).ok()) Fail("the fresh state does not restore");
    mine.clear();
    restores = 0;
    flushes = 0;
    start_ns = MonotonicNs();
    h->Run(in, log);
    CheckRate();
    CheckConfig(0, 8);
    CheckConfig(8, 8);
  }
};

struct Devices {
  LogCounter log;
  Pmem unlimited{false}, limited{true};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Devices* devices = new Devices();
  FuzzInput in(data, size);
  Pmem& pmem = in.U8() & 1 ? devices->limited : devices->unlimited;
  pmem.Run(in, devices->log);
  return 0;
}
