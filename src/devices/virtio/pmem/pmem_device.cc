#include "src/devices/virtio/pmem/pmem_device.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "src/common/byte_codec.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/status_macros.h"

namespace ember::virtio::pmem {

absl::StatusOr<PmemBacking> PmemBacking::Map(const std::string& path, bool read_only) {
  UniqueFd fd(open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("pmem: open ", path));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(absl::StrCat("pmem: stat ", path));
  uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    off_t end = lseek(fd.get(), 0, SEEK_END);
    if (end < 0) return ErrnoStatus(absl::StrCat("pmem: size of ", path));
    file_size = static_cast<uint64_t>(end);
  } else if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("pmem: ", path, " must be a regular file or a block device"));
  }
  if (file_size == 0) {
    return absl::InvalidArgumentError(absl::StrCat("pmem: ", path, " is empty"));
  }
  uint64_t size = (file_size + kAlignment - 1) / kAlignment * kAlignment;
  // The whole region first, private and anonymous (the padding), then the
  // file over its start.
  int prot = read_only ? PROT_READ : PROT_READ | PROT_WRITE;
  void* region = mmap(nullptr, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (region == MAP_FAILED) return ErrnoStatus(absl::StrCat("pmem: mmap for ", path));
  if (mmap(region, file_size, prot, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd.get(), 0) ==
      MAP_FAILED) {
    absl::Status st_map = ErrnoStatus(absl::StrCat("pmem: mmap ", path));
    munmap(region, size);
    return st_map;
  }
  return PmemBacking(static_cast<uint8_t*>(region), size, file_size, read_only);
}

PmemBacking::PmemBacking(PmemBacking&& other) noexcept
    : host_(std::exchange(other.host_, nullptr)), size_(std::exchange(other.size_, 0)),
      file_size_(other.file_size_), read_only_(other.read_only_) {}

PmemBacking& PmemBacking::operator=(PmemBacking&& other) noexcept {
  if (this != &other) {
    if (host_ != nullptr) munmap(host_, size_);
    host_ = std::exchange(other.host_, nullptr);
    size_ = std::exchange(other.size_, 0);
    file_size_ = other.file_size_;
    read_only_ = other.read_only_;
  }
  return *this;
}

PmemBacking::~PmemBacking() {
  if (host_ != nullptr) munmap(host_, size_);
}

absl::Status PmemBacking::Sync() const {
  if (msync(host_, file_size_, MS_SYNC) != 0) return ErrnoStatus("pmem: msync");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PmemDevice>> PmemDevice::Create(const PmemConfig& config,
                                                               PmemBacking backing,
                                                               uint64_t guest_addr) {
  if (guest_addr % kAlignment != 0) {
    return absl::InvalidArgumentError("pmem: the guest region must start on 2 MiB");
  }
  UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer.valid()) return ErrnoStatus("pmem: timerfd_create");
  return std::unique_ptr<PmemDevice>(
      new PmemDevice(config, std::move(backing), guest_addr, std::move(timer)));
}

void PmemDevice::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  uint8_t config[16];
  uint64_t start = guest_addr_, size = backing_.size();
  std::memcpy(config, &start, 8);
  std::memcpy(config + 8, &size, 8);
  for (size_t i = 0; i < data.size(); i++) {
    data[i] = offset + i < sizeof(config) ? config[offset + i] : 0;
  }
}

absl::Status PmemDevice::Activate(const GuestMemory& mem, std::span<Queue> queues,
                                  Interrupt* interrupt, uint64_t) {
  if (queues.size() != 1 || !queues[0].ready()) {
    return absl::InvalidArgumentError("virtio-pmem needs its request queue ready");
  }
  mem_ = &mem;
  queue_ = &queues[0];
  interrupt_ = interrupt;
  return absl::OkStatus();
}

void PmemDevice::Reset() {
  ArmTimer(timer_.get(), 0);
  armed_until_ns_ = 0;
  mem_ = nullptr;
  queue_ = nullptr;
  interrupt_ = nullptr;
}

std::vector<uint8_t> PmemDevice::SaveDeviceState() const {
  ByteWriter w;
  w.U64(guest_addr_);
  w.U64(backing_.size());
  limiter_.Save(w, MonotonicNs());
  return w.Take();
}

absl::Status PmemDevice::RestoreDeviceState(std::span<const uint8_t> state) {
  ByteReader r(state);
  uint64_t start = 0, size = 0;
  // The limiter's buckets follow, from an Ember that saved them.
  if (r.U64(&start) && r.U64(&size) && r.remaining() > 0) limiter_.Restore(r, MonotonicNs());
  RETURN_IF_ERROR(r.Finish("virtio-pmem state"));
  if (start != guest_addr_ || size != backing_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pmem ", id_, ": the snapshot has its region at ", start, " for ", size,
        " bytes; its file now makes ", backing_.size(), " bytes at ", guest_addr_));
  }
  ArmTimer(timer_.get(), 1);
  return absl::OkStatus();
}

void PmemDevice::ProcessQueue(size_t index) {
  if (mem_ == nullptr || index != 0) return;
  counters_pmem_.queue_event_count++;
  Serve();
}

void PmemDevice::ProcessTimer() {
  counters_pmem_.rate_limiter_event_count++;
  armed_until_ns_ = 0;
  if (mem_ != nullptr) Serve();
}

void PmemDevice::UpdateRateLimiter(const RateLimiterUpdate& update) {
  limiter_.Update(update, MonotonicNs());
  // A request the old limits held back may go now.
  ArmTimer(timer_.get(), 1);
}

std::optional<uint64_t> PmemDevice::StatusAddress(const DescriptorChain& chain) {
  // A 4-byte request the device reads, then a 4-byte status it writes
  // (5.19.6); anything else is the driver's error.
  if (chain.descriptors.size() != 2 || chain.descriptors[0].device_writable ||
      chain.descriptors[0].len != 4 || !chain.descriptors[1].device_writable ||
      chain.descriptors[1].len != 4) {
    return std::nullopt;
  }
  absl::StatusOr<uint32_t> type = mem_->ReadObj<uint32_t>(chain.descriptors[0].addr);
  if (!type.ok() || *type != kRequestFlush) return std::nullopt;
  return chain.descriptors[1].addr;
}

bool PmemDevice::Admit() {
  uint64_t now = MonotonicNs();
  // A flush writes back the whole file: that many bytes, one operation.
  if (limiter_.Consume(1, backing_.file_size(), now)) return true;
  counters_pmem_.rate_limiter_throttled_events++;
  if (limiter_.blocked_until_ns() != armed_until_ns_) {
    armed_until_ns_ = limiter_.blocked_until_ns();
    ArmTimer(timer_.get(), limiter_.WaitNs(now));
  }
  return false;
}

void PmemDevice::Serve() {
  // The requests waiting now, then one flush that answers them all: a
  // request that came after the msync began waits for the next one.
  std::vector<DescriptorChain> chains;
  bool admitted = !limiter_.enabled();
  while (chains.size() < kQueueSize) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = queue_->Pop(*mem_);
    if (!chain.ok() || !chain->has_value()) break;  // empty, or broken (the transport sees)
    if (!admitted) {
      if (!Admit()) {
        queue_->Undo();  // it waits in the ring for the limiter's timer
        break;
      }
      admitted = true;
    }
    chains.push_back(std::move(**chain));
  }
  if (chains.empty()) return;
  std::optional<uint32_t> flushed;
  for (const DescriptorChain& chain : chains) {
    std::optional<uint64_t> status = StatusAddress(chain);
    uint32_t written = 0;
    if (!status) {
      counters_pmem_.event_fails++;
      counters_.request_errors++;
      LOG_WARN_RATELIMITED("pmem %s: a malformed request, answered with nothing", id_.c_str());
    } else {
      if (!flushed) {
        absl::Status synced = backing_.Sync();
        if (!synced.ok()) {
          counters_pmem_.event_fails++;
          counters_.backend_errors++;
          LOG_WARN_RATELIMITED("pmem %s: %s", id_.c_str(), std::string(synced.message()).c_str());
        }
        flushed = synced.ok() ? kResponseOk : kResponseError;
      }
      if (mem_->WriteObj<uint32_t>(*status, *flushed).ok()) written = 4;
    }
    if (!queue_->AddUsed(*mem_, chain.head, written).ok()) break;
  }
  SignalUsed(*queue_, *mem_, interrupt_);
}

void PmemDevice::AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const {
  VirtioDevice::AppendMetrics(out);
  out->insert(out->end(),
              {{"cfg_fails", counters_pmem_.cfg_fails},
               {"event_fails", counters_pmem_.event_fails},
               {"queue_event_count", counters_pmem_.queue_event_count},
               {"rate_limiter_throttled_events", counters_pmem_.rate_limiter_throttled_events},
               {"rate_limiter_event_count", counters_pmem_.rate_limiter_event_count}});
}

}  // namespace ember::virtio::pmem
