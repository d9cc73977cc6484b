#include "src/seccomp/compiler.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "src/common/json_reader.h"
#include "src/common/errno_status.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"
#include "src/common/kvm_ioctls.h"

namespace ember::seccomp {
namespace {

struct Symbol {
  const char* name;
  uint64_t value;
};

#define SYM(x) {#x, static_cast<uint64_t>(x)}
constexpr Symbol kSymbols[] = {
    // KVM
    SYM(KVM_RUN), SYM(KVM_GET_REGS), SYM(KVM_SET_REGS), SYM(KVM_GET_SREGS), SYM(KVM_SET_SREGS),
    SYM(KVM_GET_FPU), SYM(KVM_SET_FPU), SYM(KVM_GET_LAPIC), SYM(KVM_SET_LAPIC),
    SYM(KVM_GET_XCRS), SYM(KVM_SET_XCRS), SYM(KVM_GET_VCPU_EVENTS), SYM(KVM_SET_VCPU_EVENTS),
    SYM(KVM_GET_MP_STATE), SYM(KVM_SET_MP_STATE), SYM(KVM_GET_IRQCHIP), SYM(KVM_SET_IRQCHIP),
    SYM(KVM_GET_PIT2), SYM(KVM_SET_PIT2), SYM(KVM_GET_CLOCK), SYM(KVM_SET_CLOCK),
    SYM(KVM_GET_DIRTY_LOG), SYM(KVM_SET_USER_MEMORY_REGION), SYM(KVM_IRQFD), SYM(KVM_IOEVENTFD),
    SYM(KVM_KVMCLOCK_CTRL), SYM(KVM_SET_TSC_KHZ), SYM(KVM_GET_TSC_KHZ),
    {"KVM_SET_CPUID2", ember::kSetCpuid2}, {"KVM_SET_MSRS", ember::kSetMsrs},
    {"KVM_GET_CPUID2", ember::kGetCpuid2}, {"KVM_GET_MSRS", ember::kGetMsrs},
    {"KVM_GET_MSR_INDEX_LIST", ember::kGetMsrIndexList}, {"KVM_GET_XSAVE", ember::kGetXsave},
    // TAP
    SYM(TUNSETOFFLOAD), SYM(TUNSETIFF), SYM(TUNSETVNETHDRSZ),
    // files and sockets
    SYM(FIONBIO), SYM(TCGETS), SYM(AF_UNIX), SYM(O_RDONLY), SYM(O_WRONLY), SYM(O_RDWR),
    SYM(O_CREAT), SYM(O_APPEND), SYM(O_CLOEXEC), SYM(O_NONBLOCK), SYM(O_TRUNC), SYM(O_EXCL),
    // memory
    SYM(PROT_NONE), SYM(PROT_READ), SYM(PROT_WRITE), SYM(PROT_EXEC), SYM(MAP_SHARED),
    SYM(MAP_PRIVATE), SYM(MAP_ANONYMOUS), SYM(MAP_FIXED), SYM(MAP_NORESERVE),
    SYM(MADV_DONTNEED), SYM(MADV_FREE), SYM(MADV_WILLNEED), SYM(MADV_DONTFORK),
    SYM(MADV_MERGEABLE), SYM(MADV_HUGEPAGE), SYM(MADV_NOHUGEPAGE), SYM(MADV_DONTDUMP), SYM(PR_SET_VMA),
    SYM(F_GETLEASE), SYM(F_SETLEASE), SYM(F_UNLCK), SYM(F_GETFL), SYM(F_SETFL),
    SYM(MSG_DONTWAIT), SYM(MSG_NOSIGNAL),
};
#undef SYM

absl::Status Bad(const std::string& where, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", why));
}

// A number, a name from kSymbols, or several of those joined with '|'.
absl::StatusOr<uint64_t> Value(const rapidjson::Value* v, const std::string& where) {
  if (v == nullptr) return Bad(where, "is required");
  if (v->IsUint64()) return v->GetUint64();
  if (!v->IsString()) return Bad(where, "must be a number or a symbol name");
  uint64_t total = 0;
  for (absl::string_view part : absl::StrSplit(v->GetString(), '|')) {
    part = absl::StripAsciiWhitespace(part);
    uint64_t n;
    if (absl::SimpleAtoi(part, &n) ||
        (absl::ConsumePrefix(&part, "0x") && absl::SimpleHexAtoi(part, &n))) {
      total |= n;
      continue;
    }
    bool found = false;
    for (const Symbol& s : kSymbols) {
      if (part == s.name) {
        total |= s.value;
        found = true;
        break;
      }
    }
    if (!found) return Bad(where, absl::StrCat("unknown symbol '", part, "'"));
  }
  return total;
}

absl::StatusOr<uint32_t> Action(const std::optional<std::string>& name, const std::string& where) {
  if (!name) return Bad(where, "is required");
  if (*name == "allow") return SCMP_ACT_ALLOW;
  if (*name == "trap") return SCMP_ACT_TRAP;
  if (*name == "kill_process") return SCMP_ACT_KILL_PROCESS;
  if (*name == "kill_thread") return SCMP_ACT_KILL_THREAD;
  if (*name == "log") return SCMP_ACT_LOG;
  return Bad(where, absl::StrCat("'", *name, "' is not allow, trap, kill_process, kill_thread or log"));
}

absl::StatusOr<scmp_arg_cmp> Arg(const rapidjson::Value& v, const std::string& where) {
  if (!v.IsObject()) return Bad(where, "must be an object");
  JsonReader r(v, where);
  std::optional<uint64_t> index = r.Uint("index", true, 0, 5);
  std::optional<std::string> type = r.String("type", true);
  std::optional<std::string> op = r.String("op", true);
  const rapidjson::Value* val = r.Raw("val");
  const rapidjson::Value* mask = r.Raw("mask");
  r.String("comment", false);
  RETURN_IF_ERROR(r.Finish());
  if (*type != "dword" && *type != "qword") return Bad(where + ".type", "must be dword or qword");
  static const std::pair<const char*, scmp_compare> kOps[] = {
      {"eq", SCMP_CMP_EQ}, {"ne", SCMP_CMP_NE}, {"lt", SCMP_CMP_LT}, {"le", SCMP_CMP_LE},
      {"gt", SCMP_CMP_GT}, {"ge", SCMP_CMP_GE}, {"masked_eq", SCMP_CMP_MASKED_EQ}};
  scmp_arg_cmp cmp = {static_cast<unsigned>(*index), _SCMP_CMP_MIN, 0, 0};
  for (const auto& [name, c] : kOps) {
    if (*op == name) cmp.op = c;
  }
  if (cmp.op == _SCMP_CMP_MIN) return Bad(where + ".op", absl::StrCat("unknown op '", *op, "'"));
  ASSIGN_OR_RETURN(uint64_t value, Value(val, where + ".val"));
  // dword compares the low 32 bits, as the kernel passes an int argument.
  const uint64_t width = *type == "dword" ? 0xffffffffull : ~0ull;
  if (value > width) return Bad(where + ".val", "does not fit a dword");
  if (cmp.op == SCMP_CMP_MASKED_EQ) {
    ASSIGN_OR_RETURN(uint64_t m, Value(mask, where + ".mask"));
    cmp.datum_a = m & width;
    cmp.datum_b = value;
  } else {
    if (mask != nullptr) return Bad(where + ".mask", "only goes with op masked_eq");
    cmp.datum_a = value;
  }
  return cmp;
}

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

absl::StatusOr<BpfProgram> Export(scmp_filter_ctx ctx) {
  UniqueFd fd(memfd_create("ember-bpf", MFD_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("memfd_create");
  if (int rc = seccomp_export_bpf(ctx, fd.get()); rc < 0) {
    return ErrnoStatus("seccomp_export_bpf", -rc);
  }
  off_t size = lseek(fd.get(), 0, SEEK_END);
  if (size < 0 || size % sizeof(sock_filter) != 0) return absl::InternalError("bad BPF size");
  BpfProgram program(size / sizeof(sock_filter));
  if (pread(fd.get(), program.data(), size, 0) != size) return ErrnoStatus("pread BPF");
  return program;
}

// Calls `rule(thread, where, syscall number, args)` for each rule.
template <typename F>
absl::Status ForEachThread(absl::string_view json, F&& per_thread) {
  rapidjson::Document doc;
  RETURN_IF_ERROR(ParseJsonObject(json, &doc));
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    std::string thread = it->name.GetString();
    if (thread == "comment") continue;
    if (!it->value.IsObject()) return Bad(thread, "must be an object");
    RETURN_IF_ERROR(per_thread(thread, it->value));
  }
  return absl::OkStatus();
}

struct Rule {
  int syscall;
  std::vector<scmp_arg_cmp> args;
};

absl::StatusOr<std::vector<Rule>> Rules(const rapidjson::Value& filter, const std::string& where) {
  if (!filter.IsArray()) return Bad(where, "must be an array");
  std::vector<Rule> rules;
  for (rapidjson::SizeType i = 0; i < filter.Size(); i++) {
    std::string at = absl::StrCat(where, "[", i, "]");
    if (!filter[i].IsObject()) return Bad(at, "must be an object");
    JsonReader r(filter[i], at);
    std::optional<std::string> name = r.String("syscall", true);
    std::optional<std::string> comment = r.String("comment", true);
    const rapidjson::Value* args = r.Raw("args");
    RETURN_IF_ERROR(r.Finish());
    if (comment->empty()) return Bad(at + ".comment", "must say who needs the call");
    Rule rule{seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86_64, name->c_str()), {}};
    if (rule.syscall == __NR_SCMP_ERROR) {
      return Bad(at + ".syscall", absl::StrCat("unknown system call '", *name, "'"));
    }
    if (args != nullptr) {
      if (!args->IsArray()) return Bad(at + ".args", "must be an array");
      for (rapidjson::SizeType j = 0; j < args->Size(); j++) {
        ASSIGN_OR_RETURN(scmp_arg_cmp cmp, Arg((*args)[j], absl::StrCat(at, ".args[", j, "]")));
        rule.args.push_back(cmp);
      }
    }
    rules.push_back(std::move(rule));
  }
  return rules;
}

absl::StatusOr<BpfProgram> CompileThread(const std::string& thread, const rapidjson::Value& v) {
  JsonReader r(v, thread);
  std::optional<std::string> default_action = r.String("default_action", true);
  std::optional<std::string> filter_action = r.String("filter_action", true);
  const rapidjson::Value* filter = r.Raw("filter");
  r.String("comment", false);
  RETURN_IF_ERROR(r.Finish());
  ASSIGN_OR_RETURN(uint32_t def, Action(default_action, thread + ".default_action"));
  ASSIGN_OR_RETURN(uint32_t allow, Action(filter_action, thread + ".filter_action"));
  if (filter == nullptr) return Bad(thread + ".filter", "is required");
  ASSIGN_OR_RETURN(std::vector<Rule> rules, Rules(*filter, thread + ".filter"));

  std::unique_ptr<void, CtxDeleter> ctx(seccomp_init(def));
  if (!ctx) return absl::InternalError("seccomp_init failed");
  // A call from another ABI (x32, i386 through int 0x80) is never allowed.
  seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  // The loader, not libseccomp, sets NO_NEW_PRIVS when it installs.
  seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0);
  for (size_t i = 0; i < rules.size(); i++) {
    const Rule& rule = rules[i];
    int rc = seccomp_rule_add_exact_array(ctx.get(), allow, rule.syscall,
                                          static_cast<unsigned>(rule.args.size()),
                                          rule.args.data());
    if (rc < 0) {
      return Bad(absl::StrCat(thread, ".filter[", i, "]"),
                 absl::StrCat("libseccomp refused the rule: ", std::strerror(-rc)));
    }
  }
  return Export(ctx.get());
}

}  // namespace

absl::StatusOr<FilterMap> CompilePolicy(absl::string_view json) {
  FilterMap filters;
  RETURN_IF_ERROR(ForEachThread(json, [&](const std::string& thread, const rapidjson::Value& v) {
    ASSIGN_OR_RETURN(filters[thread], CompileThread(thread, v));
    return absl::OkStatus();
  }));
  return filters;
}

absl::StatusOr<std::map<std::string, int>> CountAllowedSyscalls(absl::string_view json) {
  std::map<std::string, int> counts;
  RETURN_IF_ERROR(ForEachThread(json, [&](const std::string& thread, const rapidjson::Value& v) {
    if (!v.HasMember("filter")) return Bad(thread + ".filter", "is required");
    ASSIGN_OR_RETURN(std::vector<Rule> rules, Rules(v["filter"], thread + ".filter"));
    std::set<int> distinct;
    for (const Rule& rule : rules) distinct.insert(rule.syscall);
    counts[thread] = static_cast<int>(distinct.size());
    return absl::OkStatus();
  }));
  return counts;
}

}  // namespace ember::seccomp
