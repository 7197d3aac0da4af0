// JSON output helpers (see json.h).
#include "host/json.h"

namespace vmdesk {
namespace host {

namespace {
// Length of the valid UTF-8 sequence at s[i], or 0 when it is not one (overlongs, surrogates and code points
// past U+10FFFF are invalid, as RFC 3629 says).
size_t utf8SeqLen(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return uint8_t(s[k]); };
  uint8_t c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf) { n = 2; cp = c & 0x1f; }
  else if (c >= 0xe0 && c <= 0xef) { n = 3; cp = c & 0x0f; }
  else if (c >= 0xf0 && c <= 0xf4) { n = 4; cp = c & 0x07; }
  else return 0;
  if (s.size() - i < n) return 0;
  for (size_t k = 1; k < n; k++) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) return 0;
  return n;
}
}  // namespace

bool validUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8SeqLen(s, i);
    if (!n) return false;
    i += n;
  }
  return true;
}

void appendJsonString(std::string& out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    uint8_t c = uint8_t(s[i]);
    if (c >= 0x80) {
      size_t n = utf8SeqLen(s, i);
      if (n) out.append(s.data() + i, n), i += n;
      else out.append("\xef\xbf\xbd"), i++;  // U+FFFD for each byte that is not part of a valid sequence
      continue;
    }
    i++;
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out.append("\\u00");
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 15]);
        } else {
          out.push_back(char(c));
        }
    }
  }
  out.push_back('"');
}

std::string jsonString(std::string_view s) {
  std::string out;
  appendJsonString(out, s);
  return out;
}

void JsonObject::key(const char* k) {
  if (body_.size() > 1) body_.push_back(',');
  appendJsonString(body_, k);
  body_.push_back(':');
}
JsonObject& JsonObject::str(const char* k, std::string_view v) { key(k); appendJsonString(body_, v); return *this; }
JsonObject& JsonObject::num(const char* k, uint64_t v) { key(k); body_ += std::to_string(v); return *this; }
JsonObject& JsonObject::boolean(const char* k, bool v) { key(k); body_ += v ? "true" : "false"; return *this; }
JsonObject& JsonObject::null(const char* k) { key(k); body_ += "null"; return *this; }
JsonObject& JsonObject::raw(const char* k, const std::string& json) { key(k); body_ += json; return *this; }

}  // namespace host
}  // namespace vmdesk
