// What vmdesk-microvm leaves on disk for others: the runtime record (who runs, where its sockets are), the
// exit record (why the guest ended, with the last lines it printed), both written atomically.
#pragma once
#include <sys/types.h>
#include <cstdint>
#include <string>
#include <vector>

namespace vmdesk {
namespace host {

// The last lines of guest output, for the exit record. Bounded: only the final kTailBytes are kept.
class OutputTail {
 public:
  static constexpr size_t kTailBytes = 8192;
  void append(const char* data, size_t len);
  // Up to maxLines non-empty lines, trailing whitespace trimmed, oldest first (as the TypeScript side did).
  std::vector<std::string> lines(size_t maxLines = 20) const;

 private:
  std::string buf_;
};

struct ExitRecordData {
  std::string at;  // ISO 8601, UTC
  std::string reason;  // guest-poweroff | shutdown | killed | crashed | host-signal
  std::string detail;
  std::vector<std::string> logTail;
};
// {"at":..,"reason":..,"detail":..,"exitCode":null,"signal":null,"logTail":[..]} as main/api/schema.ts's
// ExitRecord: this process does not know its own exit status; a parent that does may add it.
std::string exitRecordJson(const ExitRecordData& r);

// ISO 8601 UTC with milliseconds, as JavaScript's Date.prototype.toISOString() prints it (so strings compare
// in time order with the daemon's).
std::string isoNow();
// The kernel's start time of a process (field 22 of /proc/<pid>/stat, clock ticks since boot), which tells a
// process from a later one that reused its pid. Empty when unreadable.
std::string processStartTime(pid_t pid);
// Writes <dir>/.<name>.<pid>.tmp, fsyncs it when durable, renames it over path, then fsyncs the directory
// when durable. Readers see the old file or the new one, never a part. Throws VmError on failure.
void writeFileAtomic(const std::string& path, const std::string& data, bool durable);

}  // namespace host
}  // namespace vmdesk
