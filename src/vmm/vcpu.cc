#include "src/vmm/vcpu.h"

#include <signal.h>
#include <time.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/clock.h"
#include "src/common/log.h"
#include "src/common/thread_stack.h"
#include "src/seccomp/seccomp.h"
#include "src/common/exit_code.h"

namespace ember {
namespace {

int KickSignal() { return SIGRTMIN; }

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

Vcpu::Vcpu(uint32_t index, VcpuFd fd, const Bus* pio, const Bus* mmio, VmExit* exit)
    : index_(index), fd_(std::move(fd)), pio_(pio), mmio_(mmio), exit_(exit) {}

Vcpu::~Vcpu() {
  Stop();
  Join();
}

void Vcpu::InstallKickHandler() {
  // No SA_RESTART: the signal's only job is to make KVM_RUN return EINTR.
  struct sigaction sa = {};
  sa.sa_handler = [](int) {};
  sigemptyset(&sa.sa_mask);
  sigaction(KickSignal(), &sa, nullptr);
}

void Vcpu::Spawn(bool start_soon) {
  held_ = true;
  start_soon_ = start_soon;
  started_ = true;
  thread_ = std::thread([this] { Loop(); });
}

void Vcpu::Start() {
  {
    std::lock_guard lock(pause_mu_);
    held_ = false;
  }
  pause_cv_.notify_all();
}

void Vcpu::Stop() {
  {
    std::lock_guard lock(pause_mu_);
    stop_ = true;
  }
  pause_cv_.notify_all();
  if (fd_.run() != nullptr) fd_.run()->immediate_exit = 1;
  if (started_ && thread_.joinable()) pthread_kill(thread_.native_handle(), KickSignal());
}

void Vcpu::Join() {
  if (thread_.joinable()) thread_.join();
}

void Vcpu::Pause() {
  {
    std::lock_guard lock(pause_mu_);
    pause_requested_ = true;
  }
  if (fd_.run() != nullptr) fd_.run()->immediate_exit = 1;
  if (started_ && thread_.joinable()) pthread_kill(thread_.native_handle(), KickSignal());
  std::unique_lock lock(pause_mu_);
  pause_cv_.wait(lock, [this] { return parked_ || ended_ || !started_; });
}

bool Vcpu::PauseRequested() { return pause_requested_.load(); }

void Vcpu::Resume() {
  {
    std::lock_guard lock(pause_mu_);
    pause_requested_ = false;
  }
  pause_cv_.notify_all();
}

bool Vcpu::WaitWhilePaused() {
  if (!pause_requested_.load() && !held_.load()) return !stop_;
  std::unique_lock lock(pause_mu_);
  if (!pause_requested_ && !held_) return !stop_;
  parked_ = true;
  pause_cv_.notify_all();
  pause_cv_.wait(lock, [this] { return (!pause_requested_ && !held_) || stop_; });
  parked_ = false;
  return !stop_;
}

void Vcpu::SpinWhileHeld() {
  uint64_t until = NowNs() + kStartSpinNs;
  while (held_.load(std::memory_order_acquire) && !stop_.load() && NowNs() < until) {
    __builtin_ia32_pause();
  }
}

void Vcpu::ReportFailure(const char* what) {
  absl::StatusOr<kvm_regs> regs = fd_.GetRegs();
  LOG_ERROR("vcpu %d stopped: %s (rip %#x)", index_, what, regs.ok() ? regs->rip : 0);
  metrics_.failures.fetch_add(1, std::memory_order_relaxed);
  exit_->Request(kExitGenericError);
}

void Vcpu::Loop() {
  SetThreadName(absl::StrCat("vcpu", index_));
  KeepStackInSmallPages();
  if (absl::Status st = seccomp::InstallThreadFilter("vcpu"); !st.ok()) {
    ReportFailure(std::string(st.message()).c_str());
    return;
  }
  bool first = true;
  if (start_soon_) SpinWhileHeld();
  while (WaitWhilePaused()) {
    if (first && index_ == 0) {
      LOG_INFO("first KVM_RUN at %.3f ms monotonic, %.3f ms process CPU",
               MonotonicMs(), ProcessCpuMs());
    }
    int err = fd_.Run();
    first = false;
    if (err == EINTR || err == EAGAIN) {
      fd_.run()->immediate_exit = 0;
      continue;
    }
    if (err != 0) {
      ReportFailure(absl::StrCat("KVM_RUN failed: ", std::strerror(err)).c_str());
      break;
    }
    if (!HandleExit()) break;
    if (PauseRequested()) {
      // Let KVM finish the instruction whose exit was just handled (an IN's
      // data reaches its register on the next KVM_RUN) before parking, so
      // that a paused vCPU's state is whole for a snapshot.
      fd_.run()->immediate_exit = 1;
      fd_.Run();
      fd_.run()->immediate_exit = 0;
    }
  }
  std::lock_guard lock(pause_mu_);
  ended_ = true;
  pause_cv_.notify_all();
}

bool Vcpu::HandleExit() {
  kvm_run* run = fd_.run();
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      uint64_t start = NowNs();
      bool in = run->io.direction == KVM_EXIT_IO_IN;
      auto* base = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      for (uint32_t i = 0; i < run->io.count; i++) {
        std::span<uint8_t> data(base + i * run->io.size, run->io.size);
        if (in) {
          // Ports nobody owns read as a floating bus.
          if (!pio_->Read(run->io.port, data)) std::fill(data.begin(), data.end(), 0xff);
        } else {
          pio_->Write(run->io.port, data);
        }
      }
      (in ? metrics_.exit_io_in : metrics_.exit_io_out).Record(NowNs() - start);
      return true;
    }
    case KVM_EXIT_MMIO: {
      uint64_t start = NowNs();
      std::span<uint8_t> data(run->mmio.data, std::min<uint32_t>(run->mmio.len, 8));
      if (run->mmio.is_write) {
        mmio_->Write(run->mmio.phys_addr, data);
      } else if (!mmio_->Read(run->mmio.phys_addr, data)) {
        std::fill(data.begin(), data.end(), 0xff);
      }
      (run->mmio.is_write ? metrics_.exit_mmio_write : metrics_.exit_mmio_read)
          .Record(NowNs() - start);
      return true;
    }
    case KVM_EXIT_HLT:
      LOG_INFO("vcpu %d halted; stopping the VM", index_);
      exit_->Request(kExitOk);
      return false;
    case KVM_EXIT_SHUTDOWN:
      // A triple fault: how x86 guests reset when nothing else works.
      LOG_INFO("vcpu %d: guest shutdown (triple fault); stopping the VM", index_);
      exit_->Request(kExitOk);
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      LOG_INFO("vcpu %d: guest system event %d; stopping the VM", index_, run->system_event.type);
      exit_->Request(kExitOk);
      return false;
    case KVM_EXIT_FAIL_ENTRY:
      ReportFailure(absl::StrCat("KVM_EXIT_FAIL_ENTRY, reason ",
                                 run->fail_entry.hardware_entry_failure_reason)
                        .c_str());
      return false;
    case KVM_EXIT_INTERNAL_ERROR:
      ReportFailure(absl::StrCat("KVM_EXIT_INTERNAL_ERROR, suberror ", run->internal.suberror,
                                 run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                                     ? " (instruction emulation failed)"
                                     : "")
                        .c_str());
      return false;
    default:
      ReportFailure(absl::StrCat("unexpected KVM exit ", run->exit_reason).c_str());
      return false;
  }
}

}  // namespace ember
