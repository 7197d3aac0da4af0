// Strict argv parsing for vmdesk-microvm (see args.h).
#include "host/args.h"
#include <cstring>
#include <set>
#include "host/json.h"

namespace vmdesk {
namespace host {

namespace {

bool hasControlChars(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

uint64_t parseNumber(const std::string& flag, const std::string& v, uint64_t min, uint64_t max) {
  if (v.empty() || v.size() > 20) throw invalid(flag + " needs a decimal number, got \"" + v + "\"");
  uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') throw invalid(flag + " needs a decimal number, got \"" + v + "\"");
    uint64_t d = uint64_t(c - '0');
    if (n > (UINT64_MAX - d) / 10) throw invalid(flag + " is out of range");
    n = n * 10 + d;
  }
  if (n < min || n > max) throw invalid(flag + " must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " + v);
  return n;
}

// Absolute, bounded, printable: these paths end up in logs and JSON, and a relative one would depend on a
// working directory the executable does not keep.
std::string checkPath(const std::string& flag, const std::string& v, size_t maxBytes = kMaxPathBytes) {
  if (v.empty() || v[0] != '/') throw invalid(flag + " needs an absolute path, got \"" + v + "\"");
  if (v.size() > maxBytes) throw invalid(flag + " path is longer than " + std::to_string(maxBytes) + " bytes");
  if (hasControlChars(v)) throw invalid(flag + " path contains control characters");
  if (!validUtf8(v)) throw invalid(flag + " path is not valid UTF-8");
  return v;
}

std::string checkText(const std::string& flag, const std::string& v, size_t maxBytes) {
  if (v.size() > maxBytes) throw invalid(flag + " is longer than " + std::to_string(maxBytes) + " bytes");
  if (hasControlChars(v)) throw invalid(flag + " contains control characters");
  if (!validUtf8(v)) throw invalid(flag + " is not valid UTF-8");
  return v;
}

}  // namespace

std::string hostUsage() {
  return "usage: vmdesk-microvm --kernel PATH | --restore SNAPSHOT  [--cpus N] [--memory MIB] [--initrd PATH]\n"
         "         [--cmdline TEXT] [--disk PATH]... [--disk-ro PATH]... [--paused]\n"
         "         --control SOCK --serial SOCK --serial-log FILE --exit-record FILE --record FILE\n"
         "         [--vm-id ID] [--accel-reason TEXT] [--ready-fd FD]\n"
         "Runs one micro-VM on KVM until the guest ends. See native/README.md for the control protocol.\n";
}

HostArgs parseHostArgs(const std::vector<std::string>& argv) {
  HostArgs a;
  std::set<std::string> seen;
  for (size_t i = 0; i < argv.size(); i++) {
    std::string flag = argv[i], value;
    bool inlineValue = false;
    if (flag.rfind("--", 0) != 0) throw invalid("unexpected argument \"" + flag + "\" (flags start with --)");
    size_t eq = flag.find('=');
    if (eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      inlineValue = true;
    }
    if (flag == "--help" || flag == "--version" || flag == "--paused") {
      if (inlineValue) throw invalid(flag + " takes no value");
      if (flag == "--help") a.help = true;
      else if (flag == "--version") a.version = true;
      else a.paused = true;
      continue;
    }
    static const std::set<std::string> known = {"--cpus", "--memory", "--kernel", "--initrd", "--cmdline", "--disk", "--disk-ro",
                                                "--restore", "--control", "--serial", "--serial-log", "--exit-record", "--record",
                                                "--vm-id", "--accel-reason", "--ready-fd"};
    if (!known.count(flag)) throw invalid("unknown flag " + flag);
    if (!inlineValue) {
      if (i + 1 >= argv.size()) throw invalid(flag + " needs a value");
      value = argv[++i];
    }
    bool repeatable = flag == "--disk" || flag == "--disk-ro";
    if (!repeatable && !seen.insert(flag).second) throw invalid(flag + " is given twice");
    if (flag == "--cpus") a.cpus = uint32_t(parseNumber(flag, value, 1, kMaxVcpus));
    else if (flag == "--memory") a.memoryMiB = parseNumber(flag, value, kMinMemoryMiB, kMaxMemoryMiB);
    else if (flag == "--kernel") a.kernel = checkPath(flag, value);
    else if (flag == "--initrd") a.initrd = checkPath(flag, value);
    else if (flag == "--cmdline") a.cmdline = checkText(flag, value, kMaxCmdlineBytes);
    else if (repeatable) {
      if (a.disks.size() >= kMaxDisks) throw invalid("at most " + std::to_string(kMaxDisks) + " disks");
      a.disks.push_back({checkPath(flag, value), flag == "--disk-ro"});
    }
    else if (flag == "--restore") a.restore = checkPath(flag, value);
    else if (flag == "--control") a.control = checkPath(flag, value, kMaxSocketPathBytes);
    else if (flag == "--serial") a.serial = checkPath(flag, value, kMaxSocketPathBytes);
    else if (flag == "--serial-log") a.serialLog = checkPath(flag, value);
    else if (flag == "--exit-record") a.exitRecord = checkPath(flag, value);
    else if (flag == "--record") a.record = checkPath(flag, value);
    else if (flag == "--vm-id") {
      if (value.empty() || value.size() > 64) throw invalid("--vm-id must be 1 to 64 characters");
      for (char c : value)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-')) throw invalid("--vm-id may contain letters, digits and '-' only");
      a.vmId = value;
    }
    else if (flag == "--accel-reason") a.accelReason = checkText(flag, value, kMaxNoteBytes);
    else if (flag == "--ready-fd") a.readyFd = int(parseNumber(flag, value, 3, 65535));
  }
  if (a.help || a.version) return a;
  if (a.kernel.empty() && a.restore.empty()) throw invalid("give --kernel (boot a bzImage) or --restore (start from a snapshot)");
  if (a.kernel.empty() && (!a.initrd.empty() || seen.count("--cmdline"))) throw invalid("--initrd and --cmdline need --kernel");
  const std::pair<const char*, const std::string*> required[] = {
      {"--control", &a.control}, {"--serial", &a.serial}, {"--serial-log", &a.serialLog}, {"--exit-record", &a.exitRecord}, {"--record", &a.record}};
  for (auto& [name, v] : required)
    if (v->empty()) throw invalid(std::string(name) + " is required");
  if (a.control == a.serial) throw invalid("--control and --serial must be different sockets");
  return a;
}

}  // namespace host
}  // namespace vmdesk
