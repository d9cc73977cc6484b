#include "src/devices/virtio/block/block_device.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/common/open_no_wait.h"
#include "src/common/status_macros.h"

namespace ember::virtio::block {
namespace {

// What a request costs the bandwidth bucket: the bytes it moves.
uint64_t LimitedBytes(const Request& req) {
  return req.type == kRequestIn || req.type == kRequestOut ? req.data_len : 0;
}

// Opens a drive's backing file and returns it with its size in sectors.
absl::StatusOr<std::pair<UniqueFd, uint64_t>> OpenBacking(const DriveConfig& config,
                                                          const std::string& path) {
  std::string what = absl::StrCat("drive ", config.drive_id, ": ", path);
  UniqueFd fd = OpenNoWait(path, config.is_read_only ? O_RDONLY : O_RDWR);
  if (!fd.valid()) return ErrnoStatus(what);
  struct stat st;
  if (fstat(fd.get(), &st) < 0) return ErrnoStatus(what);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not a file or block device"));
  }
  off_t size = lseek(fd.get(), 0, SEEK_END);
  if (size < 0) return ErrnoStatus(what);
  if (size % kSectorSize) {
    LOG_WARN("%s: size %d is not a multiple of 512; the last %d bytes are not visible", what,
             size, size % kSectorSize);
  }
  return std::make_pair(std::move(fd), static_cast<uint64_t>(size) / kSectorSize);
}

}  // namespace

absl::Status BlockDevice::SwapBacking(const std::string& path) {
  absl::Status st = SwapFile(path);
  (st.ok() ? updates_ : update_fails_)++;
  return st;
}

absl::Status BlockDevice::SwapFile(const std::string& path) {
  ASSIGN_OR_RETURN(auto backing, OpenBacking(config_, path));
  Drain(/*complete=*/true);  // in-flight requests finish on the old file
  if (uring_) {
    // The ring's registered file; it keeps the old one for what is in flight.
    if (absl::Status st = uring_->SetFile(backing.first.get()); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("drive ", config_.drive_id, ": ", st.message()));
    }
  }
  file_ = std::move(backing.first);
  capacity_sectors_ = backing.second;
  config_.path_on_host = path;
  LOG_INFO("drive %s now serves %s (%d sectors)", config_.drive_id, path, capacity_sectors_);
  if (interrupt_ != nullptr) interrupt_->Trigger(kInterruptConfigChange);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BlockDevice>> BlockDevice::Create(const DriveConfig& config) {
  std::string what = absl::StrCat("drive ", config.drive_id, ": ", config.path_on_host);
  ASSIGN_OR_RETURN(auto backing, OpenBacking(config, config.path_on_host));
  UniqueFd fd = std::move(backing.first);
  const uint64_t size = backing.second * kSectorSize;
  std::unique_ptr<IoUring> uring;
  if (config.io_engine == IoEngine::kAsync) {
    absl::StatusOr<std::unique_ptr<IoUring>> u = IoUring::Create(kUringEntries, fd.get());
    if (!u.ok()) {
      return absl::Status(u.status().code(), absl::StrCat(what, ": ", u.status().message()));
    }
    uring = std::move(*u);
  }
  // Made now even without a limiter: PATCH may add one once seccomp is on.
  UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer.valid()) return ErrnoStatus(absl::StrCat(what, ": timerfd_create"));
  return std::unique_ptr<BlockDevice>(new BlockDevice(
      config, std::move(fd), size / kSectorSize, std::move(uring), std::move(timer)));
}

BlockDevice::BlockDevice(DriveConfig config, UniqueFd file, uint64_t capacity_sectors,
                         std::unique_ptr<IoUring> uring, UniqueFd timer)
    : config_(std::move(config)),
      file_(std::move(file)),
      capacity_sectors_(capacity_sectors),
      uring_(std::move(uring)),
      limiter_(config_.rate_limiter, MonotonicNs()),
      timer_(std::move(timer)) {
  if (uring_) {
    slots_.resize(uring_->entries());
    for (uint32_t i = slots_.size(); i > 0; i--) free_slots_.push_back(i - 1);
  }
}

BlockDevice::~BlockDevice() { Drain(/*complete=*/false); }

uint32_t BlockDevice::backend_events() const { return EPOLLIN | EPOLLET; }

uint64_t BlockDevice::features() const {
  uint64_t f = kFeatureVersion1 | kFeatureEventIdx | kFeatureIndirectDesc;
  if (config_.is_read_only) f |= kFeatureReadOnly;
  // Offering flush tells the guest the cache is volatile: only Writeback
  // promises that a flush reaches the disk.
  if (config_.cache_type == CacheType::kWriteback) f |= kFeatureFlush;
  return f;
}

void BlockDevice::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  // Only `capacity` (a little-endian u64 at 0) is meaningful.
  uint8_t config[8];
  std::memcpy(config, &capacity_sectors_, sizeof(config));
  for (size_t i = 0; i < data.size(); i++) {
    data[i] = offset + i < sizeof(config) ? config[offset + i] : 0;
  }
}

absl::Status BlockDevice::Activate(const GuestMemory& mem, std::span<Queue> queues,
                                   Interrupt* interrupt, uint64_t) {
  if (queues.size() != 1 || !queues[0].ready()) {
    return absl::InvalidArgumentError("virtio-blk needs its request queue ready");
  }
  mem_ = &mem;
  queue_ = &queues[0];
  interrupt_ = interrupt;
  return absl::OkStatus();
}

void BlockDevice::Reset() {
  Drain(/*complete=*/false);
  ArmTimer(timer_.get(), 0);
  armed_until_ns_ = 0;
  stalled_ = false;
  mem_ = nullptr;
  queue_ = nullptr;
  interrupt_ = nullptr;
}

bool BlockDevice::Iovecs(const Request& req, std::vector<iovec>* iov) const {
  iov->clear();
  iov->reserve(req.data.size());
  for (const Descriptor& b : req.data) {
    // ParseRequest and the queue checked every buffer; Slice cannot fail.
    absl::StatusOr<std::span<uint8_t>> s = mem_->Slice(b.addr, b.len);
    if (!s.ok()) return false;
    iov->push_back({s->data(), s->size()});
  }
  return true;
}

uint8_t BlockDevice::Transfer(const Request& req) {
  std::vector<iovec>& iov = sync_iov_;
  if (!Iovecs(req, &iov)) return kStatusIoError;
  off_t offset = static_cast<off_t>(req.sector * kSectorSize);
  uint64_t done = 0;
  size_t first = 0;
  while (done < req.data_len) {
    ssize_t n = req.type == kRequestIn
                    ? preadv(file_.get(), iov.data() + first, iov.size() - first, offset + done)
                    : pwritev(file_.get(), iov.data() + first, iov.size() - first, offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // n == 0: the file shrank under the guest.
      int err = n < 0 ? errno : EIO;
      if (LogRateLimited(++counters_.backend_errors)) {
        LOG_WARN("drive %s: %s at sector %d failed: %s", config_.drive_id,
                 req.type == kRequestIn ? "read" : "write", req.sector, std::strerror(err));
      }
      return kStatusIoError;
    }
    done += n;
    // Step past the iovecs this call finished, trimming a partial one.
    while (n > 0 && first < iov.size()) {
      size_t take = std::min<size_t>(n, iov[first].iov_len);
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + take;
      iov[first].iov_len -= take;
      n -= take;
      if (iov[first].iov_len == 0) first++;
    }
  }
  return kStatusOk;
}

uint8_t BlockDevice::Execute(const Request& req, uint32_t* written) {
  *written = 0;
  switch (req.type) {
    case kRequestIn: {
      uint64_t start = MonotonicNs();
      uint8_t status = Transfer(req);
      read_agg_.Record(MonotonicNs() - start);
      if (status == kStatusOk) *written = static_cast<uint32_t>(req.data_len);
      return status;
    }
    case kRequestOut: {
      if (config_.is_read_only) {
        counters_.request_errors++;
        return kStatusIoError;
      }
      uint64_t start = MonotonicNs();
      uint8_t status = Transfer(req);
      write_agg_.Record(MonotonicNs() - start);
      return status;
    }
    case kRequestFlush:
      if (config_.cache_type == CacheType::kWriteback && fdatasync(file_.get()) < 0) {
        counters_.backend_errors++;
        return kStatusIoError;
      }
      return kStatusOk;
    case kRequestGetId: {
      uint8_t id[kIdBytes] = {};
      std::memcpy(id, config_.drive_id.data(), std::min<size_t>(kIdBytes, config_.drive_id.size()));
      if (!mem_->Write(req.data.front().addr, id).ok()) return kStatusIoError;
      *written = kIdBytes;
      return kStatusOk;
    }
    default:
      return kStatusUnsupported;
  }
}

void BlockDevice::Complete(uint16_t head, std::optional<uint64_t> status_addr, uint8_t status,
                           uint32_t written) {
  uint32_t used_len = 0;
  if (status_addr && mem_->WriteObj(*status_addr, status).ok()) used_len = written + 1;
  (void)queue_->AddUsed(*mem_, head, used_len);
}

bool BlockDevice::Submit(const Request& req, uint16_t head) {
  if (free_slots_.empty()) return false;
  uint32_t slot = free_slots_.back();
  InFlight& f = slots_[slot];
  f = InFlight{head, *req.status_addr, req.data_len, 0, {}};
  if (req.type != kRequestFlush && !Iovecs(req, &f.iov)) return false;
  io_uring_sqe* sqe = io_uring_get_sqe(uring_->ring());
  if (sqe == nullptr) return false;
  off_t offset = static_cast<off_t>(req.sector * kSectorSize);
  const int file = IoUring::kFileIndex;  // the ring's registered file_
  if (req.type == kRequestFlush) {
    io_uring_prep_fsync(sqe, file, IORING_FSYNC_DATASYNC);
  } else if (req.type == kRequestIn) {
    f.written = static_cast<uint32_t>(req.data_len);
    f.latency = &read_agg_;
    io_uring_prep_readv(sqe, file, f.iov.data(), f.iov.size(), offset);
  } else {
    f.latency = &write_agg_;
    io_uring_prep_writev(sqe, file, f.iov.data(), f.iov.size(), offset);
  }
  if (f.latency != nullptr) f.start_ns = MonotonicNs();
  IoUring::UseFixedFile(sqe);
  io_uring_sqe_set_data64(sqe, slot);
  free_slots_.pop_back();
  return true;
}

void BlockDevice::ProcessQueue(size_t) {
  if (queue_ == nullptr) return;
  bool submitted = false;
  stalled_ = false;
  for (;;) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = queue_->Pop(*mem_);
    if (!chain.ok() || !chain->has_value()) break;  // a broken queue is the transport's
    Request req = ParseRequest(*mem_, **chain, capacity_sectors_);
    if (!req.error.ok()) {
      if (LogRateLimited(++counters_.request_errors)) {
        LOG_WARN("drive %s: bad request from the guest: %s", config_.drive_id,
                 req.error.message());
      }
      Complete((*chain)->head, req.status_addr, kStatusIoError, 0);
      continue;
    }
    if (limiter_.enabled() && !Admit(req)) {
      queue_->Undo();  // it waits in the ring for the limiter's timer
      break;
    }
    CountRequest(req);
    bool disk_io = req.type == kRequestIn ||
                   (req.type == kRequestOut && !config_.is_read_only) ||
                   (req.type == kRequestFlush && config_.cache_type == CacheType::kWriteback);
    if (uring_ && disk_io) {
      if (!Submit(req, (*chain)->head)) {
        queue_->Undo();  // the ring is full: retry when completions free it
        if (limiter_.enabled()) limiter_.GiveBack(1, LimitedBytes(req));
        stalled_ = true;
        break;
      }
      submitted = true;
      continue;
    }
    uint32_t written = 0;
    uint8_t status = Execute(req, &written);
    Complete((*chain)->head, req.status_addr, status, written);
  }
  if (submitted) io_uring_submit(uring_->ring());
  SignalUsed(*queue_, *mem_, interrupt_);
}

bool BlockDevice::Admit(const Request& req) {
  uint64_t now = MonotonicNs();
  if (limiter_.Consume(1, LimitedBytes(req), now)) return true;
  throttled_++;
  // Once per wait, not once per kick while it lasts.
  if (limiter_.blocked_until_ns() != armed_until_ns_) {
    armed_until_ns_ = limiter_.blocked_until_ns();
    ArmTimer(timer_.get(), limiter_.WaitNs(now));
  }
  return false;
}

void BlockDevice::ProcessTimer() {
  limiter_events_++;
  armed_until_ns_ = 0;
  if (queue_ != nullptr) ProcessQueue(0);
}

void BlockDevice::UpdateRateLimiter(const RateLimiterUpdate& update) {
  limiter_.Update(update, MonotonicNs());
  config_.rate_limiter = ApplyUpdate(config_.rate_limiter, update);
  // A request held back may go now: the loop comes back to the queue.
  armed_until_ns_ = 0;
  ArmTimer(timer_.get(), 1);
}

std::vector<uint8_t> BlockDevice::SaveDeviceState() const { return SaveLimiters({&limiter_}); }

absl::Status BlockDevice::RestoreDeviceState(std::span<const uint8_t> state) {
  RETURN_IF_ERROR(RestoreLimiters(state, {&limiter_}, "virtio-blk"));
  ArmTimer(timer_.get(), 1);
  return absl::OkStatus();
}

void BlockDevice::AppendMetrics(MetricValues* out) const {
  VirtioDevice::AppendMetrics(out);
  out->insert(out->end(), {{"read_count", reads_},
                           {"write_count", writes_},
                           {"flush_count", flushes_},
                           {"read_bytes", read_bytes_},
                           {"write_bytes", write_bytes_},
                           {"queue_event_count", counters_.queue_events[0]},
                           {"invalid_reqs_count", counters_.request_errors},
                           {"execute_fails", counters_.backend_errors},
                           {"update_count", updates_},
                           {"update_fails", update_fails_},
                           {"rate_limiter_throttled_events", throttled_},
                           {"rate_limiter_event_count", limiter_events_}});
  read_agg_.AppendSum("read_agg", out);
  write_agg_.AppendSum("write_agg", out);
}

void BlockDevice::AppendLevels(MetricValues* out) const {
  read_agg_.AppendMinMax("read_agg", out);
  write_agg_.AppendMinMax("write_agg", out);
}

void BlockDevice::CountRequest(const Request& req) {
  if (req.type == kRequestIn) {
    reads_++;
    read_bytes_ += req.data_len;
  } else if (req.type == kRequestOut) {
    writes_++;
    write_bytes_ += req.data_len;
  } else if (req.type == kRequestFlush) {
    flushes_++;
  }
}

void BlockDevice::Reap() {
  io_uring_cqe* cqe;
  while (io_uring_peek_cqe(uring_->ring(), &cqe) == 0) {
    uint32_t slot = static_cast<uint32_t>(io_uring_cqe_get_data64(cqe));
    int res = cqe->res;
    io_uring_cqe_seen(uring_->ring(), cqe);
    if (slot >= slots_.size()) continue;
    InFlight& f = slots_[slot];
    free_slots_.push_back(slot);
    if (f.latency != nullptr) f.latency->Record(MonotonicNs() - f.start_ns);
    if (f.dropped || mem_ == nullptr) continue;  // submitted before a reset
    // A short transfer is an error too: the file shrank, or the disk is full.
    bool ok = res >= 0 && static_cast<uint64_t>(res) == (f.iov.empty() ? 0 : f.expected);
    if (!ok && LogRateLimited(++counters_.backend_errors)) {
      LOG_WARN("drive %s: async I/O failed: %s", config_.drive_id,
               res < 0 ? std::strerror(-res) : "short transfer");
    }
    Complete(f.head, f.status_addr, ok ? kStatusOk : kStatusIoError, ok ? f.written : 0);
  }
}

void BlockDevice::ConsumeEventFd() {
  uint64_t count;
  (void)!read(uring_->event_fd(), &count, sizeof(count));
}

void BlockDevice::ProcessBackend(uint32_t) {
  ConsumeEventFd();  // before reaping: a completion after it fires again
  Reap();
  if (queue_ == nullptr) return;
  SignalUsed(*queue_, *mem_, interrupt_);
  if (stalled_) ProcessQueue(0);  // completions made room in the ring
}

void BlockDevice::Drain(bool complete) {
  if (!uring_) return;
  if (!complete) {
    // Whenever they finish, these no longer belong to a queue.
    for (InFlight& f : slots_) f.dropped = true;
  }
  const auto deadline = std::chrono::steady_clock::now() + kDrainTimeout;
  while (free_slots_.size() < slots_.size()) {
    // Retries after a signal: a vCPU kick must not cut the wait short.
    if (absl::Status st = uring_->WaitCompletion(deadline); !st.ok()) {
      LOG_WARN_RATELIMITED("drive %s: %d requests still in flight after %d s (%s); %s",
                           config_.drive_id, slots_.size() - free_slots_.size(),
                           kDrainTimeout.count(), st.message(),
                           complete ? "they complete later" : "they are dropped when they finish");
      break;
    }
    Reap();
  }
  // After a reset nothing is left for the VMM loop (the next Activate
  // starts afresh); otherwise the loop still runs a stalled queue.
  if (!complete) ConsumeEventFd();
  if (complete && queue_ != nullptr) SignalUsed(*queue_, *mem_, interrupt_);
}

}  // namespace ember::virtio::block
