// A virtio device behind its MMIO transport, driven by the fuzzer's bytes
// as a guest driver would drive it, and as none should: register reads and
// writes of every width and offset (config space included), guest memory
// written, descriptors and avail entries put where the registers say the
// rings are, kicks, backend readiness, interrupt acknowledgements, the
// proper init sequence, the transport's snapshot state saved, encoded,
// decoded and restored, and the last few ops repeated up to a thousand
// times (a guest does in a loop what it did once).
//
// Besides what ASan and UBSan see, the harness checks what the transport
// promises: its snapshot state encodes and decodes to itself and restores
// onto a reset transport (a snapshot of whatever state a guest left its
// device in can be loaded); writing 0 to
// the status register resets it to 0; DRIVER_OK never stands without
// FEATURES_OK; the interrupt status holds only the two defined bits; and
// one input (well under a second) makes at most kMaxLogLines log lines,
// however many errors it causes, because every guest-caused message is
// rate limited.
//
// For a device fuzzer's own requests (its extra op): chains published in
// bursts (ChainBurst), direct or in indirect tables, with buffers in an
// area of RAM it watches (Watch: the device writes there only in writable
// buffers, and what it answered), the device's timer and the requests it
// leaves waiting for it (CheckWaiting), and the most a rate limiter lets
// through (MostAllowed).
#pragma once

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "src/common/log.h"
#include "src/config/vm_config.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/mmio_driver.h"
#include "tests/fuzz/device_filter.h"
#include "tests/fuzz/fuzz_input.h"

namespace ember::fuzz {

inline constexpr uint64_t kMemSize = 1 << 20;
// A second region after a hole, so buffers can cross from RAM into nothing.
inline constexpr uint64_t kRegion2 = 0x200000;
inline constexpr uint64_t kRegion2Size = 0x10000;
inline constexpr uint64_t kRingBase = 0x40000;
inline constexpr size_t kMaxQueues = 5;  // the balloon with all its queues
// Per input: the rate limiter lets 10 lines per call site through in 5 s.
inline constexpr size_t kMaxLogLines = 200;
// Where a device fuzzer puts its requests, past the rings (64 KiB a queue
// from kRingBase): indirect tables, 64 bytes a chain, then the buffers to
// the end of RAM (the area Watch looks at).
inline constexpr uint64_t kTables = 0xb0000;
inline constexpr uint64_t kArea = 0xc0000;
inline constexpr uint64_t kAreaSize = kMemSize - kArea;

struct Span {
  uint64_t at, len;
};
inline bool Overlap(const Span& a, const Span& b) {
  return a.at < b.at + b.len && b.at < a.at + a.len;
}

// A buffer of `len` bytes: in the area mostly, sometimes across RAM's end
// or anywhere in RAM (on a ring or table too).
inline uint64_t BufferAddress(FuzzInput& in, uint32_t len) {
  uint8_t how = in.U8();
  uint64_t room = len < kAreaSize ? kAreaSize - len : 0;
  if (how < 230) return kArea + (in.U16() * 16ull) % (room + 1);
  if (how < 245) return kMemSize - in.U8();
  return in.U32() % kMemSize;
}

// The most a limiter's bucket `b` lets through in `elapsed_ns` of one
// input: what it held (again after each of `restores`, which may refill it
// and forgive a debt of up to `debt`), plus what it earned, plus one
// bucket for rounding.
inline uint64_t MostAllowed(const TokenBucketConfig& b, uint64_t elapsed_ns, int restores,
                            uint64_t debt) {
  uint64_t earned = static_cast<uint64_t>(static_cast<unsigned __int128>(elapsed_ns) * b.size /
                                          (b.refill_time_ms * 1'000'000));
  return (1 + restores) * (b.size + b.one_time_burst + debt) + earned + b.size;
}

// Log lines go to a memfd that the harness counts and empties per input.
class LogCounter {
 public:
  LogCounter() : fd_(memfd_create("ember-fuzz-log", 0)) {
    SetLogLevel(LogLevel::kWarn);
    SetLogSink(fd_);
  }
  // Lines written since the last call.
  size_t Take() {
    off_t end = lseek(fd_, 0, SEEK_END);
    size_t lines = 0;
    char buf[4096];
    for (off_t at = 0; at < end;) {
      ssize_t n = pread(fd_, buf, sizeof(buf), at);
      if (n <= 0) break;
      for (ssize_t i = 0; i < n; i++) lines += buf[i] == '\n';
      at += n;
    }
    if (ftruncate(fd_, 0) != 0) Fail("cannot empty the log memfd");
    lseek(fd_, 0, SEEK_SET);
    return lines;
  }
  // The last lines, to say which message flooded.
  std::string Tail() const {
    std::string text(4096, '\0');
    off_t end = lseek(fd_, 0, SEEK_END);
    off_t from = end > 4096 ? end - 4096 : 0;
    ssize_t n = pread(fd_, text.data(), text.size(), from);
    text.resize(n > 0 ? n : 0);
    return text;
  }

 private:
  int fd_;
};

// A descriptor's 16 bytes as a driver writes them (2.7.5).
inline std::vector<uint8_t> DescriptorBytes(uint64_t addr, uint32_t len, uint16_t flags,
                                            uint16_t next) {
  std::vector<uint8_t> e(16);
  std::memcpy(e.data(), &addr, 8);
  std::memcpy(e.data() + 8, &len, 4);
  std::memcpy(e.data() + 12, &flags, 2);
  std::memcpy(e.data() + 14, &next, 2);
  return e;
}

// Writes `chain` at descriptors from `first` (around the table's end) and
// publishes its head, as a driver would at the queue the registers placed.
inline void PublishChain(const GuestMemory& mem, const virtio::Queue::State& q, uint16_t first,
                         const std::vector<virtio::Descriptor>& chain) {
  for (size_t i = 0; i < chain.size(); i++) {
    uint16_t index = static_cast<uint16_t>((first + i) % q.size);
    uint16_t next = static_cast<uint16_t>((first + i + 1) % q.size);
    uint16_t flags = (chain[i].device_writable ? virtio::kDescFlagWrite : 0) |
                     (i + 1 < chain.size() ? virtio::kDescFlagNext : 0);
    (void)mem.Write(q.desc_table + 16ull * index,
                    DescriptorBytes(chain[i].addr, chain[i].len, flags, next));
  }
  absl::StatusOr<uint16_t> idx = mem.ReadObj<uint16_t>(q.avail_ring + 2);
  if (!idx.ok()) return;
  (void)mem.WriteObj<uint16_t>(q.avail_ring + 4 + 2ull * (*idx % q.size), first % q.size);
  (void)mem.WriteObj<uint16_t>(q.avail_ring + 2, static_cast<uint16_t>(*idx + 1));
}

// A chain a fuzzer published: its head, its buffers, and the descriptor
// bytes that make it (still the device's view of it while they are
// unchanged).
struct Chain {
  uint16_t head = 0;
  std::vector<virtio::Descriptor> buffers;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> made;

  bool Intact(const GuestMemory& mem) const {
    for (const auto& [at, bytes] : made) {
      std::vector<uint8_t> now(bytes.size());
      if (!mem.Read(at, now).ok() || now != bytes) return false;
    }
    return true;
  }
};

// Chains put in the avail ring one after another from descriptor `next`
// (around the table's end), then published with one index write, as a
// driver does before a kick.
class ChainBurst {
 public:
  ChainBurst(const GuestMemory& mem, const virtio::Queue::State& q, uint16_t next)
      : mem_(mem), q_(q), next_(next),
        idx_(mem.ReadObj<uint16_t>(q.avail_ring + 2).value_or(0)) {}

  // `buffers` at the next descriptors, or as one indirect descriptor naming
  // a table of them at `table`. None, with nothing written, for a direct
  // chain longer than the queue (it would loop on itself).
  std::optional<Chain> Add(std::vector<virtio::Descriptor> buffers,
                           std::optional<uint64_t> table) {
    Chain chain{static_cast<uint16_t>(next_ % q_.size), std::move(buffers), {}};
    size_t n = chain.buffers.size();
    if (table) {
      std::vector<uint8_t> entries;
      for (size_t i = 0; i < n; i++) {
        std::vector<uint8_t> e = Entry(chain.buffers, i, static_cast<uint16_t>(i + 1));
        entries.insert(entries.end(), e.begin(), e.end());
      }
      chain.made.push_back({*table, entries});
      chain.made.push_back({q_.desc_table + 16ull * chain.head,
                            DescriptorBytes(*table, static_cast<uint32_t>(entries.size()),
                                            virtio::kDescFlagIndirect, 0)});
      next_++;
    } else if (n <= q_.size) {
      for (size_t i = 0; i < n; i++) {
        uint16_t at = (next_ + i) % q_.size, after = (next_ + i + 1) % q_.size;
        chain.made.push_back({q_.desc_table + 16ull * at, Entry(chain.buffers, i, after)});
      }
      next_ += n;
    } else {
      return {};
    }
    for (auto& [at, bytes] : chain.made) (void)mem_.Write(at, bytes);
    (void)mem_.WriteObj<uint16_t>(q_.avail_ring + 4 + 2ull * (idx_ % q_.size), chain.head);
    idx_++;
    return chain;
  }

  void Publish() { (void)mem_.WriteObj<uint16_t>(q_.avail_ring + 2, idx_); }

 private:
  // The descriptor for buffer `i`, chained to `next`.
  static std::vector<uint8_t> Entry(const std::vector<virtio::Descriptor>& bufs, size_t i,
                                    uint16_t next) {
    uint16_t flags = (bufs[i].device_writable ? virtio::kDescFlagWrite : 0) |
                     (i + 1 < bufs.size() ? virtio::kDescFlagNext : 0);
    return DescriptorBytes(bufs[i].addr, bufs[i].len, flags, next);
  }

  const GuestMemory& mem_;
  virtio::Queue::State q_;
  uint16_t next_, idx_;
};

// A driver's burst into queue `q`: one chain mostly, else up to
// `max_chains`, each of the buffers `make(in)` gives, direct or (1 in 8)
// through an indirect table at kTables (64 bytes a chain), published with
// one index write. The chains the ring took go into `mine` by head; the
// caller kicks.
template <typename Make>
void PublishBurst(FuzzInput& in, const GuestMemory& mem, const virtio::Queue::State& q,
                  size_t max_chains, Make make, std::map<uint16_t, Chain>& mine) {
  size_t chains = in.U8() < 160 ? 1 : 1 + in.U8() % max_chains;
  ChainBurst burst(mem, q, in.U16());
  for (size_t c = 0; c < chains; c++) {
    std::vector<virtio::Descriptor> buffers = make(in);
    std::optional<uint64_t> table;
    if (in.U8() >= 224) table = kTables + 64 * c;
    if (std::optional<Chain> chain = burst.Add(std::move(buffers), table)) {
      mine[chain->head] = std::move(*chain);
    }
  }
  burst.Publish();
}

// What one call of a device did to a queue (TransportHarness::Watch): the
// used entries it added, the writable buffers the tables named when it
// began, and the runs of bytes it changed in the area.
struct Watched {
  struct Used {
    uint32_t id, len;
  };
  std::vector<Used> used;
  std::vector<Span> writable;
  std::vector<Span> changed;
};

class TransportHarness {
 public:
  // Runs around the ops that may activate the device (register writes,
  // init, restore): true before, false after. The net fuzzer swaps its
  // TAP in for them.
  using ControlHook = std::function<void(bool)>;
  // A device-specific op, given the rest of the input to read from.
  using ExtraOp = std::function<void(FuzzInput&)>;

  explicit TransportHarness(std::unique_ptr<virtio::VirtioDevice> device)
      : mem_(*GuestMemory::Create({{0, kMemSize}, {kRegion2, kRegion2Size}})) {
    transport_ = std::make_unique<virtio::MmioTransport>(std::move(device), &mem_,
                                                         UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<virtio::testing::MmioDriver>(*transport_, mem_, kRingBase);
    // QueueNotify writes an ioeventfd did not catch, and the kicks the
    // transport makes at DRIVER_OK, run on the VMM thread in Ember: here,
    // after the register access that made them (the transport's lock is
    // held during it).
    transport_->set_notify_fallback([this](uint32_t q) { notified_.push_back(q); });
  }

  virtio::MmioTransport& transport() { return *transport_; }
  const GuestMemory& mem() const { return mem_; }
  // The device-side state of queue `q`, as the registers set it, if ready.
  std::optional<virtio::Queue::State> QueueState(size_t q = 0) {
    virtio::MmioTransport::State st = transport_->SaveState();
    if (st.queues.size() <= q || !st.queues[q].ready || st.queues[q].size == 0) return {};
    return st.queues[q];
  }
  // Memory hotplug's region, for a virtio-mem device (before any input).
  void AddHotplugRegion(uint64_t addr, uint64_t size, uint64_t slot_size) {
    if (!mem_.AddHotplugRegion(addr, size, slot_size).ok()) Fail("cannot add the hotplug region");
  }
  void set_control_hook(ControlHook hook) { control_ = std::move(hook); }
  void set_extra_op(ExtraOp op) { extra_ = std::move(op); }

  // The driver starts as Linux's does (Init's own op takes any features):
  // VERSION_1, the features the device needs, EVENT_IDX, and where the
  // device offers them INDIRECT_DESC, as `how`'s low bits say, then a
  // queue of 2^n (n < 9) from its other bits.
  void LinuxInit(uint8_t how, uint64_t needed, bool indirect) {
    uint64_t features =
        virtio::kFeatureVersion1 | needed | (how & 1 ? virtio::kFeatureEventIdx : 0);
    how >>= 1;
    if (indirect) {
      features |= how & 1 ? virtio::kFeatureIndirectDesc : 0;
      how >>= 1;
    }
    Init(features, static_cast<uint16_t>(1u << how % 9));
  }

  // Time passes (1-2000 us, at most kMaxWaits times an input): buckets
  // refill and timers come due.
  void LetTimePass(FuzzInput& in) {
    uint32_t us = 1 + in.U16() % 2000;
    if (waits_++ < kMaxWaits) Outside([&] { usleep(us); });
  }

  // The proper init sequence with `features` (what the device offers of
  // them), the queues laid out from kRingBase. Returns the status.
  uint32_t Init(uint64_t features, uint16_t queue_size) {
    uint32_t status = 0;
    Control([&] { status = driver_->Init(features, queue_size); });
    // The driver lays its queues out once the device took the features.
    if (!(status & virtio::kStatusFeaturesOk)) return status;
    for (size_t i = 0; i < transport_->num_queues() && i < kMaxQueues; i++) {
      virtio::testing::DriverQueue& dq = driver_->queue(i);
      shadow_[i] = {dq.desc_table(), dq.avail_ring(), dq.used_ring(), dq.size(), 0};
    }
    return status;
  }

  std::vector<uint8_t> SaveDeviceState() {
    return transport_->WithDevice([](virtio::VirtioDevice& d) { return d.SaveDeviceState(); });
  }
  absl::Status RestoreDeviceState(std::span<const uint8_t> bytes) {
    return transport_->WithDevice(
        [&](virtio::VirtioDevice& d) { return d.RestoreDeviceState(bytes); });
  }

  // Runs `serve` (a kick, the device's timer) and checks that the device
  // wrote the area only in writable buffers that queue `qi`'s tables name,
  // directly or in indirect tables, and in its used ring. What it did, or
  // none where that cannot be told: a writable buffer over a table or a
  // ring (the device's own writes could change the chains or what it said
  // of them), or the queue gone or moved.
  template <typename F>
  std::optional<Watched> Watch(F serve, size_t qi = 0) {
    std::optional<virtio::Queue::State> q = QueueState(qi);
    if (!q) {
      serve();
      return {};
    }
    before_.resize(kAreaSize);
    after_.resize(kAreaSize);
    (void)mem_.Read(kArea, before_);
    Watched w;
    bool known = MayWrite(*q, &w.writable);
    serve();
    if (!known) return {};
    (void)mem_.Read(kArea, after_);
    Span used = {q->used_ring, 6 + 8ull * q->size};
    std::vector<Span> may = w.writable;
    may.push_back(used);
    w.changed = CheckWrites(std::move(may));
    // The used entries it wrote (the ring's own index is the guest's to
    // scribble on; the queue's count is not).
    std::optional<virtio::Queue::State> now = QueueState(qi);
    if (!now || now->used_ring != q->used_ring || now->size != q->size) return {};
    uint16_t count = std::min<uint16_t>(now->next_used - q->next_used, q->size);
    for (uint16_t k = now->next_used - count; k != now->next_used; k++) {
      uint64_t slot = q->used_ring + 4 + 8ull * (k % q->size);
      w.used.push_back({mem_.ReadObj<uint32_t>(slot).value_or(~0u),
                        mem_.ReadObj<uint32_t>(slot + 4).value_or(0)});
    }
    return w;
  }

  // The device's timer armed, or expired and not yet read (asked outside:
  // the filters allow no timerfd_gettime or poll). A timer armed for a
  // moment ago reads as neither until the kernel has run it: then a few ms
  // tell.
  bool TimerPending() {
    int fd = transport_->device().timer_fd();
    bool pending = false;
    Outside([&] {
      itimerspec now = {};
      pollfd p = {fd, POLLIN, 0};
      pending = (timerfd_gettime(fd, &now) == 0 &&
                 (now.it_value.tv_sec != 0 || now.it_value.tv_nsec != 0)) ||
                poll(&p, 1, 0) == 1 || poll(&p, 1, 5) == 1;
    });
    return pending;
  }
  // Expired: the VMM loop would call NotifyTimer now.
  bool TimerDue() {
    bool due = false;
    Outside([&] {
      pollfd p = {transport_->device().timer_fd(), POLLIN, 0};
      due = poll(&p, 1, 0) == 1;
    });
    return due;
  }
  // A request the device left in queue `qi`'s ring waits for its timer:
  // none is forgotten.
  void CheckWaiting(size_t qi = 0) {
    virtio::MmioTransport::State st = transport_->SaveState();
    if (!st.registers.activated || (st.registers.status & virtio::kStatusNeedsReset) ||
        st.queues.size() <= qi) {
      return;
    }
    const virtio::Queue::State& q = st.queues[qi];
    if (!q.ready || !mem_.Contains(q.used_ring, 6 + 8ull * q.size) ||
        !mem_.Contains(q.avail_ring, 6 + 2ull * q.size)) {
      return;
    }
    uint16_t pending = mem_.ReadObj<uint16_t>(q.avail_ring + 2).value_or(0) - q.next_avail;
    if (pending == 0 || pending > q.size) return;  // the next kick breaks the queue
    if (!TimerPending()) Fail("a request waits in the ring with no timer armed");
  }

  // One input: a reset device and zeroed memory, then ops until the input
  // ends (at most kMaxOps).
  void Run(FuzzInput& in, LogCounter& log) {
    log.Take();
    // Under the filters of Ember's VMM and vCPU threads (device_filter.h).
    OnDeviceThread([&] {
      Control([&] { Write(0x70, 0, 4); });
      if (transport_->status() != 0) Fail("status is not 0 after a reset");
      for (auto& q : shadow_) q = {};
      std::span<uint8_t> low = *mem_.Slice(0, kMemSize);
      std::memset(low.data(), 0, low.size());
      std::span<uint8_t> high = *mem_.Slice(kRegion2, kRegion2Size);
      std::memset(high.data(), 0, high.size());
      starts_.clear();
      steps_ = 0;
      waits_ = 0;
      for (int i = 0; i < kMaxOps && !in.empty(); i++) Step(in);
      // What the guest left in flight finishes or is dropped before the
      // next input's reset.
      Control([&] { Write(0x70, 0, 4); });
    });
    size_t lines = log.Take();
    if (lines > kMaxLogLines) {
      fprintf(stderr, "%zu log lines from one input; the last ones:\n%s\n", lines,
              log.Tail().c_str());
      Fail("guest-caused log lines are not rate limited");
    }
  }

 private:
  static constexpr int kMaxOps = 512;
  static constexpr int kMaxWaits = 4;
  static constexpr size_t kMaxRepeatedOps = 8;
  static constexpr size_t kMaxSteps = 2000;  // repeats included, per input

  struct ShadowQueue {
    uint64_t desc = 0, avail = 0, used = 0;
    uint16_t size = 0, avail_idx = 0;
  };

  // A register write sequence, on the vcpu thread (its device activation
  // included); what it kicked then runs on the vmm thread.
  template <typename F>
  void Control(F f) {
    OnVcpu([&] {
      if (control_) control_(true);
      f();
      if (control_) control_(false);
    });
    RunNotified();
  }

  void RunNotified() {
    std::vector<uint32_t> queues;
    queues.swap(notified_);
    for (uint32_t q : queues) transport_->Notify(q);
  }

  void Write(uint64_t offset, uint32_t value, size_t width) {
    uint8_t b[8] = {};
    std::memcpy(b, &value, 4);
    transport_->Write(offset, std::span<const uint8_t>(b, width));
    if (width != 4) return;
    // What the driver believes it set up, for the descriptor and publish
    // ops (the device may have ignored it).
    ShadowQueue& q = shadow_[queue_sel_ % kMaxQueues];
    auto half = [&](uint64_t& a, bool high) {
      a = high ? (a & 0xffffffffull) | (uint64_t{value} << 32) : (a & ~0xffffffffull) | value;
    };
    switch (offset) {
      case 0x30: queue_sel_ = value; break;
      case 0x38: q.size = static_cast<uint16_t>(value); break;
      case 0x80: case 0x84: half(q.desc, offset == 0x84); break;
      case 0x90: case 0x94: half(q.avail, offset == 0x94); break;
      case 0xa0: case 0xa4: half(q.used, offset == 0xa4); break;
    }
  }

  uint32_t Read(uint64_t offset, size_t width) {
    uint8_t b[8] = {};
    OnVcpu([&] { transport_->Read(offset, std::span<uint8_t>(b, width)); });
    uint32_t v;
    std::memcpy(&v, b, 4);
    return v;
  }

  // A guest address: mostly in RAM, sometimes across a region's end or
  // anywhere at all.
  static uint64_t Address(FuzzInput& in) {
    uint8_t how = in.U8();
    if (how < 200) return in.U32() % kMemSize;
    if (how < 220) return kMemSize - in.U8();
    if (how < 240) return kRegion2 + kRegion2Size - in.U8();
    return in.U64();
  }

  void CheckRegisters() {
    uint32_t status = 0, interrupts = 0;
    OnVcpu([&] {  // one hand-over for both
      status = Read(0x70, 4);
      interrupts = Read(0x60, 4);
    });
    if ((status & virtio::kStatusDriverOk) && !(status & virtio::kStatusFeaturesOk)) {
      Fail("DRIVER_OK without FEATURES_OK");
    }
    if (interrupts & ~3u) Fail("interrupt status bits beyond used-buffer and config");
  }

  // Runs the `ops` ops before this one again, `times` times.
  void Repeat(FuzzInput& in, size_t ops, size_t times) {
    if (repeating_ || starts_.size() < ops + 1) return;
    FuzzInput again = in.Range(starts_[starts_.size() - 1 - ops], starts_.back());
    repeating_ = true;
    for (size_t i = 0; i < times && steps_ < kMaxSteps; i++) {
      FuzzInput pass = again;
      while (!pass.empty()) Step(pass);
    }
    repeating_ = false;
  }

  void Step(FuzzInput& in) {
    steps_++;
    if (!repeating_) {
      starts_.push_back(in.position());
      if (starts_.size() > kMaxRepeatedOps + 1) starts_.erase(starts_.begin());
    }
    uint8_t op = in.U8();
    switch (op >= 252 ? 12 : op % 12) {
      case 0: {  // register write: 4 bytes mostly, else 1, 2 or 8
        uint8_t how = in.U8();
        size_t width = (how & 3) ? 4 : size_t{1} << ((how >> 2) % 4);
        uint64_t offset = in.U16() % 0x180;
        uint32_t value = in.U32();
        Control([&] { Write(offset, value, width); });
        break;
      }
      case 1: {  // register read
        uint8_t how = in.U8();
        size_t width = (how & 3) ? 4 : size_t{1} << ((how >> 2) % 4);
        (void)Read(in.U16() % 0x180, width);
        break;
      }
      case 2: {  // guest memory written
        uint64_t addr = Address(in);
        std::span<const uint8_t> bytes = in.Bytes(in.U8() % 64);
        (void)mem_.Write(addr, bytes);
        break;
      }
      case 3: {  // a descriptor in the table the registers point at
        ShadowQueue& q = shadow_[in.U8() % kMaxQueues];
        uint16_t index = in.U16();
        uint64_t addr = Address(in);
        uint32_t len = in.U8() < 240 ? in.U16() : in.U32();
        uint16_t flags = in.U8() & 7;
        uint16_t next = in.U16();
        uint64_t at = q.desc + static_cast<uint64_t>(q.size ? index % q.size : index) * 16;
        (void)mem_.WriteObj<uint64_t>(at, addr);
        (void)mem_.WriteObj<uint32_t>(at + 8, len);
        (void)mem_.WriteObj<uint16_t>(at + 12, flags);
        (void)mem_.WriteObj<uint16_t>(at + 14, next);
        break;
      }
      case 4: {  // an avail entry published (or the index set outright)
        ShadowQueue& q = shadow_[in.U8() % kMaxQueues];
        uint16_t head = in.U16();
        if (in.U8() >= 224) q.avail_idx = in.U16();
        uint16_t slot = q.size ? q.avail_idx % q.size : q.avail_idx;
        (void)mem_.WriteObj<uint16_t>(q.avail + 4 + uint64_t{slot} * 2, head);
        q.avail_idx++;
        (void)mem_.WriteObj<uint16_t>(q.avail + 2, q.avail_idx);
        break;
      }
      case 5: {  // a kick, as the ioeventfd delivers it
        uint8_t q = in.U8();
        transport_->Notify(q < 240 ? q % (transport_->num_queues() + 1) : in.U32());
        break;
      }
      case 6: {  // the backend fd is ready (Ember watches only a device's real fd)
        uint8_t how = in.U8();
        if (transport_->device().backend_fd() < 0) break;
        uint32_t events = EPOLLIN;
        if (how & 1) events |= EPOLLERR;
        if (how & 2) events |= EPOLLHUP;
        if (how & 4) events = EPOLLOUT;
        transport_->NotifyBackend(events);
        break;
      }
      case 7: {  // the proper init sequence, with any features
        uint64_t features = in.U64() | (in.U8() < 230 ? virtio::kFeatureVersion1 : 0);
        Init(features, static_cast<uint16_t>(1u << (in.U8() % 9)));
        break;
      }
      case 8:  // a status write
        Control([&] { Write(0x70, in.U8(), 4); });
        break;
      case 9: {  // the snapshot state, through its encoding and back
        virtio::MmioTransport::State state = transport_->SaveState();
        ByteWriter w;
        state.Encode(w);
        std::vector<uint8_t> bytes = w.Take();
        ByteReader r(bytes);
        virtio::MmioTransport::State back;
        bool decoded = back.Decode(r);
        absl::Status finished = r.Finish("the transport's state");
        if (!decoded || !finished.ok() || !(back == state)) {
          fprintf(stderr, "%s\n", finished.ok() ? "decoded to another state"
                                                 : std::string(finished.message()).c_str());
          Fail("the transport's snapshot state does not decode to itself");
        }
        // Restored as a snapshot load does: onto a device fresh from reset.
        // What a running guest could make, a load must take.
        if (in.Bool()) {
          Control([&] { Write(0x70, 0, 4); });
          // Unfiltered: a snapshot load restores devices before the VMM
          // thread takes its filter (Vm::Run).
          absl::Status st;
          Outside([&] {
            if (control_) control_(true);
            st = transport_->RestoreState(back);
            if (control_) control_(false);
          });
          if (!st.ok()) {
            fprintf(stderr, "%s\n", std::string(st.message()).c_str());
            Fail("the transport's saved state does not restore");
          }
          RunNotified();
        }
        break;
      }
      case 10: {  // the interrupt taken and acknowledged
        uint64_t count;
        (void)!::read(transport_->irq_fd(), &count, sizeof(count));
        uint32_t ack = in.U8() < 200 ? Read(0x60, 4) : in.U32();
        Control([&] { Write(0x64, ack, 4); });
        break;
      }
      case 11:
        if (extra_) extra_(in);
        break;
      case 12: {  // the last few ops again, in a loop (op bytes 252-255)
        size_t ops = 1 + in.U8() % kMaxRepeatedOps;
        Repeat(in, ops, in.U16() % 1024);
        break;
      }
    }
    RunNotified();
    CheckRegisters();
  }

  // What the device may write while it serves `q`: every writable buffer
  // the tables name. Unknown (false) when one overlaps a table or a ring.
  bool MayWrite(const virtio::Queue::State& q, std::vector<Span>* out) {
    std::vector<Span> tables = {{q.desc_table, 16ull * q.size},
                                {q.avail_ring, 6 + 2ull * q.size},
                                {q.used_ring, 6 + 8ull * q.size}};
    size_t indirect = 0;
    struct Desc {
      uint64_t addr;
      uint32_t len;
      uint16_t flags;
    };
    auto read = [&](uint64_t at, Desc* d) {
      std::array<uint8_t, 16> e;
      if (!mem_.Read(at, e).ok()) return false;
      std::memcpy(&d->addr, e.data(), 8);
      std::memcpy(&d->len, e.data() + 8, 4);
      std::memcpy(&d->flags, e.data() + 12, 2);
      return true;
    };
    for (uint32_t i = 0; i < q.size; i++) {
      Desc d;
      if (!read(q.desc_table + 16ull * i, &d)) return false;
      if (!(d.flags & virtio::kDescFlagIndirect)) {
        if (d.flags & virtio::kDescFlagWrite) out->push_back({d.addr, d.len});
        continue;
      }
      if (d.len == 0 || d.len % 16 || d.len / 16 > 256) continue;  // the queue refuses it
      if ((indirect += d.len / 16) > 1024) return false;           // too many to look at
      tables.push_back({d.addr, d.len});
      for (uint32_t j = 0; j < d.len / 16; j++) {
        Desc in_table;
        if (!read(d.addr + 16ull * j, &in_table)) break;
        if (in_table.flags & virtio::kDescFlagWrite) out->push_back({in_table.addr, in_table.len});
      }
    }
    for (const Span& w : *out) {
      for (const Span& table : tables) {
        if (Overlap(w, table)) return false;
      }
    }
    return true;
  }

  // Fails on an area byte that changed from before_ to after_ outside
  // `may`; returns the runs of bytes that changed.
  std::vector<Span> CheckWrites(std::vector<Span> may) {
    std::sort(may.begin(), may.end(), [](const Span& a, const Span& b) { return a.at < b.at; });
    std::vector<Span> changed;
    // Covered up to (a running maximum over the sorted spans).
    size_t s = 0;
    uint64_t covered = 0;
    for (uint64_t i = 0; i < kAreaSize; i++) {
      // A page at a time while nothing changed.
      if (i % 4096 == 0 && std::memcmp(&before_[i], &after_[i], 4096) == 0) {
        i += 4095;
        continue;
      }
      if (before_[i] == after_[i]) continue;
      uint64_t a = kArea + i;
      while (s < may.size() && may[s].at <= a) {
        covered = std::max(covered, may[s].at + may[s].len);
        s++;
      }
      if (a >= covered) {
        fprintf(stderr, "guest byte %#lx changed\n", static_cast<unsigned long>(a));
        Fail("the device wrote guest memory outside the buffers it was given");
      }
      if (!changed.empty() && changed.back().at + changed.back().len == a) {
        changed.back().len++;
      } else {
        changed.push_back({a, 1});
      }
    }
    return changed;
  }

  GuestMemory mem_;
  std::unique_ptr<virtio::MmioTransport> transport_;
  std::unique_ptr<virtio::testing::MmioDriver> driver_;
  std::vector<uint32_t> notified_;
  std::vector<size_t> starts_;  // where the last ops began in the input
  bool repeating_ = false;
  size_t steps_ = 0;
  int waits_ = 0;  // LetTimePass's, this input
  ShadowQueue shadow_[kMaxQueues];
  uint32_t queue_sel_ = 0;
  ControlHook control_;
  ExtraOp extra_;
  std::vector<uint8_t> before_, after_;  // the area, around a Watch
};

}  // namespace ember::fuzz
