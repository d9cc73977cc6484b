// Typed, checked reads of one JSON object's fields. Each getter records the
// field as known; Finish() then refuses any field nobody asked for. An
// optional field given as null reads as absent (Firecracker's clients send
// null for "none", and its GET /vm/config writes it). The
// first error wins and names the field with its context, e.g.
// "machine-config.vcpu_count must be an integer".
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include <rapidjson/document.h>

#include "absl/status/status.h"

namespace ember {

class JsonReader {
 public:
  // `context` prefixes messages ("machine-config"); `value` must outlive this.
  JsonReader(const rapidjson::Value& value, std::string context);

  std::optional<std::string> String(const char* name, bool required);
  std::optional<uint64_t> Uint(const char* name, bool required, uint64_t min, uint64_t max);
  std::optional<bool> Bool(const char* name, bool required);
  // Marks a field known without reading it.
  const rapidjson::Value* Raw(const char* name);

  // OK if every read succeeded and the object has no unknown field.
  absl::Status Finish();
  // OK if every read succeeded, whatever else the object has: for the
  // objects Firecracker reads without serde's deny_unknown_fields.
  absl::Status FinishIgnoringUnknown() const { return status_; }
  absl::Status status() const { return status_; }

 private:
  const rapidjson::Value* Field(const char* name, bool required);
  void Fail(std::string message);
  std::string Name(const char* field) const;

  const rapidjson::Value& value_;
  std::string context_;
  std::set<std::string> known_;
  absl::Status status_;
};

// How deep arrays and objects may nest in any JSON Ember reads. RapidJSON's
// parser recurses once per level, so without a bound a body of `[`s (an API
// request, a config file, a snapshot's configuration) overflows the stack.
// Ember's own documents nest 4 levels at most.
inline constexpr int kMaxJsonDepth = 64;

// Parses `text` as one JSON object; the error gives the offset and reason.
// A document nested deeper than kMaxJsonDepth is refused before RapidJSON
// sees it ("JSON nested deeper than 64 levels"). The one entry point for
// JSON from outside the process: use it rather than Document::Parse.
absl::Status ParseJsonObject(absl::string_view text, rapidjson::Document* doc);
// The same for a document of any type (the Uffd region list is an array).
absl::Status ParseJson(absl::string_view text, rapidjson::Document* doc);

// Where `value` holds a string or key that is not strict UTF-8 (utf8.h):
// the string's path ("drives[1].path_on_host", "" for `value` itself; keys
// in it escaped and cut to 64 bytes) or "a key in drives[1]", or nullopt
// if there is none. Recurses as deep as `value` nests: call it on what a
// depth-bounded parser (ParseJson) made. RapidJSON copies raw bytes unchecked and turns
// a lone low surrogate escape ("\udc00") into bytes that are not UTF-8;
// serde_json refuses both, and so do Ember's API and config file.
std::optional<std::string> FindNonUtf8(const rapidjson::Value& value);
// FindNonUtf8 as an error that names the place and says what to fix.
absl::Status CheckUtf8(const rapidjson::Value& value);

}  // namespace ember
