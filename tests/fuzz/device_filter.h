// The device fuzzers' ops (mmio, block, net, balloon, vsock, i8042,
// serial) run as Ember runs them: on a thread under the
// seccomp filters of the threads that do that work in Ember, so that a
// device path calling what the filters deny fails here, without KVM, as
// it would kill the VMM. One filter allows what either the "vcpu" filter
// (register accesses) or the "vmm" filter (queue work, backends) allows,
// as resources/seccomp/x86_64.json has them, plus the little a thread's
// own start and end need under the sanitizers (kRuntimeSyscalls). Each
// input's ops run on a new thread (filters cannot be removed), while the
// fuzzer's own work (corpus, logs, the harness's log counting) stays on
// its unfiltered main thread, and so does what the harness does in the
// place of the world outside Ember (Outside). A denied call fails with EPERM there, and
// once the ops end the main thread prints it, with the stack it came
// from, and aborts: libFuzzer keeps the input. EMBER_FUZZ_NO_FILTER=1 runs
// without.
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
// allocator's per-thread regions MADV_NOHUGEPAGE and MADV_DONTDUMP, and
// takes down the thread's alternate signal stack at its end; UBSan's
// vptr check tests memory with a write into a pipe of its own); none is
// a device's. Policy rules, as in resources/seccomp/x86_64.json.
inline constexpr const char* kRuntimeRules[] = {
    R"({"syscall": "pipe2"})",
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
struct Denial {
  std::atomic<bool> seen{false};
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
    static const char kLine[] = "fuzz: the device thread's seccomp filter denied a call\n";
    (void)!write(STDERR_FILENO, kLine, sizeof(kLine) - 1);
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
               "fuzz: the device thread's seccomp filter denied %s (%ld) with arguments %#llx, "
               "%#llx, %#llx: a path Ember's filters would kill the VMM on. From:\n",
               name ? name : "?", g_denial.nr, g_denial.args[0], g_denial.args[1],
               g_denial.args[2]);
  for (int i = 0; i < g_denial.depth; i++) {
    char where[512];
    __sanitizer_symbolize_pc(g_denial.frames[i], "%p %F %L", where, sizeof(where));
    std::fprintf(stderr, "  #%d %s\n", i, where);
  }
  std::abort();
}

// The union filter, compiled once from the policy file.
inline const seccomp::BpfProgram* DeviceThreadFilter() {
  static const seccomp::BpfProgram* program = [] {
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
    rapidjson::Value rules(rapidjson::kArrayType);
    for (const char* kind : {"vmm", "vcpu"}) {
      for (auto& rule : policy[kind]["filter"].GetArray()) rules.PushBack(rule, a);
    }
    rapidjson::Document extra[std::size(kRuntimeRules)];
    for (size_t i = 0; i < std::size(kRuntimeRules); i++) {
      extra[i].Parse(kRuntimeRules[i]);
      rapidjson::Value rule(extra[i], a);
      rule.AddMember("comment", "the sanitizers' and glibc's own", a);
      rules.PushBack(rule, a);
    }
    rapidjson::Value device(rapidjson::kObjectType);
    device.AddMember("default_action", "trap", a);
    device.AddMember("filter_action", "allow", a);
    device.AddMember("filter", rules, a);
    doc.AddMember("device", device, a);
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
    return new seccomp::BpfProgram((*compiled)["device"]);
  }();
  return program;
}

// What the harness does in the place of the world outside Ember (a host
// program's socket calls, a TAP swapped in) runs on the main thread while
// the device thread waits: Outside hands it over.
struct MainThreadCalls {
  std::mutex mu;
  std::condition_variable cv;
  std::function<void()>* job = nullptr;
  bool done = false;
};
inline MainThreadCalls g_main_calls;
inline thread_local bool t_device_thread = false;

template <typename F>
void Outside(F f) {
  if (!t_device_thread) {
    f();
    return;
  }
  std::function<void()> job = f;
  std::unique_lock lock(g_main_calls.mu);
  g_main_calls.job = &job;
  g_main_calls.cv.notify_all();
  g_main_calls.cv.wait(lock, [] { return g_main_calls.job == nullptr; });
}

// Runs `ops` on a thread under the device filter, and waits for it,
// running what it hands Outside meanwhile.
template <typename F>
void OnDeviceThread(F ops) {
  static const bool off = std::getenv("EMBER_FUZZ_NO_FILTER") != nullptr;
  if (off) {
    ops();
    return;
  }
  const seccomp::BpfProgram* program = DeviceThreadFilter();
  g_main_calls.done = false;
  std::thread t([&] {
    t_device_thread = true;
    sock_fprog prog = {static_cast<unsigned short>(program->size()),
                       const_cast<sock_filter*>(program->data())};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
      std::perror("fuzz: installing the device thread's seccomp filter");
      std::abort();
    }
    ops();
    std::lock_guard lock(g_main_calls.mu);
    g_main_calls.done = true;
    g_main_calls.cv.notify_all();
  });
  {
    std::unique_lock lock(g_main_calls.mu);
    for (;;) {
      g_main_calls.cv.wait(lock, [] { return g_main_calls.job != nullptr || g_main_calls.done; });
      if (g_main_calls.job == nullptr) break;
      (*g_main_calls.job)();
      g_main_calls.job = nullptr;
      g_main_calls.cv.notify_all();
    }
  }
  t.join();
  if (g_denial.seen) ReportDenial();
}

}  // namespace ember::fuzz
