// The device fuzzers' ops (mmio, block, net, balloon, vsock, mem, rng, pmem,
// i8042, serial) run as Ember runs them: each on a thread under the seccomp
// filter of the thread that does that work in Ember, so that a device
// path calling what its filter denies fails here, without KVM, as it would
// kill the VMM. Queue work, backends and snapshots run on a thread under
// the "vmm" filter; register accesses (Ember's MMIO and port exits, which
// a device's activation follows) are handed to a second thread under the
// "vcpu" filter (OnVcpu). Both filters are resources/seccomp/x86_64.json's,
// plus the little a thread's own start and end need under the sanitizers
// (kRuntimeRules). Each input gets new threads (filters cannot be
// removed), while the fuzzer's own work (corpus, logs, the harness's log
// counting) stays on its unfiltered main thread, and so does what the
// harness does in the place of the world outside Ember (Outside). A
// denied call fails with EPERM there, and once the ops end the main
// thread prints it, with the thread and the stack it came from, and
// aborts: libFuzzer keeps the input. EMBER_FUZZ_NO_FILTER=1 runs without.
#pragma once

#include <execinfo.h>
#include <sanitizer/common_interface_defs.h>
#include <signal.h>
#include <ucontext.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/seccomp.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <iterator>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "src/seccomp/compiler.h"
#include "src/seccomp/seccomp.h"

namespace ember::fuzz {

// The sanitizers' and glibc's own calls on a thread (ASan advises its
// allocator's per-thread regions MADV_NOHUGEPAGE and MADV_DONTDUMP, spins
// with sched_yield as a thread ends, and takes down the thread's
// alternate signal stack); none is a device's. (UBSan's vptr check, which
// probes memory through a pipe it opens and closes, is off in fuzz
// builds: allowing close here would hide a device's close on a vCPU
// thread.) Policy rules, as in resources/seccomp/x86_64.json.
inline constexpr const char* kRuntimeRules[] = {
    R"({"syscall": "sched_yield"})",
    R"({"syscall": "madvise", "args": [{"index": 2, "type": "dword", "op": "eq",
                                        "val": "MADV_NOHUGEPAGE"}]})",
    R"({"syscall": "madvise", "args": [{"index": 2, "type": "dword", "op": "eq",
                                        "val": "MADV_DONTDUMP"}]})",
    R"({"syscall": "sigaltstack"})",
    R"({"syscall": "exit"})",
};

// The first call the filter denied on the device thread: recorded by the
// SIGSYS handler (the call fails with EPERM and the thread goes on), then
// reported, with where it came from, by the main thread, whose crash
// libFuzzer can save (the device thread could not write the input).
// Which of Ember's threads a filtered thread stands for.
enum class ThreadKind { kNone, kVmm, kVcpu };
inline thread_local ThreadKind t_kind = ThreadKind::kNone;

inline const char* ThreadKindName(ThreadKind k) {
  return k == ThreadKind::kVcpu ? "vcpu" : "vmm";
}

struct Denial {
  std::atomic<bool> seen{false};
  ThreadKind kind = ThreadKind::kNone;
  long nr = 0;
  unsigned long long args[3] = {};
  void* frames[32] = {};
  int depth = 0;
};
inline Denial g_denial;

inline void OnDeniedCall(int, siginfo_t* info, void* context) {
  greg_t* regs = static_cast<ucontext_t*>(context)->uc_mcontext.gregs;
  if (!g_denial.seen.exchange(true)) {
    // Said at once too, in case what the EPERM leads to (a hang, a trap)
    // ends the run before the main thread can report it.
    static const char kLine[] = "fuzz: a device thread's seccomp filter denied a call\n";
    (void)!write(STDERR_FILENO, kLine, sizeof(kLine) - 1);
    g_denial.kind = t_kind;
    g_denial.nr = info->si_syscall;
    g_denial.args[0] = static_cast<unsigned long long>(regs[REG_RDI]);
    g_denial.args[1] = static_cast<unsigned long long>(regs[REG_RSI]);
    g_denial.args[2] = static_cast<unsigned long long>(regs[REG_RDX]);
    g_denial.depth = backtrace(g_denial.frames, 32);
  }
  regs[REG_RAX] = -EPERM;
}

[[noreturn]] inline void ReportDenial() {
  const char* name = seccomp::SyscallName(g_denial.nr);
  std::fprintf(stderr,
               "fuzz: the %s thread's seccomp filter denied %s (%ld) with arguments %#llx, "
               "%#llx, %#llx: a path Ember's filters would kill the VMM on. From:\n",
               ThreadKindName(g_denial.kind), name ? name : "?", g_denial.nr, g_denial.args[0],
               g_denial.args[1], g_denial.args[2]);
  for (int i = 0; i < g_denial.depth; i++) {
    char where[512];
    __sanitizer_symbolize_pc(g_denial.frames[i], "%p %F %L", where, sizeof(where));
    std::fprintf(stderr, "  #%d %s\n", i, where);
  }
  std::abort();
}

// The "vmm" and "vcpu" filters (with kRuntimeRules), compiled once from
// the policy file.
inline const seccomp::FilterMap& ThreadFilters() {
  static const seccomp::FilterMap* filters = [] {
    std::ifstream in(std::string(EMBER_SOURCE_DIR) + "/resources/seccomp/x86_64.json");
    std::stringstream text;
    text << in.rdbuf();
    rapidjson::Document policy;
    policy.Parse(text.str().c_str());
    if (policy.HasParseError() || !policy.HasMember("vmm") || !policy.HasMember("vcpu")) {
      std::fputs("fuzz: cannot read resources/seccomp/x86_64.json\n", stderr);
      std::abort();
    }
    rapidjson::Document doc(rapidjson::kObjectType);
    auto& a = doc.GetAllocator();
    rapidjson::Document extra[std::size(kRuntimeRules)];
    for (size_t i = 0; i < std::size(kRuntimeRules); i++) extra[i].Parse(kRuntimeRules[i]);
    for (const char* kind : {"vmm", "vcpu"}) {
      rapidjson::Value rules(rapidjson::kArrayType);
      for (auto& rule : policy[kind]["filter"].GetArray()) rules.PushBack(rule, a);
      for (rapidjson::Document& e : extra) {
        rapidjson::Value rule(e, a);
        rule.AddMember("comment", "the sanitizers' and glibc's own", a);
        rules.PushBack(rule, a);
      }
      rapidjson::Value thread(rapidjson::kObjectType);
      thread.AddMember("default_action", "trap", a);
      thread.AddMember("filter_action", "allow", a);
      thread.AddMember("filter", rules, a);
      doc.AddMember(rapidjson::StringRef(kind), thread, a);
    }
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    doc.Accept(w);
    absl::StatusOr<seccomp::FilterMap> compiled = seccomp::CompilePolicy(buf.GetString());
    if (!compiled.ok()) {
      std::fprintf(stderr, "fuzz: %s\n", std::string(compiled.status().message()).c_str());
      std::abort();
    }
    void* warm[1];
    backtrace(warm, 1);  // loads what backtrace needs before any filter is on
    char where[64];      // and starts the symbolizer, which a filter would stop
    __sanitizer_symbolize_pc(warm[0], "%p", where, sizeof(where));
    struct sigaction sa = {};
    sa.sa_sigaction = OnDeniedCall;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSYS, &sa, nullptr);
    return new seccomp::FilterMap(std::move(*compiled));
  }();
  return *filters;
}

// Puts the calling thread under `kind`'s filter, for good.
inline void EnterFilter(ThreadKind kind) {
  const seccomp::BpfProgram& program = ThreadFilters().at(ThreadKindName(kind));
  t_kind = kind;
  sock_fprog prog = {static_cast<unsigned short>(program.size()),
                     const_cast<sock_filter*>(program.data())};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
    std::perror("fuzz: installing a device thread's seccomp filter");
    std::abort();
  }
}

// A thread that runs, one at a time, jobs other threads hand it and wait
// for. Only one filtered thread runs at a time (the vmm thread waits while
// the vcpu thread works), so one slot is enough.
struct JobSlot {
  std::mutex mu;
  std::condition_variable cv;
  std::function<void()>* job = nullptr;
  bool done = false;

  void Hand(std::function<void()>& f) {
    std::unique_lock lock(mu);
    job = &f;
    cv.notify_all();
    cv.wait(lock, [this] { return job == nullptr; });
  }
  // Runs what is handed until Finish.
  void Serve() {
    std::unique_lock lock(mu);
    for (;;) {
      cv.wait(lock, [this] { return job != nullptr || done; });
      if (job == nullptr) break;
      (*job)();
      job = nullptr;
      cv.notify_all();
    }
  }
  void Finish() {
    std::lock_guard lock(mu);
    done = true;
    cv.notify_all();
  }
};
inline JobSlot g_main_calls;  // what stands for the world outside Ember
inline JobSlot g_vcpu_calls;  // register accesses

// What the harness does in the place of the world outside Ember (a host
// program's socket calls, a TAP swapped in) runs on the main thread while
// the device threads wait.
template <typename F>
void Outside(F f) {
  if (t_kind == ThreadKind::kNone) {
    f();
    return;
  }
  std::function<void()> job = f;
  g_main_calls.Hand(job);
}

// A register access, which Ember makes on a vCPU thread: run there.
template <typename F>
void OnVcpu(F f) {
  if (t_kind != ThreadKind::kVmm) {
    f();
    return;
  }
  std::function<void()> job = f;
  g_vcpu_calls.Hand(job);
}

// Runs `ops` on a thread under the vmm filter, with a vcpu thread for what
// they hand OnVcpu, and waits for them, running what they hand Outside
// meanwhile.
template <typename F>
void OnDeviceThread(F ops) {
  static const bool off = std::getenv("EMBER_FUZZ_NO_FILTER") != nullptr;
  if (off) {
    ops();
    return;
  }
  ThreadFilters();  // compiled, and SIGSYS caught, before any filter is on
  g_main_calls.done = false;
  g_vcpu_calls.done = false;
  std::thread vcpu([] {
    EnterFilter(ThreadKind::kVcpu);
    g_vcpu_calls.Serve();
  });
  std::thread vmm([&] {
    EnterFilter(ThreadKind::kVmm);
    ops();
    g_vcpu_calls.Finish();
    g_main_calls.Finish();
  });
  g_main_calls.Serve();
  vmm.join();
  vcpu.join();
  if (g_denial.seen) ReportDenial();
}

}  // namespace ember::fuzz
