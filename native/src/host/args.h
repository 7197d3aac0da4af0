// The micro-VM executable's command line: its whole configuration, parsed strictly (no config files, no JSON
// on input). Every value is checked here, before anything is opened, so a bad invocation fails with EINVAL and
// a message naming the flag.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "vstate/vm.h"

namespace vmdesk {
namespace host {

// Bounds shared with main/api/schema.ts (LIMITS) and the VMM (kMaxVcpus, kMaxDisks, kMaxMemBytes).
constexpr uint64_t kMinMemoryMiB = 16;
constexpr uint64_t kMaxMemoryMiB = 1024 * 1024;  // 1 TiB, what a snapshot may hold
constexpr size_t kMaxPathBytes = 4095;
constexpr size_t kMaxCmdlineBytes = 2048;
constexpr size_t kMaxSocketPathBytes = 107;  // sizeof(sockaddr_un::sun_path) - 1
constexpr size_t kMaxNoteBytes = 512;

struct HostArgs {
  uint32_t cpus = 1;
  uint64_t memoryMiB = 128;
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  std::vector<DiskConfig> disks;
  std::string restore;  // snapshot to start from; --kernel, --cpus and --memory then serve "reset" only
  bool paused = false;
  std::string control;     // control socket (JSON-lines replies, line requests)
  std::string serial;      // serial socket (raw bytes both ways, one client)
  std::string serialLog;   // guest output, appended
  std::string exitRecord;  // logs/last-exit.json, written atomically when the guest ends
  std::string record;      // runtime record, written once the sockets listen
  std::string vmId;        // copied into the runtime record so a reader can tell whose it is
  std::string accelReason; // copied into the runtime record (why KVM, how fast) for an adopting daemon
  int readyFd = -1;        // one JSON line here once running (or the start error), then closed
  bool help = false;
  bool version = false;
};

// argv without the program name. Throws VmError(EINVAL) naming the offending flag.
HostArgs parseHostArgs(const std::vector<std::string>& argv);
std::string hostUsage();

}  // namespace host
}  // namespace vmdesk
