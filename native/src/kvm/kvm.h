// Access to /dev/kvm: opening it with actionable errors, capability probing, and the accelerator self-test.
#pragma once
#include <map>
#include <string>
#include "common.h"

namespace vmdesk {

struct ProbeResult {
  bool available = false;
  std::string reason;  // why not available, or a one-line summary when it is
  std::string fix;     // what the user can do about it (empty when nothing is needed)
  int apiVersion = -1;
  int maxVcpus = 0;
  int recommendedVcpus = 0;
  std::map<std::string, bool> caps;  // capabilities the micro-VMM relies on
  std::string missing;               // comma-separated required capabilities that are absent
  bool paravirtualized = false;      // kvm_pvm or another nested/paravirtual KVM
  std::string module;                // kvm_intel, kvm_amd, kvm_pvm, or unknown
};

struct SelfTestResult {
  bool ok = false;
  std::string cls;     // hardware | slow | unusable
  std::string reason;
  uint64_t loops = 0;
  uint64_t nanos = 0;  // time inside KVM_RUN for the counted loop
  double loopsPerSecond = 0;
};

// Opens /dev/kvm read-write with close-on-exec; throws VmError(EHOST) naming the fix on failure.
Fd openKvm();
ProbeResult probeKvm();
SelfTestResult runSelfTest();
// Which KVM module backs /dev/kvm (looked up in /sys/module), used to explain slow results.
std::string kvmModuleName(bool* paravirtualized);

}  // namespace vmdesk
