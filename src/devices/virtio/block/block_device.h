// virtio-blk on a raw file, with the synchronous engine: requests run on
// the VMM thread with preadv/pwritev straight into guest buffers.
// Backend errors (EIO, ENOSPC, ...) reach the guest as I/O errors and are
// counted; the VMM runs on.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/devices/virtio/virtio_device.h"
#include "src/vmm/vm_config.h"

namespace ember::virtio::block {

inline constexpr uint32_t kDeviceTypeBlock = 2;
inline constexpr uint64_t kFeatureReadOnly = 1ull << 5;
inline constexpr uint64_t kFeatureFlush = 1ull << 9;
inline constexpr uint16_t kQueueSize = 256;

class BlockDevice : public VirtioDevice {
 public:
  // Opens the backing file (read-only when the drive is) and sizes the disk.
  static absl::StatusOr<std::unique_ptr<BlockDevice>> Create(const DriveConfig& config);

  uint32_t device_type() const override { return kDeviceTypeBlock; }
  uint64_t features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t, std::span<const uint8_t>) override {}
  absl::Status Activate(const GuestMemory& mem, std::span<Queue> queues, Interrupt* interrupt,
                        uint64_t features) override;
  void ProcessQueue(size_t index) override;
  void Reset() override;

  uint64_t capacity_sectors() const { return capacity_sectors_; }
  const DriveConfig& config() const { return config_; }

 private:
  BlockDevice(DriveConfig config, UniqueFd file, uint64_t capacity_sectors)
      : config_(std::move(config)), file_(std::move(file)), capacity_sectors_(capacity_sectors) {}
  // Runs one parsed request; returns the status byte and bytes written to
  // the guest (for the used ring).
  uint8_t Execute(const struct Request& req, uint32_t* written);
  uint8_t Transfer(const struct Request& req);

  DriveConfig config_;
  UniqueFd file_;
  uint64_t capacity_sectors_;
  const GuestMemory* mem_ = nullptr;
  Queue* queue_ = nullptr;
  Interrupt* interrupt_ = nullptr;
};

}  // namespace ember::virtio::block
