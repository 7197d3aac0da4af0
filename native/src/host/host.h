// vmdesk-microvm's process: one micro-VM, its control and serial sockets, its logs and records. No Node, no
// daemon needed while it runs: it writes the serial log and the exit record itself.
#pragma once
#include <string>
#include "host/args.h"

namespace vmdesk {
namespace host {

// Runs the micro-VM until its guest ends (or it fails to start); returns the process exit status.
int runHost(const HostArgs& args);

}  // namespace host
}  // namespace vmdesk
