#include "src/mmds/data_store.h"

#include <gtest/gtest.h>

#include <string>

namespace ember::mmds {
namespace {

DataStore MakeStore(size_t limit = kDefaultSizeLimit) {
  return DataStore(limit, TokenAuthority({1, 2, 3, 4, 5, 6, 7}, [] { return uint64_t{0}; }));
}

// The whole document as the guest's JSON GET of "/" gives it (null included).
std::string Raw(const DataStore& s) { return *s.GetValue("/", OutputFormat::kJson); }

TEST(DataStoreTest, PutReplacesAndSortsKeysAsSerdeJson) {
  DataStore s = MakeStore();
  EXPECT_EQ(s.Get(), "{}");
  EXPECT_EQ(Raw(s), "null");
  ASSERT_TRUE(s.Put(R"({"user-data":"1522850095","meta-data":{"iam":"dummy"}})").ok());
  EXPECT_EQ(s.Get(), R"({"meta-data":{"iam":"dummy"},"user-data":"1522850095"})");
  // A repeated key: the last value wins.
  ASSERT_TRUE(s.Put(R"({"b":1,"a":{"y":1,"x":2,"y":3},"b":2})").ok());
  EXPECT_EQ(s.Get(), R"({"a":{"x":2,"y":3},"b":2})");
  ASSERT_TRUE(s.Put("[3, {\"b\": 1, \"a\": 2}]").ok());
  EXPECT_EQ(s.Get(), R"([3,{"a":2,"b":1}])");
  ASSERT_TRUE(s.Put("null").ok());
  EXPECT_EQ(s.Get(), "{}");
  EXPECT_TRUE(s.Patch(R"({"a":1})").ok());  // initialized, though null
}

TEST(DataStoreTest, InvalidJsonIsRefusedAndChangesNothing) {
  DataStore s = MakeStore();
  ASSERT_TRUE(s.Put(R"({"a":1})").ok());
  // Surrogates: one alone, a high one without its low, a low one (as a
  // value, in a key, deep down) that RapidJSON itself takes.
  for (std::string bad : {"", "{", R"({"a":})", "{} x", "[1,]", "NaN", "{'a':1}", "\"\xff\"",
                          "\"\xc0\x80\"", "{\"a\":1}\x01", R"("\ud800")", R"("\ud800x")",
                          R"("\udc00")", R"({"\udfff":1})", R"({"a":[1,{"b":"x\udc00y"}]})"}) {
    absl::Status st = s.Put(bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    st = s.Patch(bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(s.Get(), R"({"a":1})");
  }
}

TEST(DataStoreTest, NestingUpToSerdeJsonsLimit) {
  DataStore s = MakeStore();
  std::string ok = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(s.Put(ok).ok());
  std::string deep = "[" + ok + "]";
  EXPECT_EQ(s.Put(deep).code(), absl::StatusCode::kInvalidArgument);
  // Very deep input is parsed without recursion, then refused.
  std::string huge = std::string(40000, '[') + std::string(40000, ']');
  EXPECT_EQ(MakeStore(1 << 20).Put(huge).code(), absl::StatusCode::kInvalidArgument);
  std::string objects;
  for (int i = 0; i < 200; i++) objects += "{\"a\":";
  objects += "1" + std::string(200, '}');
  EXPECT_EQ(s.Put(objects).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Get(), "[" + ok.substr(1, ok.size() - 2) + "]");
}

TEST(DataStoreTest, PatchBeforePutIsRefused) {
  DataStore s = MakeStore();
  absl::Status st = s.Patch(R"({"a":1})");
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), "The MMDS data store is not initialized.");
}

struct MergeCase {
  const char* target;
  const char* patch;
  const char* result;
};

TEST(DataStoreTest, MergePatchRfc7396AppendixA) {
  const MergeCase cases[] = {
      {R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})"},
      {R"({"a":"b"})", R"({"a":null})", R"({})"},
      {R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})"},
      {R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})"},
      {R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})"},
      {R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})"},
      {R"(["a","b"])", R"(["c","d"])", R"(["c","d"])"},
      {R"({"a":"b"})", R"(["c"])", R"(["c"])"},
      {R"({"a":"foo"})", "null", "null"},
      {R"({"a":"foo"})", R"("bar")", R"("bar")"},
      {R"({"e":null})", R"({"a":1})", R"({"a":1,"e":null})"},
      {R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})"},
      {R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})"},
      // The RFC's section 3 example.
      {R"({"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},)"
       R"("tags":["example","sample"],"content":"This will be unchanged"})",
       R"({"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},)"
       R"("tags":["example"]})",
       R"({"author":{"givenName":"John"},"content":"This will be unchanged",)"
       R"("phoneNumber":"+01-123-456-7890","tags":["example"],"title":"Hello!"})"},
  };
  for (const MergeCase& c : cases) {
    DataStore s = MakeStore();
    ASSERT_TRUE(s.Put(c.target).ok()) << c.target;
    ASSERT_TRUE(s.Patch(c.patch).ok()) << c.patch;
    EXPECT_EQ(Raw(s), c.result) << c.target << " + " << c.patch;
  }
}

TEST(DataStoreTest, FirecrackersPatchSequence) {
  // Firecracker's data_store.rs test_update_data_store, sizes included.
  DataStore s = MakeStore();
  ASSERT_TRUE(s.Put(R"({"name":{"first":"John","second":"Doe"},"age":"43"})").ok());
  ASSERT_TRUE(s.Patch(R"({"name":{"first":"John","second":"Doe"},"age":"100"})").ok());
  ASSERT_TRUE(s.Put(R"({"name":{"first":"John","second":"Doe"},"age":43})").ok());
  ASSERT_TRUE(s.Patch(R"({"name":{"first":"John","second":null},"age":"43"})").ok());
  EXPECT_EQ(s.Get(), R"({"age":"43","name":{"first":"John"}})");
  ASSERT_TRUE(s.Patch("{\"new_key\": \"" + std::string(51151, 'X') + "\"}").ok());
  absl::Status st = s.Patch(R"({"new_key2" : "smth"})");
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(st.message(), "The MMDS patch request doesn't fit.");
  EXPECT_EQ(s.Get().find("smth"), std::string::npos);
  ASSERT_TRUE(s.Patch(R"({"new_key" : "smth"})").ok());
  EXPECT_EQ(s.Get().size(), 53u);
  ASSERT_TRUE(s.Patch(R"({"new_key2" : "smth2"})").ok());
  EXPECT_EQ(s.Get().size(), 72u);
}

TEST(DataStoreTest, SizeLimitIsOnTheCompactSerialization) {
  DataStore s = MakeStore(20);
  // {"k":"..."} is 8 bytes around the string; whitespace does not count.
  EXPECT_TRUE(s.Put("{ \"k\" :  \"" + std::string(12, 'a') + "\" }").ok());
  EXPECT_EQ(s.Put("{\"k\":\"" + std::string(13, 'a') + "\"}").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.Get(), "{\"k\":\"" + std::string(12, 'a') + "\"}");
  // Escapes count as written: "\n" is two bytes.
  EXPECT_TRUE(s.Put("{\"k\":\"" + std::string(4, 'a') + R"(\n\n\n\n")" + "}").ok());
  EXPECT_EQ(s.Put("{\"k\":\"" + std::string(5, 'a') + R"(\n\n\n\n")" + "}").code(),
            absl::StatusCode::kResourceExhausted);
  s.set_size_limit(19);
  EXPECT_EQ(s.Patch(R"({"k":null})").code(), absl::StatusCode::kOk);
  EXPECT_EQ(s.Get(), "{}");
  // Firecracker's test_put_size_limit: over the default, nothing stored.
  DataStore d = MakeStore();
  EXPECT_EQ(d.Put("{\"key\": \"" + std::string(51300, 'X') + "\"}").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(d.Get(), "{}");
  EXPECT_EQ(Raw(d), "null");
}

// Firecracker's data_store.rs test_get_value, for both imds_compat settings.
TEST(DataStoreTest, GetValueFormats) {
  for (bool compat : {false, true}) {
    DataStore s = MakeStore();
    s.set_imds_compat(compat);
    ASSERT_TRUE(s.Put(R"({"name":{"first":"John","second":"Doe"},"age":43,)"
                      R"("phones":["+401234567","+441234567"],"member":false,)"
                      R"("shares_percentage":12.12,"balance":-24,)"
                      R"("json_string":"{\n  \"hello\": \"world\"\n}"})")
                    .ok());
    for (OutputFormat f : {OutputFormat::kImds, OutputFormat::kJson}) {
      bool json = f == OutputFormat::kJson && !compat;
      SCOPED_TRACE(std::string(compat ? "compat " : "") + (json ? "json" : "imds"));
      EXPECT_EQ(s.GetValue("/invalid_path", f).status().code(), absl::StatusCode::kNotFound);
      EXPECT_EQ(*s.GetValue("/name", f), json ? R"({"first":"John","second":"Doe"})"
                                               : "first\nsecond");
      for (const char* scalar : {"/age", "/phones/", "/phones", "/member",
                                 "/shares_percentage", "/balance"}) {
        absl::StatusOr<std::string> v = s.GetValue(scalar, f);
        if (json) {
          EXPECT_TRUE(v.ok()) << scalar;
        } else {
          EXPECT_EQ(v.status().code(), absl::StatusCode::kUnimplemented) << scalar;
          EXPECT_EQ(v.status().message(),
                    "Cannot retrieve value. The value has an unsupported type.");
        }
      }
      if (json) {
        EXPECT_EQ(*s.GetValue("/age", f), "43");
        EXPECT_EQ(*s.GetValue("/phones", f), R"(["+401234567","+441234567"])");
        EXPECT_EQ(*s.GetValue("/member", f), "false");
        EXPECT_EQ(*s.GetValue("/shares_percentage", f), "12.12");
        EXPECT_EQ(*s.GetValue("/balance", f), "-24");
      }
      EXPECT_EQ(*s.GetValue("/phones/0/", f), json ? "\"+401234567\"" : "+401234567");
      EXPECT_EQ(*s.GetValue("/json_string", f),
                json ? R"("{\n  \"hello\": \"world\"\n}")" : "{\n  \"hello\": \"world\"\n}");
    }
  }
}

TEST(DataStoreTest, ListingsAndPointers) {
  DataStore s = MakeStore();
  ASSERT_TRUE(s.Put(R"({"latest":{"meta-data":{"ami-id":"ami-1","network":{"a":"b"}},)"
                    R"("user-data":"x"},"a/b":"slash","m~n":"tilde","list":["x","y"],"":"e"})")
                  .ok());
  EXPECT_EQ(*s.GetValue("/", OutputFormat::kImds), "\na/b\nlatest/\nlist\nm~n");
  EXPECT_EQ(*s.GetValue("", OutputFormat::kImds), "\na/b\nlatest/\nlist\nm~n");
  EXPECT_EQ(*s.GetValue("/latest", OutputFormat::kImds), "meta-data/\nuser-data");
  EXPECT_EQ(*s.GetValue("/latest/", OutputFormat::kImds), "meta-data/\nuser-data");
  EXPECT_EQ(*s.GetValue("/latest/meta-data/ami-id", OutputFormat::kImds), "ami-1");
  EXPECT_EQ(*s.GetValue("/latest/meta-data", OutputFormat::kJson),
            R"({"ami-id":"ami-1","network":{"a":"b"}})");
  // RFC 6901 escapes; the empty key.
  EXPECT_EQ(*s.GetValue("/a~1b", OutputFormat::kImds), "slash");
  EXPECT_EQ(*s.GetValue("/m~0n", OutputFormat::kImds), "tilde");
  EXPECT_EQ(*s.GetValue("//", OutputFormat::kImds), "e");
  // Array indices as serde_json reads them.
  EXPECT_EQ(*s.GetValue("/list/1", OutputFormat::kImds), "y");
  for (const char* missing : {"/list/01", "/list/+1", "/list/2", "/list/-1", "/list/x",
                              "/latest/user-data/x", "latest", "/nope", "/latest//meta-data",
                              "/list/18446744073709551617"}) {
    EXPECT_EQ(s.GetValue(missing, OutputFormat::kJson).status().code(),
              absl::StatusCode::kNotFound)
        << missing;
  }
}

TEST(DataStoreTest, NumbersAreReadAsSerdeJsonReadsThem) {
  DataStore s = MakeStore();
  // Integers that fit stay integers; the rest are doubles, correctly
  // rounded, even a zero with a huge exponent (undefined behaviour in
  // RapidJSON's own full-precision path) and a subnormal's hardest case.
  ASSERT_TRUE(s.Put(R"([0.0e44, -0, 4294967296, -2147483649, 18446744073709551615,)"
                    R"( 18446744073709551616, -9223372036854775809, 1e-400,)"
                    R"( 2.2250738585072011e-308, 0.1])")
                  .ok());
  const std::string read =
      "[0.0,0,4294967296,-2147483649,18446744073709551615,18446744073709553000.0,"
      "-9223372036854776000.0,0.0,2.225073858507201e-308,0.1]";
  EXPECT_EQ(s.Get(), read);
  absl::Status st = s.Put("[1, 2e308]");
  EXPECT_NE(st.message().find("Number too big"), std::string::npos) << st;
  EXPECT_EQ(s.Get(), read) << "a refused PUT changes nothing";
}

TEST(DataStoreTest, UnicodeAndEscapesRoundTrip) {
  DataStore s = MakeStore();
  ASSERT_TRUE(s.Put(R"({"é":"ü\u0001\"\\/","b":"\ud83d\ude00","a":1e400})").ok() == false);
  ASSERT_TRUE(s.Put(R"({"é":"ü\u0001\"\\/","b":"\ud83d\ude00","a":1.5e3})").ok());
  EXPECT_EQ(s.Get(),
            "{\"a\":1500.0,\"b\":\"\xf0\x9f\x98\x80\",\"\xc3\xa9\":\"\xc3\xbc\\u0001\\\"\\\\/\"}");
  EXPECT_EQ(*s.GetValue("/\xc3\xa9", OutputFormat::kImds), "\xc3\xbc\x01\"\\/");
}

}  // namespace
}  // namespace ember::mmds
