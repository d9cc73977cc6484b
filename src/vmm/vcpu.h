// One vCPU thread: KVM_RUN in a loop, port and MMIO exits dispatched to the
// buses, and every way the guest can stop turned into a VmExit request.
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <thread>

#include "src/common/latency_metric.h"
#include "src/vstate/bus.h"
#include "src/vmm/kvm.h"
#include "src/vmm/vm_exit.h"

namespace ember {

// Firecracker's vcpu metrics for one vCPU: each kind of exit Ember serves
// (how many, and how long serving them took) and the failures that
// stopped it. Its thread writes; the VMM thread reads (Vm sums them).
struct VcpuMetrics {
  LatencyMetric exit_io_in, exit_io_out, exit_mmio_read, exit_mmio_write;
  std::atomic<uint64_t> failures{0};
};

class Vcpu {
 public:
  Vcpu(uint32_t index, VcpuFd fd, const Bus* pio, const Bus* mmio, VmExit* exit);
  ~Vcpu();

  // Installs the process-wide handler for the kick signal. Call once
  // before starting any vCPU.
  static void InstallKickHandler();

  // Creates the thread ahead of Start: it sets itself up (name, seccomp
  // filter) and waits before its first KVM_RUN, so that Start costs only a
  // wake-up. With `start_soon` (a restored VM's first vCPU, started
  // within a millisecond) it spins for the Start before it sleeps, which
  // saves the wake-up too.
  void Spawn(bool start_soon = false);
  void Start();
  // Makes KVM_RUN return and the thread end; safe from any thread.
  void Stop();
  void Join();
  // Takes the vCPU out of KVM_RUN and parks it; returns once it is parked
  // (or has ended). Resume lets it run again.
  void Pause();
  void Resume();

  const VcpuFd& fd() const { return fd_; }
  const VcpuMetrics& metrics() const { return metrics_; }

 private:
  void Loop();
  // Handles one exit; returns false when the vCPU should stop.
  bool HandleExit();
  void ReportFailure(const char* what);

  const uint32_t index_;
  VcpuFd fd_;
  const Bus* pio_;
  const Bus* mmio_;
  VmExit* exit_;
  VcpuMetrics metrics_;
  // Parks the thread while a pause is requested; false when it should end.
  bool WaitWhilePaused();
  void SpinWhileHeld();
  static constexpr uint64_t kStartSpinNs = 1'000'000;
  bool PauseRequested();

  std::atomic<bool> stop_{false};
  std::mutex pause_mu_;
  std::condition_variable pause_cv_;
  // Written under pause_mu_ (for the condition variable); read without it
  // on the exit path, once per exit.
  std::atomic<bool> pause_requested_{false};
  // Spawned and waiting for Start; written under pause_mu_.
  std::atomic<bool> held_{false};
  bool start_soon_ = false;
  bool parked_ = false;           // guarded by pause_mu_
  bool ended_ = false;            // guarded by pause_mu_
  std::atomic<bool> started_{false};
  std::thread thread_;
};

}  // namespace ember
