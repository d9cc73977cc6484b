#include "src/mmds/data_store.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <vector>

#include <rapidjson/encodedstream.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "src/common/json_reader.h"
#include "src/common/payload_too_large.h"

namespace ember::mmds {
namespace {

using rapidjson::Value;
using Allocator = rapidjson::Document::AllocatorType;

std::string_view Name(const Value& v) { return {v.GetString(), v.GetStringLength()}; }

// By index: RapidJSON 1.1's mutable member iterators do not compare
// cleanly under C++20 (clang's -Wambiguous-reversed-operator).
Value::Member& MemberAt(Value& obj, size_t i) { return *(obj.MemberBegin() + i); }
const Value::Member& MemberAt(const Value& obj, size_t i) { return *(obj.MemberBegin() + i); }

bool DepthOk(const Value& v, int depth) {
  if (!v.IsObject() && !v.IsArray()) return true;
  if (depth > kMaxJsonDepth) return false;
  if (v.IsArray()) {
    for (const Value& e : v.GetArray()) {
      if (!DepthOk(e, depth + 1)) return false;
    }
  } else {
    for (const auto& m : v.GetObject()) {
      if (!DepthOk(m.value, depth + 1)) return false;
    }
  }
  return true;
}

// Sorts every object's keys and keeps the last of repeated ones, as
// serde_json's map does: lookups, listings and output are then in one order.
void Normalize(Value& v, Allocator& alloc) {
  if (v.IsArray()) {
    for (Value& e : v.GetArray()) Normalize(e, alloc);
    return;
  }
  if (!v.IsObject()) return;
  std::vector<Value::Member*> members;
  for (size_t i = 0; i < v.MemberCount(); i++) {
    Normalize(MemberAt(v, i).value, alloc);
    members.push_back(&MemberAt(v, i));
  }
  bool sorted_unique = true;
  for (size_t i = 1; i < members.size() && sorted_unique; i++) {
    sorted_unique = Name(members[i - 1]->name) < Name(members[i]->name);
  }
  if (sorted_unique) return;
  std::stable_sort(members.begin(), members.end(), [](auto a, auto b) {
    return Name(a->name) < Name(b->name);
  });
  Value out(rapidjson::kObjectType);
  for (size_t i = 0; i < members.size(); i++) {
    if (i + 1 < members.size() && Name(members[i]->name) == Name(members[i + 1]->name)) continue;
    out.AddMember(members[i]->name, members[i]->value, alloc);  // moves both
  }
  v = out;  // RapidJSON's assignment moves
}

// The member of a sorted object named `key`, or null.
const Value* FindMember(const Value& obj, std::string_view key) {
  auto begin = obj.MemberBegin(), end = obj.MemberEnd();
  auto it = std::lower_bound(begin, end, key, [](const auto& m, std::string_view k) {
    return Name(m.name) < k;
  });
  return it != end && Name(it->name) == key ? &it->value : nullptr;
}

std::string Serialize(const Value& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buf);
  v.Accept(writer);
  return std::string(buf.GetString(), buf.GetSize());
}

// serde_json's rule for array indices in a pointer: digits, no leading zero.
bool ParseIndex(std::string_view s, size_t* out) {
  if (s.empty() || (s[0] == '0' && s.size() > 1)) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

// RFC 6901: "~1" is '/', then "~0" is '~'.
std::string Unescape(std::string_view token) {
  std::string out;
  for (size_t i = 0; i < token.size(); i++) {
    if (token[i] == '~' && i + 1 < token.size() && (token[i + 1] == '1' || token[i + 1] == '0')) {
      out.push_back(token[i + 1] == '1' ? '/' : '~');
      i++;
    } else {
      out.push_back(token[i]);
    }
  }
  return out;
}

const Value* Lookup(const Value& root, std::string_view pointer) {
  if (pointer.empty()) return &root;
  if (pointer[0] != '/') return nullptr;
  const Value* at = &root;
  size_t pos = 1;
  while (true) {
    size_t slash = pointer.find('/', pos);
    std::string token = Unescape(pointer.substr(pos, slash == std::string_view::npos
                                                         ? std::string_view::npos
                                                         : slash - pos));
    size_t index;
    if (at->IsObject()) {
      at = FindMember(*at, token);
    } else if (at->IsArray() && ParseIndex(token, &index) && index < at->Size()) {
      at = &(*at)[static_cast<rapidjson::SizeType>(index)];
    } else {
      at = nullptr;
    }
    if (at == nullptr || slash == std::string_view::npos) return at;
    pos = slash + 1;
  }
}

// RFC 7396 on documents whose objects are sorted (Normalize): a merge of
// the two key lists, linear however large both are, and sorted again.
void MergePatch(Value& target, const Value& patch, Allocator& alloc) {
  if (!patch.IsObject()) {
    target.CopyFrom(patch, alloc);
    return;
  }
  if (!target.IsObject()) target.SetObject();
  Value out(rapidjson::kObjectType);
  size_t tn = target.MemberCount(), pn = patch.MemberCount(), i = 0, j = 0;
  while (i < tn || j < pn) {
    Value::Member* t = i < tn ? &MemberAt(target, i) : nullptr;
    const Value::Member* p = j < pn ? &MemberAt(patch, j) : nullptr;
    int order = !t ? 1 : !p ? -1 : Name(t->name).compare(Name(p->name));
    if (order < 0) {
      out.AddMember(t->name, t->value, alloc);  // untouched: moved over
      i++;
      continue;
    }
    if (order == 0) {
      if (!p->value.IsNull()) {
        MergePatch(t->value, p->value, alloc);
        out.AddMember(t->name, t->value, alloc);
      }
      i++;
    } else if (!p->value.IsNull()) {
      Value name(p->name, alloc);
      Value value;
      MergePatch(value, p->value, alloc);
      out.AddMember(name, value, alloc);
    }
    j++;
  }
  target = out;
}

// Builds `doc` with every number converted by the C library, which rounds
// correctly (as serde_json does). RapidJSON's own full-precision path is
// undefined behaviour on a zero significand with a large exponent, such as
// 0.0e44 (it counts the leading zeros of 0).
class ExactNumbers {
 public:
  explicit ExactNumbers(rapidjson::Document& doc) : doc_(doc) {}
  bool Null() { return doc_.Null(); }
  bool Bool(bool b) { return doc_.Bool(b); }
  bool Int(int i) { return doc_.Int(i); }
  bool Uint(unsigned u) { return doc_.Uint(u); }
  bool Int64(int64_t i) { return doc_.Int64(i); }
  bool Uint64(uint64_t u) { return doc_.Uint64(u); }
  bool Double(double d) { return doc_.Double(d); }
  bool String(const char* s, rapidjson::SizeType n, bool copy) { return doc_.String(s, n, copy); }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) { return doc_.Key(s, n, copy); }
  bool StartObject() { return doc_.StartObject(); }
  bool EndObject(rapidjson::SizeType n) { return doc_.EndObject(n); }
  bool StartArray() { return doc_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) { return doc_.EndArray(n); }

  // As RapidJSON types them: an integer that fits is one, the rest double.
  bool RawNumber(const char* s, rapidjson::SizeType n, bool) {
    std::string text(s, n);
    if (text.find_first_of(".eE") == std::string::npos) {
      const char* end = text.data() + text.size();
      if (text[0] == '-') {
        int64_t i;
        if (std::from_chars(text.data(), end, i).ec == std::errc()) {
          return i >= INT32_MIN ? doc_.Int(static_cast<int>(i)) : doc_.Int64(i);
        }
      } else {
        uint64_t u;
        if (std::from_chars(text.data(), end, u).ec == std::errc()) {
          return u <= UINT32_MAX ? doc_.Uint(static_cast<unsigned>(u)) : doc_.Uint64(u);
        }
      }
    }
    errno = 0;
    double d = std::strtod(text.c_str(), nullptr);
    // Underflow is a zero or a subnormal, as RapidJSON gives it.
    if (errno == ERANGE && std::isinf(d)) {
      too_big = true;
      return false;
    }
    return doc_.Double(d);
  }

  bool too_big = false;

 private:
  rapidjson::Document& doc_;
};

}  // namespace

absl::Status ParseMmdsJson(std::string_view json, rapidjson::Document* doc) {
  // Iterative: a deep document cannot exhaust the stack while parsing.
  constexpr unsigned kFlags = rapidjson::kParseIterativeFlag |
                              rapidjson::kParseValidateEncodingFlag |
                              rapidjson::kParseNumbersAsStringsFlag;
  rapidjson::ParseResult result;
  bool too_big = false;
  auto parse = [&](rapidjson::Document& d) {
    ExactNumbers numbers(d);
    rapidjson::MemoryStream bytes(json.data(), json.size());
    rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> in(bytes);
    rapidjson::Reader reader;
    result = reader.Parse<kFlags>(in, numbers);
    too_big = numbers.too_big;
    return !result.IsError();
  };
  doc->Populate(parse);
  if (result.IsError()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "invalid JSON: %s (at byte %d)",
        rapidjson::GetParseError_En(too_big ? rapidjson::kParseErrorNumberTooBig : result.Code()),
        result.Offset()));
  }
  if (!DepthOk(*doc, 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("invalid JSON: nested deeper than %d levels", kMaxJsonDepth));
  }
  // RapidJSON checks raw bytes here (kParseValidateEncodingFlag) and
  // pairs surrogate escapes, but takes a lone low one.
  if (absl::Status st = CheckUtf8(*doc); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", st.message()));
  }
  Normalize(*doc, doc->GetAllocator());
  return absl::OkStatus();
}

absl::StatusOr<DataStore> DataStore::Create(size_t size_limit, Clock clock) {
  absl::StatusOr<TokenAuthority> tokens = TokenAuthority::Create(std::move(clock));
  if (!tokens.ok()) return tokens.status();
  return DataStore(size_limit, *std::move(tokens));
}

DataStore::DataStore(size_t size_limit, TokenAuthority tokens)
    : size_limit_(size_limit), tokens_(std::move(tokens)) {}

absl::Status DataStore::Commit(rapidjson::Document& doc) {
  if (Serialize(doc).size() > size_limit_) {
    // Firecracker's message for both PUT and PATCH.
    return PayloadTooLargeError("The MMDS patch request doesn't fit.");
  }
  // A fresh copy: the parse and merge leave dead values in doc's pool,
  // which RapidJSON frees only with the whole document.
  rapidjson::Document compact;
  compact.CopyFrom(doc, compact.GetAllocator());
  doc_.Swap(compact);
  initialized_ = true;
  return absl::OkStatus();
}

absl::Status DataStore::Put(std::string_view json) {
  rapidjson::Document doc;
  if (absl::Status st = ParseMmdsJson(json, &doc); !st.ok()) return st;
  return Commit(doc);
}

absl::Status DataStore::Patch(std::string_view json) {
  if (!initialized_) {
    return absl::FailedPreconditionError("The MMDS data store is not initialized.");
  }
  rapidjson::Document patch;
  if (absl::Status st = ParseMmdsJson(json, &patch); !st.ok()) return st;
  rapidjson::Document work;
  work.CopyFrom(doc_, work.GetAllocator());
  MergePatch(work, patch, work.GetAllocator());
  return Commit(work);
}

std::string DataStore::Get() const { return doc_.IsNull() ? "{}" : Serialize(doc_); }

absl::StatusOr<std::string> DataStore::GetValue(std::string_view path,
                                                OutputFormat format) const {
  if (!path.empty() && path.back() == '/') path.remove_suffix(1);
  const Value* v = Lookup(doc_, path);
  if (v == nullptr) return absl::NotFoundError("not found");
  // EC2's IMDS ignores the Accept header.
  if (format == OutputFormat::kJson && !imds_compat_) return Serialize(*v);
  if (v->IsString()) return std::string(Name(*v));
  if (!v->IsObject()) {
    return absl::UnimplementedError("Cannot retrieve value. The value has an unsupported type.");
  }
  std::vector<std::string> keys;
  for (const auto& m : v->GetObject()) {
    keys.push_back(std::string(Name(m.name)) + (m.value.IsObject() ? "/" : ""));
  }
  return absl::StrJoin(keys, "\n");
}

}  // namespace ember::mmds
