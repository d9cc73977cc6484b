#include "src/devices/virtio/block/block_device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/errno_status.h"
#include "src/common/log.h"
#include "src/devices/virtio/block/request.h"

namespace ember::virtio::block {
namespace {

// Log the first few guest or backend errors, then only every 1024th.
bool ShouldLog(uint64_t count) { return count <= 8 || count % 1024 == 0; }

}  // namespace

absl::StatusOr<std::unique_ptr<BlockDevice>> BlockDevice::Create(const DriveConfig& config) {
  std::string what = absl::StrCat("drive ", config.drive_id, ": ", config.path_on_host);
  UniqueFd fd(open(config.path_on_host.c_str(),
                   (config.is_read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
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
  return std::unique_ptr<BlockDevice>(new BlockDevice(config, std::move(fd), size / kSectorSize));
}

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
  mem_ = nullptr;
  queue_ = nullptr;
  interrupt_ = nullptr;
}

uint8_t BlockDevice::Transfer(const Request& req) {
  std::vector<iovec> iov;
  iov.reserve(req.data.size());
  for (const Descriptor& b : req.data) {
    // ParseRequest and the queue checked every buffer; Slice cannot fail.
    absl::StatusOr<std::span<uint8_t>> s = mem_->Slice(b.addr, b.len);
    if (!s.ok()) return kStatusIoError;
    iov.push_back({s->data(), s->size()});
  }
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
      if (ShouldLog(++counters_.backend_errors)) {
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
      uint8_t status = Transfer(req);
      if (status == kStatusOk) *written = static_cast<uint32_t>(req.data_len);
      return status;
    }
    case kRequestOut:
      if (config_.is_read_only) {
        counters_.request_errors++;
        return kStatusIoError;
      }
      return Transfer(req);
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

void BlockDevice::ProcessQueue(size_t) {
  if (queue_ == nullptr) return;
  for (;;) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = queue_->Pop(*mem_);
    if (!chain.ok() || !chain->has_value()) break;  // a broken queue is the transport's
    Request req = ParseRequest(*mem_, **chain, capacity_sectors_);
    uint8_t status;
    uint32_t written = 0;
    if (!req.error.ok()) {
      if (ShouldLog(++counters_.request_errors)) {
        LOG_WARN("drive %s: bad request from the guest: %s", config_.drive_id,
                 req.error.message());
      }
      status = kStatusIoError;
    } else {
      status = Execute(req, &written);
    }
    uint32_t used_len = 0;
    if (req.status_addr && mem_->WriteObj(*req.status_addr, status).ok()) used_len = written + 1;
    if (!queue_->AddUsed(*mem_, (*chain)->head, used_len).ok()) break;
  }
  absl::StatusOr<bool> notify = queue_->NeedsInterrupt(*mem_);
  if (notify.ok() && *notify) interrupt_->Trigger(kInterruptUsedBuffer);
}

}  // namespace ember::virtio::block
