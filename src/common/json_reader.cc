#include "src/common/json_reader.h"

#include <rapidjson/error/en.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/utf8.h"

namespace ember {
namespace {

// A key in a message: printable ASCII as it is, other bytes as \xNN (a
// key may hold a newline that would forge a log line), at most 64 bytes.
void AppendKey(std::string* path, absl::string_view key) {
  constexpr size_t kMaxKey = 64;
  for (size_t i = 0; i < key.size() && i < kMaxKey; i++) {
    const unsigned char c = static_cast<unsigned char>(key[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      path->push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(path, absl::StrFormat("\\x%02x", c));
    }
  }
  if (key.size() > kMaxKey) path->append("...");
}

}  // namespace

JsonReader::JsonReader(const rapidjson::Value& value, std::string context)
    : value_(value), context_(std::move(context)) {
  if (!value_.IsObject()) Fail(absl::StrCat(context_, " must be a JSON object"));
}

std::string JsonReader::Name(const char* field) const {
  return context_.empty() ? field : absl::StrCat(context_, ".", field);
}

void JsonReader::Fail(std::string message) {
  if (status_.ok()) status_ = absl::InvalidArgumentError(std::move(message));
}

const rapidjson::Value* JsonReader::Field(const char* name, bool required) {
  known_.insert(name);
  if (!status_.ok()) return nullptr;
  auto it = value_.FindMember(name);
  if (it == value_.MemberEnd()) {
    if (required) Fail(absl::StrCat(Name(name), " is required"));
    return nullptr;
  }
  // As serde reads Firecracker's Option fields: null is no value. A
  // required field must have one.
  if (it->value.IsNull() && !required) return nullptr;
  return &it->value;
}

const rapidjson::Value* JsonReader::Raw(const char* name) { return Field(name, false); }

std::optional<std::string> JsonReader::String(const char* name, bool required) {
  const rapidjson::Value* v = Field(name, required);
  if (v == nullptr) return std::nullopt;
  if (!v->IsString()) {
    Fail(absl::StrCat(Name(name), " must be a string"));
    return std::nullopt;
  }
  return std::string(v->GetString(), v->GetStringLength());
}

std::optional<uint64_t> JsonReader::Uint(const char* name, bool required, uint64_t min,
                                         uint64_t max) {
  const rapidjson::Value* v = Field(name, required);
  if (v == nullptr) return std::nullopt;
  if (!v->IsNumber() || v->IsDouble()) {
    Fail(absl::StrCat(Name(name), " must be an integer"));
    return std::nullopt;
  }
  if (!v->IsUint64() || v->GetUint64() < min || v->GetUint64() > max) {
    std::string got = v->IsInt64() ? absl::StrCat(v->GetInt64()) : absl::StrCat(v->GetUint64());
    Fail(absl::StrFormat("%s must be between %d and %d, got %s", Name(name), min, max, got));
    return std::nullopt;
  }
  return v->GetUint64();
}

std::optional<bool> JsonReader::Bool(const char* name, bool required) {
  const rapidjson::Value* v = Field(name, required);
  if (v == nullptr) return std::nullopt;
  if (!v->IsBool()) {
    Fail(absl::StrCat(Name(name), " must be true or false"));
    return std::nullopt;
  }
  return v->GetBool();
}

absl::Status JsonReader::Finish() {
  if (!status_.ok()) return status_;
  for (auto it = value_.MemberBegin(); it != value_.MemberEnd(); ++it) {
    std::string name(it->name.GetString(), it->name.GetStringLength());
    if (!known_.count(name)) {
      std::string shown;
      AppendKey(&shown, name);
      Fail(context_.empty() ? absl::StrCat("unknown field '", shown, "'")
                            : absl::StrCat(context_, ": unknown field '", shown, "'"));
      break;
    }
  }
  return status_;
}

namespace {

// Refuses `text` if its arrays and objects nest deeper than kMaxJsonDepth,
// without recursion. Brackets inside strings do not count. Up to the first
// error in the text the count is the depth RapidJSON's parser is at, and
// RapidJSON stops at that error, so it never recurses deeper than the
// bound; a stray closing bracket does not take the count below zero.
absl::Status CheckJsonDepth(absl::string_view text) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, which may be a quote
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "JSON nested deeper than %d levels at byte %d", kMaxJsonDepth, i));
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseJson(absl::string_view text, rapidjson::Document* doc) {
  if (absl::Status st = CheckJsonDepth(text); !st.ok()) return st;
  // Without kParseStopWhenDoneFlag, trailing bytes are an error too.
  doc->Parse(text.data(), text.size());
  if (doc->HasParseError()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "malformed JSON at byte %d: %s", doc->GetErrorOffset(),
        rapidjson::GetParseError_En(doc->GetParseError())));
  }
  return absl::OkStatus();
}

namespace {

bool IsUtf8String(const rapidjson::Value& v) { return IsUtf8({v.GetString(), v.GetStringLength()}); }

// Recursion as deep as the document: every caller's parser bounds that
// (ParseJson at kMaxJsonDepth, MMDS's store at its own limit). A bad key
// is named by where it is, never by its own bytes.
bool FindNonUtf8(const rapidjson::Value& v, std::string* path) {
  if (v.IsString()) return !IsUtf8String(v);
  const size_t at = path->size();
  if (v.IsArray()) {
    for (rapidjson::SizeType i = 0; i < v.Size(); i++) {
      absl::StrAppend(path, "[", i, "]");
      if (FindNonUtf8(v[i], path)) return true;
      path->resize(at);
    }
  } else if (v.IsObject()) {
    for (const auto& m : v.GetObject()) {
      if (!IsUtf8String(m.name)) {
        *path = at == 0 ? "a key" : absl::StrCat("a key in ", *path);
        return true;
      }
      if (at != 0) path->push_back('.');
      AppendKey(path, absl::string_view(m.name.GetString(), m.name.GetStringLength()));
      if (FindNonUtf8(m.value, path)) return true;
      path->resize(at);
    }
  }
  return false;
}

}  // namespace

std::optional<std::string> FindNonUtf8(const rapidjson::Value& value) {
  std::string path;
  if (FindNonUtf8(value, &path)) return path;
  return std::nullopt;
}

absl::Status CheckUtf8(const rapidjson::Value& value) {
  std::optional<std::string> where = FindNonUtf8(value);
  if (!where) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      where->empty() ? "the value" : *where,
      " is not valid UTF-8: JSON text must be UTF-8, and a \\u escape must not name a lone "
      "UTF-16 surrogate"));
}

absl::Status ParseJsonObject(absl::string_view text, rapidjson::Document* doc) {
  if (absl::Status st = ParseJson(text, doc); !st.ok()) return st;
  if (!doc->IsObject()) return absl::InvalidArgumentError("the JSON body must be an object");
  return absl::OkStatus();
}

}  // namespace ember
