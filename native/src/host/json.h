// Just enough JSON output for the control protocol, the runtime record and the exit record. Input is never
// JSON (requests are plain lines), so there is no parser to harden.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace vmdesk {
namespace host {

bool validUtf8(std::string_view s);
// Appends s as a JSON string literal. Guest output is arbitrary bytes: invalid UTF-8 becomes U+FFFD and
// control characters are escaped, so the result is always valid JSON (and valid UTF-8).
void appendJsonString(std::string& out, std::string_view s);
std::string jsonString(std::string_view s);

// A flat JSON object built field by field: {"a":1,"b":"x"}.
class JsonObject {
 public:
  JsonObject& str(const char* key, std::string_view v);
  JsonObject& num(const char* key, uint64_t v);
  JsonObject& boolean(const char* key, bool v);
  JsonObject& null(const char* key);
  JsonObject& raw(const char* key, const std::string& json);  // an already encoded value
  std::string done() const { return body_ + "}"; }

 private:
  void key(const char* k);
  std::string body_ = "{";
};

}  // namespace host
}  // namespace vmdesk
