#include "src/common/json_reader.h"

#include <gtest/gtest.h>

#include <string>

namespace ember {
namespace {

// `depth` nested arrays inside {"a": ...}: depth + 1 levels in all.
std::string Nested(int depth, char open = '[', char close = ']') {
  return "{\"a\":" + std::string(depth, open) + std::string(depth, close) + "}";
}

absl::Status Parse(const std::string& text) {
  rapidjson::Document doc;
  return ParseJsonObject(text, &doc);
}

void ExpectTooDeep(const std::string& text) {
  absl::Status st = Parse(text);
  ASSERT_FALSE(st.ok()) << text.substr(0, 80);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("JSON nested deeper than 64 levels"), std::string::npos)
      << st.message();
}

TEST(ParseJsonObjectTest, NestingUpToTheBoundIsAccepted) {
  EXPECT_TRUE(Parse(Nested(kMaxJsonDepth - 1)).ok());
  EXPECT_TRUE(Parse("{\"a\":" + std::string(kMaxJsonDepth - 1, '[') + "1" +
                    std::string(kMaxJsonDepth - 1, ']') + "}")
                  .ok());
  // Depth is per path, not per document: many siblings at the bound.
  std::string siblings = "{\"a\":[";
  for (int i = 0; i < 100; ++i) {
    siblings += std::string(kMaxJsonDepth - 2, '[') + std::string(kMaxJsonDepth - 2, ']') + ",";
  }
  siblings += "1]}";
  EXPECT_TRUE(Parse(siblings).ok());
}

TEST(ParseJsonObjectTest, OneLevelMoreIsRefused) {
  ExpectTooDeep(Nested(kMaxJsonDepth));
  std::string objects = std::string("{");
  for (int i = 0; i < kMaxJsonDepth; ++i) objects += "\"k\":{";
  objects += std::string(kMaxJsonDepth + 1, '}');
  ExpectTooDeep(objects);
  EXPECT_EQ(std::string(Parse(Nested(kMaxJsonDepth)).message()),
            "JSON nested deeper than 64 levels at byte 68");
}

// A snapshot's configuration, a --config-file or an API body with a raised
// limit: RapidJSON's recursive parser overflowed the stack on these.
TEST(ParseJsonObjectTest, AMillionOpeningBracketsAreRefusedNotRecursedInto) {
  ExpectTooDeep(std::string(1 << 20, '['));
  ExpectTooDeep("{\"a\":" + std::string(1 << 20, '['));
  ExpectTooDeep(std::string(1 << 20, '{'));
  ExpectTooDeep("{\"a\":" + std::string(1 << 19, '[') + std::string(1 << 19, ']') + "}");
}

TEST(ParseJsonObjectTest, BracketsInStringsDoNotCount) {
  const std::string many(10000, '[');
  EXPECT_TRUE(Parse("{\"a\":\"" + many + "\"}").ok());
  EXPECT_TRUE(Parse("{\"" + many + "\":1}").ok());
  // An escaped quote does not end the string; an escaped backslash does not
  // escape the quote after it.
  EXPECT_TRUE(Parse("{\"a\":\"\\\"" + many + "\"}").ok());
  ExpectTooDeep(std::string("{\"a\":\"\\\\\",\"b\":") + std::string(kMaxJsonDepth, '['));
}

TEST(ParseJsonObjectTest, StrayClosingBracketsCannotHideDepth) {
  // Closing brackets before the opening ones would lower a naive count.
  ExpectTooDeep("{\"a\":1}" + std::string(100, ']') + std::string(kMaxJsonDepth + 10, '['));
  ExpectTooDeep(std::string(100, '}') + std::string(kMaxJsonDepth + 1, '{'));
}

TEST(ParseJsonObjectTest, OtherErrorsAreUnchanged) {
  EXPECT_EQ(std::string(Parse("{\"a\":").message()), "malformed JSON at byte 5: Invalid value.");
  EXPECT_EQ(std::string(Parse("[1]").message()), "the JSON body must be an object");
  EXPECT_TRUE(Parse("{\"a\":[1,{\"b\":[]}]}").ok());
}

// What FindNonUtf8 names in `json`: a path, or "none".
std::string NonUtf8In(const std::string& json) {
  rapidjson::Document doc;
  absl::Status st = ParseJsonObject(json, &doc);
  if (!st.ok()) return std::string(st.message());
  return FindNonUtf8(doc).value_or("none");
}

TEST(FindNonUtf8Test, NamesTheFirstStringOrKeyThatIsNotUtf8) {
  EXPECT_EQ(NonUtf8In(R"({"a":"caf\u00e9 \ud83d\ude00","b":["\u0000"]})"), "none");
  EXPECT_EQ(NonUtf8In("{\"a\":\"\xc3\xa9\xf0\x9f\x98\x80\"}"), "none");
  EXPECT_EQ(NonUtf8In("{\"a\":\"x\xff\"}"), "a");
  EXPECT_EQ(NonUtf8In("{\"ok\":1,\"d\":[{\"p\":\"/\"},{\"p\":\"\xc0\x80\"}]}"), "d[1].p");
  EXPECT_EQ(NonUtf8In("{\"a\":\"\xed\xa0\x80\"}"), "a") << "an encoded surrogate";
  EXPECT_EQ(NonUtf8In("{\"a\":\"\xf4\x90\x80\x80\"}"), "a") << "past U+10FFFF";
  EXPECT_EQ(NonUtf8In("{\"a\":\"\xe2\x82\"}"), "a") << "cut short";
  // RapidJSON takes a lone low surrogate escape and stores bytes that are
  // not UTF-8; a lone high one it refuses itself.
  EXPECT_EQ(NonUtf8In(R"({"a":{"b":"x\udc00"}})"), "a.b");
  EXPECT_NE(NonUtf8In(R"({"a":"\ud800"})").find("malformed JSON"), std::string::npos);
  // A bad key is named by where it is, not by its bytes.
  EXPECT_EQ(NonUtf8In("{\"\xff\":1}"), "a key");
  EXPECT_EQ(NonUtf8In("{\"a\":[{\"\xff\":1}]}"), "a key in a[0]");
  // Keys on the way are escaped and cut: an error message is logged.
  EXPECT_EQ(NonUtf8In("{\"x\\n[vmm] forged\\\\\":{\"b\":\"\xff\"}}"),
            "x\\x0a[vmm] forged\\x5c.b");
  EXPECT_EQ(NonUtf8In("{\"" + std::string(100, 'k') + "\":[\"\xff\"]}"),
            std::string(64, 'k') + "...[0]");
}

TEST(JsonReaderTest, AnUnknownFieldIsNamedEscapedAndCut) {
  rapidjson::Document doc;
  ASSERT_TRUE(ParseJsonObject("{\"a\\nb\":1,\"" + std::string(80, 'z') + "\":2}", &doc).ok());
  JsonReader r(doc, "x");
  EXPECT_EQ(std::string(r.Finish().message()), "x: unknown field 'a\\x0ab'");
  rapidjson::Document doc2;
  ASSERT_TRUE(ParseJsonObject("{\"" + std::string(80, 'z') + "\":2}", &doc2).ok());
  JsonReader r2(doc2, "");
  EXPECT_EQ(std::string(r2.Finish().message()),
            "unknown field '" + std::string(64, 'z') + "...'");
}

TEST(FindNonUtf8Test, CheckUtf8SaysWhatToFix) {
  rapidjson::Document doc;
  ASSERT_TRUE(ParseJsonObject("{\"boot_args\":\"console=\xff\"}", &doc).ok());
  EXPECT_EQ(std::string(CheckUtf8(doc).message()),
            "boot_args is not valid UTF-8: JSON text must be UTF-8, and a \\u escape must not "
            "name a lone UTF-16 surrogate");
  ASSERT_TRUE(ParseJsonObject("{\"boot_args\":\"console=ttyS0\"}", &doc).ok());
  EXPECT_TRUE(CheckUtf8(doc).ok());
}

TEST(JsonReaderTest, NullIsNoValueForAnOptionalFieldAndNoneForARequiredOne) {
  rapidjson::Document doc;
  ASSERT_TRUE(ParseJsonObject(R"({"a": null, "b": null, "c": null})", &doc).ok());
  JsonReader r(doc, "x");
  EXPECT_EQ(r.String("a", false), std::nullopt);
  EXPECT_EQ(r.Uint("b", false, 0, 10), std::nullopt);
  EXPECT_EQ(r.Raw("c"), nullptr);
  EXPECT_TRUE(r.Finish().ok()) << "null fields are known, not unknown";
  JsonReader required(doc, "x");
  EXPECT_EQ(required.String("a", true), std::nullopt);
  required.Raw("b");
  required.Raw("c");
  EXPECT_EQ(std::string(required.Finish().message()), "x.a must be a string");
}

}  // namespace
}  // namespace ember
