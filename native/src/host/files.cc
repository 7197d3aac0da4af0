// Exit and runtime records (see files.h).
#include "host/files.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cstdio>
#include <ctime>
#include "common.h"
#include "host/json.h"

namespace vmdesk {
namespace host {

void OutputTail::append(const char* data, size_t len) {
  if (len >= kTailBytes) {
    buf_.assign(data + len - kTailBytes, kTailBytes);
    return;
  }
  buf_.append(data, len);
  // Trim in batches so a stream of single bytes does not move the buffer every time.
  if (buf_.size() > 2 * kTailBytes) buf_.erase(0, buf_.size() - kTailBytes);
}

std::vector<std::string> OutputTail::lines(size_t maxLines) const {
  std::string_view all(buf_);
  if (all.size() > kTailBytes) all = all.substr(all.size() - kTailBytes);
  std::vector<std::string> out;
  size_t end = all.size();
  // Walk backwards so only the lines that are kept get copied.
  while (end > 0 && out.size() < maxLines) {
    size_t nl = all.rfind('\n', end - 1);
    size_t start = nl == std::string_view::npos ? 0 : nl + 1;
    std::string_view line = all.substr(start, end - start);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r' || line.back() == '\f' || line.back() == '\v')) line.remove_suffix(1);
    if (!line.empty()) out.emplace_back(line);
    if (nl == std::string_view::npos) break;
    end = nl;
  }
  return std::vector<std::string>(out.rbegin(), out.rend());
}

std::string exitRecordJson(const ExitRecordData& r) {
  std::string tail = "[";
  for (size_t i = 0; i < r.logTail.size(); i++) {
    if (i) tail.push_back(',');
    appendJsonString(tail, r.logTail[i]);
  }
  tail.push_back(']');
  return JsonObject().str("at", r.at).str("reason", r.reason).str("detail", r.detail).null("exitCode").null("signal").raw("logTail", tail).done();
}

std::string isoNow() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[96];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           int(ts.tv_nsec / 1000000));
  return buf;
}

std::string processStartTime(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
  Fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return "";
  char buf[1024];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return "";
  std::string s(buf, size_t(n));
  // The command name (field 2) may contain spaces and parentheses: count fields after its last ')'.
  size_t p = s.rfind(')');
  if (p == std::string::npos || p + 2 > s.size()) return "";
  p += 2;  // field 3 starts here
  for (int field = 3; field < 22; field++) {
    p = s.find(' ', p);
    if (p == std::string::npos) return "";
    p++;
  }
  size_t e = s.find(' ', p);
  return s.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

void writeFileAtomic(const std::string& path, const std::string& data, bool durable) {
  size_t slash = path.rfind('/');
  std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  std::string tmp = dir + "/." + path.substr(slash + 1) + "." + std::to_string(getpid()) + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) throw sysError("create " + tmp);
  try {
    writeAll(fd.get(), data.data(), data.size(), tmp);
    if (durable && fsync(fd.get()) != 0) throw sysError("fsync " + tmp);
    fd.reset();
    if (rename(tmp.c_str(), path.c_str()) != 0) throw sysError("rename " + tmp + " to " + path);
  } catch (...) {
    unlink(tmp.c_str());
    throw;
  }
  if (durable) {
    Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.valid()) fsync(d.get());
  }
}

}  // namespace host
}  // namespace vmdesk
