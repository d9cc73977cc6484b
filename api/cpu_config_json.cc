#include "api/cpu_config_json.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/json_reader.h"
#include "src/common/open_no_wait.h"
#include "src/common/status_macros.h"

namespace ember::api {
namespace {

constexpr const char* kRegisters[] = {"eax", "ebx", "ecx", "edx"};
// A template is a few hundred modifiers at most (Firecracker's own are
// under 100); the file form is read whole.
constexpr off_t kMaxTemplateFileBytes = 1 << 20;
// KVM_GET_MSRS and KVM_SET_MSRS take at most 255 at once.
constexpr size_t kMaxMsrModifiers = 255;

// Each element of array `name` in `r`'s object, parsed by `parse`.
template <typename T, typename Parse>
absl::Status ReadArray(JsonReader& r, const char* name, const std::string& context,
                       std::vector<T>* out, Parse parse) {
  const rapidjson::Value* v = r.Raw(name);
  if (v == nullptr || v->IsNull()) return absl::OkStatus();
  if (!v->IsArray()) {
    return absl::InvalidArgumentError(absl::StrCat(context, ".", name, " must be an array"));
  }
  for (rapidjson::SizeType i = 0; i < v->Size(); i++) {
    std::string where = absl::StrCat(context, ".", name, "[", i, "]");
    ASSIGN_OR_RETURN(T item, parse((*v)[i], where));
    out->push_back(std::move(item));
  }
  return absl::OkStatus();
}

absl::StatusOr<KvmCapabilityModifier> ParseCapability(const rapidjson::Value& v,
                                                      const std::string& where) {
  std::string text = v.IsString() ? v.GetString() : "";
  KvmCapabilityModifier cap;
  cap.remove = !text.empty() && text[0] == '!';
  std::string digits = cap.remove ? text.substr(1) : text;
  bool decimal = !digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos;
  if (!v.IsString() || !decimal || digits.size() > 10 || std::stoull(digits) > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, " must be a capability number as a string, \"!\" first to remove it (\"121\", "
               "\"!56\")"));
  }
  cap.cap = static_cast<uint32_t>(std::stoull(digits));
  return cap;
}

absl::StatusOr<CpuidRegisterModifier> ParseRegister(const rapidjson::Value& v,
                                                    const std::string& where) {
  if (!v.IsObject()) return absl::InvalidArgumentError(absl::StrCat(where, " must be an object"));
  JsonReader r(v, where);
  std::string name = r.String("register", true).value_or("");
  std::string bitmap = r.String("bitmap", true).value_or("");
  RETURN_IF_ERROR(r.FinishIgnoringUnknown());
  CpuidRegisterModifier m;
  m.reg = -1;
  for (int i = 0; i < 4; i++) {
    if (name == kRegisters[i]) m.reg = i;
  }
  if (m.reg < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".register '", name, "' must be one of eax, ebx, ecx, edx"));
  }
  ASSIGN_OR_RETURN(BitFilter<uint64_t> bits, ParseBitmap(bitmap, 32, where + ".bitmap"));
  m.bits = {static_cast<uint32_t>(bits.filter), static_cast<uint32_t>(bits.value)};
  return m;
}

absl::StatusOr<CpuidLeafModifier> ParseLeaf(const rapidjson::Value& v, const std::string& where) {
  if (!v.IsObject()) return absl::InvalidArgumentError(absl::StrCat(where, " must be an object"));
  JsonReader r(v, where);
  std::string leaf = r.String("leaf", true).value_or("");
  std::string subleaf = r.String("subleaf", true).value_or("");
  CpuidLeafModifier m;
  m.flags = static_cast<uint32_t>(r.Uint("flags", true, 0, UINT32_MAX).value_or(0));
  bool has_modifiers = r.Raw("modifiers") != nullptr;
  RETURN_IF_ERROR(r.FinishIgnoringUnknown());
  if (!has_modifiers) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".modifiers is required"));
  }
  RETURN_IF_ERROR(ReadArray(r, "modifiers", where, &m.registers, ParseRegister));
  ASSIGN_OR_RETURN(m.leaf, ParseRegisterNumber(leaf, where + ".leaf"));
  ASSIGN_OR_RETURN(m.subleaf, ParseRegisterNumber(subleaf, where + ".subleaf"));
  return m;
}

absl::StatusOr<MsrModifier> ParseMsr(const rapidjson::Value& v, const std::string& where) {
  if (!v.IsObject()) return absl::InvalidArgumentError(absl::StrCat(where, " must be an object"));
  JsonReader r(v, where);
  std::string addr = r.String("addr", true).value_or("");
  std::string bitmap = r.String("bitmap", true).value_or("");
  RETURN_IF_ERROR(r.FinishIgnoringUnknown());
  MsrModifier m;
  ASSIGN_OR_RETURN(m.addr, ParseRegisterNumber(addr, where + ".addr"));
  ASSIGN_OR_RETURN(m.bits, ParseBitmap(bitmap, 64, where + ".bitmap"));
  return m;
}

}  // namespace

absl::StatusOr<CpuTemplate> ParseCpuConfig(const rapidjson::Value& value) {
  const std::string context = "cpu-config";
  if (!value.IsObject()) return absl::InvalidArgumentError("cpu-config must be an object");
  JsonReader r(value, context);
  CpuTemplate t;
  for (const char* arm : {"reg_modifiers", "vcpu_features"}) {
    const rapidjson::Value* v = r.Raw(arm);
    if (v != nullptr && !v->IsNull() && !(v->IsArray() && v->Empty())) {
      return absl::InvalidArgumentError(
          absl::StrCat("cpu-config.", arm, " is for aarch64 hosts; Ember runs on x86_64"));
    }
  }
  RETURN_IF_ERROR(ReadArray(r, "kvm_capabilities", context, &t.kvm_capabilities, ParseCapability));
  RETURN_IF_ERROR(ReadArray(r, "cpuid_modifiers", context, &t.cpuid_modifiers, ParseLeaf));
  RETURN_IF_ERROR(ReadArray(r, "msr_modifiers", context, &t.msr_modifiers, ParseMsr));
  RETURN_IF_ERROR(r.Finish());
  if (t.msr_modifiers.size() > kMaxMsrModifiers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cpu-config.msr_modifiers: at most ", kMaxMsrModifiers, " (KVM sets 255 MSRs at once)"));
  }
  return t;
}

absl::StatusOr<CpuTemplate> ParseCpuConfigOrPath(const rapidjson::Value& value) {
  if (!value.IsString()) return ParseCpuConfig(value);
  std::string path = value.GetString();
  // Never waited on (a FIFO) nor read without end (/dev/zero).
  UniqueFd fd = OpenNoWait(path, O_RDONLY);
  struct stat st;
  std::string text;
  bool ok = fd.valid() && fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) &&
            st.st_size <= kMaxTemplateFileBytes;
  if (ok) {
    text.resize(st.st_size);
    ok = pread(fd.get(), text.data(), text.size(), 0) == static_cast<ssize_t>(text.size());
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cpu-config: ", path, " is not a readable CPU template file of at most 1 MiB"));
  }
  rapidjson::Document doc;
  absl::Status parsed = ParseJsonObject(text, &doc);
  if (parsed.ok()) parsed = CheckUtf8(doc);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cpu-config: ", path, ": ", parsed.message()));
  }
  return ParseCpuConfig(doc);
}

void WriteCpuConfig(rapidjson::Writer<rapidjson::StringBuffer>& w, const CpuTemplate& t) {
  auto hex = [&](uint32_t n) { w.String(absl::StrFormat("0x%x", n).c_str()); };
  w.StartObject();
  w.Key("kvm_capabilities");
  w.StartArray();
  for (const KvmCapabilityModifier& c : t.kvm_capabilities) {
    w.String(absl::StrCat(c.remove ? "!" : "", c.cap).c_str());
  }
  w.EndArray();
  w.Key("cpuid_modifiers");
  w.StartArray();
  for (const CpuidLeafModifier& leaf : t.cpuid_modifiers) {
    w.StartObject();
    w.Key("leaf");
    hex(leaf.leaf);
    w.Key("subleaf");
    hex(leaf.subleaf);
    w.Key("flags");
    w.Uint(leaf.flags);
    w.Key("modifiers");
    w.StartArray();
    for (const CpuidRegisterModifier& m : leaf.registers) {
      w.StartObject();
      w.Key("register");
      w.String(kRegisters[m.reg]);
      w.Key("bitmap");
      w.String(BitmapString({m.bits.filter, m.bits.value}, 32).c_str());
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.Key("msr_modifiers");
  w.StartArray();
  for (const MsrModifier& m : t.msr_modifiers) {
    w.StartObject();
    w.Key("addr");
    hex(m.addr);
    w.Key("bitmap");
    w.String(BitmapString(m.bits, 64).c_str());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
}

}  // namespace ember::api
