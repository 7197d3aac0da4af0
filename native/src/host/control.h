// The control protocol of vmdesk-microvm, without the sockets: framing and parsing of request lines, and the
// JSON lines it answers with. Kept apart from the event loop so hostile input can be tested without KVM
// (through the addon's __test export).
//
// Requests, one per line:  <id> <command>[ <argument>]\n
//   id        decimal 1 .. 2^53-1 (a JavaScript-safe integer), echoed in the reply
//   command   state | info | pause | resume | reset | shutdown [timeoutMs] | kill | snapshot-save <path> |
//             snapshot-load <path> | quit
//   argument  the rest of the line; printable UTF-8 only
// Lines are at most kMaxRequestLine bytes; control characters (CR included) are refused.
// Replies:  {"id":1,"ok":true,"result":{...}}   {"id":1,"ok":false,"error":{"code":"ESTATE","message":"..."}}
//           (id is null when the line had no readable id)
// Events:   {"event":"hello","data":{...}}  {"event":"state","data":{"state":"paused"}}  {"event":"exit","data":{...}}
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace vmdesk {
namespace host {

constexpr size_t kMaxRequestLine = 4352;  // a 4095-byte path with room for the id and command
constexpr uint64_t kMaxRequestId = 9007199254740991ull;
constexpr uint64_t kMaxShutdownTimeoutMs = 24ull * 3600 * 1000;
constexpr uint64_t kDefaultShutdownTimeoutMs = 10000;
constexpr int kProtocolVersion = 1;

enum class Cmd { State, Info, Pause, Resume, Reset, Shutdown, Kill, SnapshotSave, SnapshotLoad, Quit };
const char* cmdName(Cmd c);

struct Request {
  uint64_t id = 0;
  Cmd cmd = Cmd::State;
  std::string path;     // snapshot-save, snapshot-load
  uint64_t number = 0;  // shutdown timeout in ms
};

struct ParseError {
  bool hasId = false;
  uint64_t id = 0;
  std::string code;
  std::string message;
};

// Splits a byte stream into lines without letting one grow past kMaxRequestLine: an over-long line is
// reported once and skipped up to its newline, so the next line is read normally.
class LineReader {
 public:
  void feed(const char* data, size_t len, const std::function<void(std::string_view)>& onLine, const std::function<void()>& onOverflow);
  size_t buffered() const { return buf_.size(); }

 private:
  std::string buf_;
  bool skipping_ = false;
};

// Parses one line (without its newline). False with err filled in when it is not a valid request; empty
// lines are not requests and get no reply (the caller skips them).
bool parseRequest(std::string_view line, Request& out, ParseError& err);

// What a control connection does with the bytes it receives before any command runs: complete lines that
// are requests go to onRequest, in order; every other line (malformed, hostile, over-long) is answered with an
// error reply through onReply; empty lines are skipped.
void consumeControlInput(LineReader& reader, const char* data, size_t len, const std::function<void(const Request&)>& onRequest,
                         const std::function<void(const std::string&)>& onReply);

// The process exit status for an error code, as main/api/errors.ts's EXIT_CODES has it (EINVAL 2, EHOST 7...).
int exitStatusFor(const std::string& code);

std::string replyOk(uint64_t id, const std::string& resultJson);
std::string replyError(bool hasId, uint64_t id, const std::string& code, const std::string& message);
std::string replyError(const ParseError& e);
std::string eventLine(const char* name, const std::string& dataJson);

}  // namespace host
}  // namespace vmdesk
