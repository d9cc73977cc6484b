// The MMDS data store (Firecracker's mmds/data_store.rs): one JSON document
// the host replaces (PUT /mmds) or merges into (PATCH /mmds, RFC 7396) and
// the guest reads by path, plus the guest-facing settings that go with it
// (version, imds_compat) and the V2 token authority.
//
// The document is kept as serde_json keeps it in Firecracker: object keys
// sorted bytewise, a repeated key's last value wins, at most 127 levels of
// nesting. Its compact serialization never exceeds the size limit
// (--mmds-size-limit, by default the API's 51200-byte payload limit): a
// write that would go over is refused and changes nothing. Not
// thread-safe: the VMM thread owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <rapidjson/document.h>

#include "absl/status/statusor.h"
#include "src/mmds/clock.h"
#include "src/mmds/token.h"

namespace ember::mmds {

// Firecracker's HTTP_MAX_PAYLOAD_SIZE, the default of --mmds-size-limit.
inline constexpr size_t kDefaultSizeLimit = 51200;
// serde_json's recursion limit: deeper documents are not JSON to Firecracker.
inline constexpr int kMaxJsonDepth = 127;

enum class Version { kV1, kV2 };
// The guest's Accept header: application/json, or anything else (IMDS text).
enum class OutputFormat { kJson, kImds };

class DataStore {
 public:
  // Draws the token keys from getrandom(2).
  static absl::StatusOr<DataStore> Create(size_t size_limit = kDefaultSizeLimit,
                                          Clock clock = MonotonicClock());
  DataStore(size_t size_limit, TokenAuthority tokens);
  DataStore(DataStore&&) = default;
  DataStore& operator=(DataStore&&) = default;

  // PUT /mmds: replaces the document. InvalidArgument for text that is not
  // JSON; ResourceExhausted (the API's 413) when over the size limit.
  absl::Status Put(std::string_view json);
  // PATCH /mmds: merges `json` into the document (RFC 7396). As Put, and
  // FailedPrecondition before the first Put.
  absl::Status Patch(std::string_view json);
  // GET /mmds: the document, compact; "{}" while it is null (never put).
  std::string Get() const;

  // The guest's GET: the value at a JSON pointer path ("/latest/meta-data",
  // one trailing '/' ignored). JSON format: the value serialized. IMDS
  // format (always, with imds_compat): a string as is, an object as its
  // keys one a line ("key/" for objects, no final newline); NotFound for a
  // path that leads nowhere, Unimplemented for other types in IMDS format.
  absl::StatusOr<std::string> GetValue(std::string_view path, OutputFormat format) const;

  void set_size_limit(size_t limit) { size_limit_ = limit; }
  size_t size_limit() const { return size_limit_; }
  void set_version(Version v) { version_ = v; }
  Version version() const { return version_; }
  void set_imds_compat(bool on) { imds_compat_ = on; }
  bool imds_compat() const { return imds_compat_; }
  TokenAuthority& tokens() { return tokens_; }
  const TokenAuthority& tokens() const { return tokens_; }

 private:
  // Installs `doc` if its serialization fits.
  absl::Status Commit(rapidjson::Document& doc);

  rapidjson::Document doc_;  // null until the first Put
  bool initialized_ = false;
  size_t size_limit_;
  Version version_ = Version::kV1;
  bool imds_compat_ = false;
  TokenAuthority tokens_;
};

// Parses `json` as MMDS takes it: any JSON value, valid UTF-8, at most
// kMaxJsonDepth levels; keys sorted and deduplicated (last wins).
absl::Status ParseMmdsJson(std::string_view json, rapidjson::Document* doc);

}  // namespace ember::mmds
