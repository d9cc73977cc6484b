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
#pragma once

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "src/common/log.h"
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
      case 7: {  // the proper init sequence
        uint64_t features = in.U64() | (in.U8() < 230 ? virtio::kFeatureVersion1 : 0);
        uint16_t size = static_cast<uint16_t>(1u << (in.U8() % 9));
        uint32_t status = 0;
        Control([&] { status = driver_->Init(features, size); });
        // The driver lays its queues out once the device took the features.
        if (!(status & virtio::kStatusFeaturesOk)) break;
        for (size_t i = 0; i < transport_->num_queues() && i < kMaxQueues; i++) {
          virtio::testing::DriverQueue& dq = driver_->queue(i);
          shadow_[i] = {dq.desc_table(), dq.avail_ring(), dq.used_ring(), dq.size(), 0};
        }
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

  GuestMemory mem_;
  std::unique_ptr<virtio::MmioTransport> transport_;
  std::unique_ptr<virtio::testing::MmioDriver> driver_;
  std::vector<uint32_t> notified_;
  std::vector<size_t> starts_;  // where the last ops began in the input
  bool repeating_ = false;
  size_t steps_ = 0;
  ShadowQueue shadow_[kMaxQueues];
  uint32_t queue_sel_ = 0;
  ControlHook control_;
  ExtraOp extra_;
};

}  // namespace ember::fuzz
