// vmdesk-microvm: one micro-VM per process, as Firecracker runs. The daemon starts it detached (its own
// session) so the guest outlives the daemon; see host.cc for the process and native/README.md for the protocol.
#include <dirent.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
#include "common.h"
#include "host/args.h"
#include "host/control.h"
#include "host/host.h"

namespace {
// Descriptors inherited without close-on-exec (a pipe the daemon's own starter left open, say) would stay
// open for the whole life of the guest and keep their other end waiting: everything but stdio and the ready
// pipe is closed first.
void closeInheritedFds(int keep) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return;
  std::vector<int> fds;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long fd = strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    if (fd > 2 && fd != keep && fd != dirfd(d)) fds.push_back(int(fd));
  }
  closedir(d);
  for (int fd : fds) close(fd);
}
}  // namespace

int main(int argc, char** argv) {
  using namespace vmdesk;
  std::vector<std::string> args(argv + 1, argv + argc);
  host::HostArgs a;
  try {
    a = host::parseHostArgs(args);
  } catch (const VmError& e) {
    fprintf(stderr, "vmdesk-microvm: %s: %s\n%s", e.code.c_str(), e.what(), host::hostUsage().c_str());
    return host::exitStatusFor(e.code);
  }
  closeInheritedFds(a.readyFd);
  if (a.help) {
    fputs(host::hostUsage().c_str(), stdout);
    return 0;
  }
  if (a.version) {
    printf("vmdesk-microvm (control protocol %d)\n", host::kProtocolVersion);
    return 0;
  }
  return host::runHost(a);
}
