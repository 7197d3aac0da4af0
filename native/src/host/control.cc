// Request framing and parsing for the control socket (see control.h).
#include "host/control.h"
#include <cstring>
#include "host/json.h"

namespace vmdesk {
namespace host {

const char* cmdName(Cmd c) {
  switch (c) {
    case Cmd::State: return "state";
    case Cmd::Info: return "info";
    case Cmd::Pause: return "pause";
    case Cmd::Resume: return "resume";
    case Cmd::Reset: return "reset";
    case Cmd::Shutdown: return "shutdown";
    case Cmd::Kill: return "kill";
    case Cmd::SnapshotSave: return "snapshot-save";
    case Cmd::SnapshotLoad: return "snapshot-load";
    case Cmd::Quit: return "quit";
  }
  return "?";
}

void LineReader::feed(const char* data, size_t len, const std::function<void(std::string_view)>& onLine, const std::function<void()>& onOverflow) {
  size_t pos = 0;
  while (pos < len) {
    const char* nl = static_cast<const char*>(memchr(data + pos, '\n', len - pos));
    size_t end = nl ? size_t(nl - data) : len;
    if (skipping_) {
      if (nl) skipping_ = false;
    } else if (buf_.size() + (end - pos) > kMaxRequestLine) {
      buf_.clear();
      skipping_ = !nl;
      onOverflow();
    } else if (nl) {
      if (buf_.empty()) {
        onLine(std::string_view(data + pos, end - pos));
      } else {
        buf_.append(data + pos, end - pos);
        std::string line;
        line.swap(buf_);
        onLine(line);
      }
    } else {
      buf_.append(data + pos, end - pos);
    }
    pos = nl ? end + 1 : len;
  }
}

namespace {

bool isControl(unsigned char c) { return c < 0x20 || c == 0x7f; }

bool fail(ParseError& err, const char* code, std::string msg) {
  err.code = code;
  err.message = std::move(msg);
  return false;
}

struct CmdSpec {
  const char* name;
  Cmd cmd;
  enum { None, OptionalNumber, Path } arg;
};
const CmdSpec kCommands[] = {
    {"state", Cmd::State, CmdSpec::None},          {"info", Cmd::Info, CmdSpec::None},
    {"pause", Cmd::Pause, CmdSpec::None},          {"resume", Cmd::Resume, CmdSpec::None},
    {"reset", Cmd::Reset, CmdSpec::None},          {"shutdown", Cmd::Shutdown, CmdSpec::OptionalNumber},
    {"kill", Cmd::Kill, CmdSpec::None},            {"snapshot-save", Cmd::SnapshotSave, CmdSpec::Path},
    {"snapshot-load", Cmd::SnapshotLoad, CmdSpec::Path}, {"quit", Cmd::Quit, CmdSpec::None},
};

}  // namespace

bool parseRequest(std::string_view line, Request& out, ParseError& err) {
  err = ParseError();
  // The id comes first so that even a refused request can be answered under its id.
  size_t pos = 0;
  uint64_t id = 0;
  while (pos < line.size() && line[pos] >= '0' && line[pos] <= '9' && pos < 17) {
    id = id * 10 + uint64_t(line[pos] - '0');
    pos++;
  }
  bool idOk = pos > 0 && line[0] != '0' && id <= kMaxRequestId && (pos == line.size() || line[pos] == ' ');
  if (idOk) {
    err.hasId = true;
    err.id = id;
  }
  for (unsigned char c : line)
    if (isControl(c)) return fail(err, "EINVAL", "control characters are not allowed in a request");
  if (!validUtf8(line)) return fail(err, "EINVAL", "a request must be UTF-8 text");
  if (!idOk) return fail(err, "EINVAL", "a request starts with an id (1 to 9007199254740991) and a space: \"<id> <command> [argument]\"");
  if (pos == line.size() || ++pos == line.size()) return fail(err, "EINVAL", "a request needs a command after its id");
  size_t cmdStart = pos;
  while (pos < line.size() && line[pos] != ' ') pos++;
  std::string_view name = line.substr(cmdStart, pos - cmdStart);
  bool hasArg = pos < line.size();
  std::string_view arg = hasArg ? line.substr(pos + 1) : std::string_view();
  const CmdSpec* spec = nullptr;
  for (const CmdSpec& c : kCommands)
    if (name == c.name) spec = &c;
  if (!spec) {
    std::string shown(name.substr(0, 40));
    return fail(err, "EINVAL", "unknown command \"" + shown + "\" (state, info, pause, resume, reset, shutdown, kill, snapshot-save, snapshot-load, quit)");
  }
  out = Request();
  out.id = id;
  out.cmd = spec->cmd;
  switch (spec->arg) {
    case CmdSpec::None:
      if (hasArg) return fail(err, "EINVAL", std::string(spec->name) + " takes no argument");
      break;
    case CmdSpec::OptionalNumber: {
      out.number = kDefaultShutdownTimeoutMs;
      if (!hasArg) break;
      if (arg.empty() || arg.size() > 12) return fail(err, "EINVAL", std::string(spec->name) + " takes a timeout in milliseconds (0 to " + std::to_string(kMaxShutdownTimeoutMs) + ")");
      uint64_t n = 0;
      for (char c : arg) {
        if (c < '0' || c > '9') return fail(err, "EINVAL", std::string(spec->name) + " takes a timeout in milliseconds (0 to " + std::to_string(kMaxShutdownTimeoutMs) + ")");
        n = n * 10 + uint64_t(c - '0');
      }
      if (n > kMaxShutdownTimeoutMs) return fail(err, "EINVAL", "the shutdown timeout is at most " + std::to_string(kMaxShutdownTimeoutMs) + " ms");
      out.number = n;
      break;
    }
    case CmdSpec::Path:
      if (!hasArg || arg.empty()) return fail(err, "EINVAL", std::string(spec->name) + " needs an absolute path");
      if (arg[0] != '/') return fail(err, "EINVAL", std::string(spec->name) + " needs an absolute path");
      if (arg.size() > 4095) return fail(err, "EINVAL", "the path is longer than 4095 bytes");
      if (arg.back() == '/') return fail(err, "EINVAL", std::string(spec->name) + " needs a file path, not a directory");
      out.path.assign(arg);
      break;
  }
  return true;
}

void consumeControlInput(LineReader& reader, const char* data, size_t len, const std::function<void(const Request&)>& onRequest,
                         const std::function<void(const std::string&)>& onReply) {
  reader.feed(
      data, len,
      [&](std::string_view line) {
        if (line.empty()) return;
        Request r;
        ParseError err;
        if (parseRequest(line, r, err)) onRequest(r);
        else onReply(replyError(err));
      },
      [&] { onReply(replyError(false, 0, "EINVAL", "request line longer than " + std::to_string(kMaxRequestLine) + " bytes: ignored")); });
}

int exitStatusFor(const std::string& code) {
  static const std::pair<const char*, int> codes[] = {
      {"EINVAL", 2},  {"ENOTFOUND", 3}, {"EEXIST", 4},     {"EBUSY", 5},      {"ESTATE", 6},  {"EHOST", 7},
      {"EENGINE", 8}, {"EBROKEN", 9},   {"ECANCELED", 10}, {"ETIMEDOUT", 11}, {"ENOSPC", 12}, {"EACCES", 13},
  };
  for (auto& [c, n] : codes)
    if (code == c) return n;
  return 1;  // EINTERNAL and anything unknown
}

std::string replyOk(uint64_t id, const std::string& resultJson) {
  return "{\"id\":" + std::to_string(id) + ",\"ok\":true,\"result\":" + resultJson + "}\n";
}

std::string replyError(bool hasId, uint64_t id, const std::string& code, const std::string& message) {
  std::string out = "{\"id\":" + (hasId ? std::to_string(id) : std::string("null")) + ",\"ok\":false,\"error\":{\"code\":";
  appendJsonString(out, code);
  out += ",\"message\":";
  appendJsonString(out, message);
  out += "}}\n";
  return out;
}

std::string replyError(const ParseError& e) { return replyError(e.hasId, e.id, e.code, e.message); }

std::string eventLine(const char* name, const std::string& dataJson) {
  std::string out = "{\"event\":";
  appendJsonString(out, name);
  out += ",\"data\":" + dataJson + "}\n";
  return out;
}

}  // namespace host
}  // namespace vmdesk
