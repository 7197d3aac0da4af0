// vmdesk-microvm: one micro-VM per process, as Firecracker runs. The daemon starts it detached (its own
// session) so the guest outlives the daemon; see host.cc for the process and native/README.md for the protocol.
#include <cstdio>
#include <string>
#include <vector>
#include "common.h"
#include "host/args.h"
#include "host/control.h"
#include "host/host.h"

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
