// virtio-mem (virtio 1.3, 5.15), Firecracker's memory hotplug: a region
// of guest physical memory past RAM that the guest plugs and unplugs in
// blocks, asked by the host through `requested_size`. The host backs only
// slots (KVM memory slots of slot_size) with a plugged block in them; an
// unplugged block's pages go back to the host.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "src/common/latency_metric.h"
#include "src/config/vm_config.h"
#include "src/devices/virtio/virtio_device.h"

namespace ember::virtio::mem {

inline constexpr uint32_t kDeviceTypeMem = 24;
inline constexpr uint16_t kQueueSize = 256;
// The driver never touches unplugged memory (Linux 5.16 and later on
// x86_64): the device may leave it unbacked, and requires the feature.
inline constexpr uint64_t kFeatureUnpluggedInaccessible = 1ull << 1;

// Requests and answers (5.15.6).
inline constexpr uint16_t kRequestPlug = 0;
inline constexpr uint16_t kRequestUnplug = 1;
inline constexpr uint16_t kRequestUnplugAll = 2;
inline constexpr uint16_t kRequestState = 3;
inline constexpr uint16_t kResponseAck = 0;
inline constexpr uint16_t kResponseNack = 1;
inline constexpr uint16_t kResponseBusy = 2;  // the host failed: try again later
inline constexpr uint16_t kResponseError = 3;
inline constexpr uint16_t kStatePlugged = 0;
inline constexpr uint16_t kStateUnplugged = 1;
inline constexpr uint16_t kStateMixed = 2;
inline constexpr uint32_t kRequestBytes = 24;   // type, padding, addr, nb_blocks, padding
inline constexpr uint32_t kResponseBytes = 10;  // type, padding, state

// Gives KVM slot `index` of the region (plug) or takes it away, and opens
// or closes it to the VMM (GuestMemory::SetHotplugSlot) in the right order.
using SlotHook = std::function<absl::Status(size_t index, bool plug)>;

// Firecracker's memory_hotplug metrics (its devices/virtio/mem/metrics.rs).
// (activate_fails is the transport's, among every device's counters.)
struct MemCounters {
  uint64_t queue_event_fails = 0;
  uint64_t queue_event_count = 0;
  uint64_t plug_count = 0, plug_bytes = 0, plug_fails = 0;
  uint64_t unplug_count = 0, unplug_bytes = 0, unplug_fails = 0, unplug_discard_fails = 0;
  uint64_t unplug_all_count = 0, unplug_all_fails = 0;
  uint64_t state_count = 0, state_fails = 0;
};

struct MemStatus {
  uint64_t total_size = 0, slot_size = 0, block_size = 0;
  uint64_t plugged_size = 0, requested_size = 0;
};

class MemDevice : public VirtioDevice {
 public:
  // The region `guest_addr` + config.total_size_mib MiB must be guest
  // memory's hotplug region, all of it unplugged.
  static absl::StatusOr<std::unique_ptr<MemDevice>> Create(const MemoryHotplugConfig& config,
                                                           uint64_t guest_addr, SlotHook hook);

  static constexpr uint32_t kType = kDeviceTypeMem;
  static constexpr char kKind[] = "memory hotplug device";

  uint32_t device_type() const override { return kDeviceTypeMem; }
  uint64_t features() const override {
    return kFeatureVersion1 | kFeatureEventIdx | kFeatureUnpluggedInaccessible;
  }
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  // virtio_mem_config: block_size, node_id, addr, region_size,
  // usable_region_size, plugged_size, requested_size (all le). Read-only.
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t, std::span<const uint8_t>) override;
  // No system calls: these run on vCPU threads (see the vcpu filter).
  absl::Status Activate(const GuestMemory& mem, std::span<Queue> queues, Interrupt* interrupt,
                        uint64_t features) override;
  void Reset() override;
  void ProcessQueue(size_t index) override;
  // The region, the sizes and which blocks are plugged; a restore checks
  // the region is the configuration's and opens the plugged slots again.
  std::vector<uint8_t> SaveDeviceState() const override;
  absl::Status RestoreDeviceState(std::span<const uint8_t> state) override;

  // PATCH /hotplug/memory: a multiple of the block size, at most the
  // region. The driver hears of it through a configuration interrupt, or
  // reads it when it starts.
  absl::Status SetRequestedSize(uint64_t bytes);
  MemStatus status() const;

  std::string metrics_name() const override { return "memory_hotplug"; }
  void AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const override;
  void AppendLevels(std::vector<std::pair<std::string, uint64_t>>* out) const override;

 private:
  MemDevice(const MemoryHotplugConfig& config, uint64_t guest_addr, SlotHook hook);

  struct Range {
    uint64_t first_block = 0;
    uint64_t blocks = 0;
  };
  // The answer (type, state) to one request.
  std::pair<uint16_t, uint16_t> Handle(uint16_t type, uint64_t addr, uint16_t nb_blocks);
  // The blocks of [addr, +nb_blocks) if they lie in the usable region.
  std::optional<Range> UsableRange(uint64_t addr, uint16_t nb_blocks) const;
  uint64_t PluggedIn(const Range& r) const;
  void Mark(uint64_t block, bool plug);
  // Marks the blocks, gives back an unplugged block's pages, and brings
  // the KVM slots they touch in line.
  bool Update(const Range& r, bool plug);
  bool SyncSlots(const Range& r);

  uint64_t addr_, region_size_, block_size_, slot_size_;
  uint64_t usable_size_ = 0, plugged_size_ = 0, requested_size_ = 0;
  std::vector<bool> plugged_;       // by block
  std::vector<uint32_t> slot_blocks_;  // by slot: its plugged blocks
  std::vector<bool> slot_plugged_;     // by slot: whether KVM has it
  SlotHook hook_;
  const GuestMemory* mem_ = nullptr;
  Queue* queue_ = nullptr;
  Interrupt* interrupt_ = nullptr;
  MemCounters counters_mem_;
  LatencyMetric plug_agg_, unplug_agg_, unplug_all_agg_, state_agg_;
};

}  // namespace ember::virtio::mem
