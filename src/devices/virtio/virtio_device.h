// src/devices holds the device models: legacy/ (8250 serial, i8042, boot
// timer) and virtio/ (virtqueue, MMIO transport, one folder per device).
// They see guest memory and buses (src/vstate), their typed configuration
// (src/config) and src/common; never KVM, the VM or the API.
//
// What a virtio device implements; the MMIO transport (mmio_transport.h)
// does the rest. Register accesses arrive on vCPU threads, queue work on
// the VMM thread; the transport serializes both, so a device needs no
// locking of its own.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "src/common/metric_values.h"
#include "src/devices/virtio/queue.h"
#include "src/vstate/guest_memory.h"

namespace ember::virtio {

// Feature bits shared by all devices (virtio 1.x, section 6).
inline constexpr uint64_t kFeatureIndirectDesc = 1ull << 28;
inline constexpr uint64_t kFeatureEventIdx = 1ull << 29;
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;

// Interrupt status bits (4.2.2).
inline constexpr uint32_t kInterruptUsedBuffer = 1;
inline constexpr uint32_t kInterruptConfigChange = 2;

// Raises the device's interrupt with a status bit.
class Interrupt {
 public:
  virtual ~Interrupt() = default;
  virtual void Trigger(uint32_t status_bit) = 0;
};

// Raises the used-buffer interrupt if the driver wants to hear about the
// buffers added to `q` since the last call (EVENT_IDX or NO_INTERRUPT).
inline void SignalUsed(Queue& q, const GuestMemory& mem, Interrupt* interrupt) {
  absl::StatusOr<bool> notify = q.NeedsInterrupt(mem);
  if (notify.ok() && *notify) interrupt->Trigger(kInterruptUsedBuffer);
}

// Device counters; guest-caused errors are counted, never fatal. The
// transport counts activations that failed and the driver's notifications.
struct DeviceCounters {
  static constexpr size_t kMaxQueues = 5;  // the most a device has (the balloon)
  uint64_t queue_errors = 0;    // broken queues (DEVICE_NEEDS_RESET)
  uint64_t request_errors = 0;  // malformed requests answered with an error
  uint64_t backend_errors = 0;  // host I/O failures passed to the guest
  uint64_t activate_fails = 0;  // DRIVER_OK that the device refused
  uint64_t queue_events[kMaxQueues] = {};  // notifications, by queue
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  virtual uint32_t device_type() const = 0;
  // Which one of its kind it is (drive_id, iface_id), fixed when it is
  // made; "" for a device a VM has one of.
  virtual std::string id() const { return ""; }
  // Offered features, VIRTIO_F_VERSION_1 included.
  virtual uint64_t features() const = 0;
  virtual std::vector<uint16_t> queue_max_sizes() const = 0;
  // Device-specific configuration space; out-of-range bytes read as zero
  // and writes to them are dropped.
  virtual void ReadConfig(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void WriteConfig(uint64_t offset, std::span<const uint8_t> data) = 0;

  // DRIVER_OK: from now on the device serves `queues` (validated, ready)
  // in `mem`, interrupting through `interrupt`, with `features` accepted.
  virtual absl::Status Activate(const GuestMemory& mem, std::span<Queue> queues,
                                Interrupt* interrupt, uint64_t features) = 0;
  // The driver notified queue `index` (only after Activate). A broken queue
  // is reported through the queue's own state.
  virtual void ProcessQueue(size_t index) = 0;
  // The driver reset the device: forget the queues and memory.
  virtual void Reset() = 0;

  // Snapshots: finish what is in flight (the VM is paused), then the
  // device's own state beyond its queues, and back: after Activate if the
  // device was active, and also for one no driver has started.
  virtual void Quiesce() {}
  virtual std::vector<uint8_t> SaveDeviceState() const { return {}; }
  virtual absl::Status RestoreDeviceState(std::span<const uint8_t> /*state*/) {
    return absl::OkStatus();
  }

  // A host fd the VMM loop should watch for the device (a TAP, a timerfd,
  // an eventfd), or -1, with its epoll events. When it is ready the
  // transport calls exactly one of:
  //  - ProcessBackend, while the device is active and its queues sound;
  //  - DrainBackend otherwise: never activated, reset, or waiting for the
  //    driver to reset it (DEVICE_NEEDS_RESET). It must consume the
  //    readiness without touching the queues, so that a level-triggered fd
  //    does not wake the VMM loop again and again: a guest that breaks a
  //    queue or resets the device must not make the VMM thread spin.
  //    The default reads the 8-byte count of an eventfd or timerfd; a
  //    device whose fd is anything else overrides it.
  virtual int backend_fd() const { return -1; }
  virtual uint32_t backend_events() const { return 0; }
  virtual void ProcessBackend(uint32_t /*events*/) {}
  virtual void DrainBackend(uint32_t /*events*/) {
    uint64_t count;
    if (backend_fd() >= 0) (void)!::read(backend_fd(), &count, sizeof(count));
  }

  // A timerfd for the device's own wakeups (a rate limiter's refill, work
  // left for later), or -1; made with the device, since the VMM thread's
  // seccomp filter allows no timerfd_create. The VMM loop watches it for
  // EPOLLIN; when it expires the transport reads it (so it never stays
  // ready) and calls ProcessTimer while the device is active and its
  // queues sound. A device that is not active re-arms nothing.
  virtual int timer_fd() const { return -1; }
  virtual void ProcessTimer() {}

  DeviceCounters& counters() { return counters_; }

  // For metrics: the device's group ("block_rootfs", "net_eth0",
  // "balloon") and its counters as name/value pairs, Firecracker's names
  // where it has the counter (api/metrics_schema.cc): totals since the
  // device was made (the line reports their change) ...
  virtual std::string metrics_name() const = 0;
  virtual void AppendMetrics(std::vector<std::pair<std::string, uint64_t>>* out) const {
    out->emplace_back("activate_fails", counters_.activate_fails);
    out->emplace_back("queue_errors", counters_.queue_errors);
    out->emplace_back("request_errors", counters_.request_errors);
    out->emplace_back("backend_errors", counters_.backend_errors);
  }
  // ... and levels, reported as they are (a balloon's size, open streams).
  virtual void AppendLevels(std::vector<std::pair<std::string, uint64_t>>* /*out*/) const {}

 protected:
  DeviceCounters counters_;
};

}  // namespace ember::virtio
