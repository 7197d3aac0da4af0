// /dev/kvm opening and capability probe: tells the user precisely why KVM cannot be used and how to fix it.
#include "kvm/kvm.h"
#include <fcntl.h>
#include <grp.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

namespace vmdesk {

static std::string kvmGroupFix() {
  struct stat st;
  std::string groupName = "kvm";
  if (stat("/dev/kvm", &st) == 0) {
    if (struct group* g = getgrgid(st.st_gid)) groupName = g->gr_name;
  }
  if (groupName == "root") {
    return "/dev/kvm is owned by root:root with no group access: run as root, or add a udev rule such as "
           "KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\" and add your user to the kvm group";
  }
  return "add your user to the '" + groupName + "' group (sudo usermod -aG " + groupName +
         " $USER) and log in again";
}

Fd openKvm() {
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd >= 0) return Fd(fd);
  int err = errno;
  if (err == ENOENT) {
    throw hostError("/dev/kvm does not exist: enable virtualization (VT-x/AMD-V) in the firmware and load the "
                    "kvm_intel or kvm_amd module (sudo modprobe kvm_intel), or, in a VM, enable nested virtualization");
  }
  if (err == EACCES || err == EPERM) {
    throw hostError("permission denied opening /dev/kvm: " + kvmGroupFix());
  }
  errno = err;
  throw sysError("open /dev/kvm", "EHOST");
}

std::string kvmModuleName(bool* paravirtualized) {
  struct stat st;
  *paravirtualized = false;
  if (stat("/sys/module/kvm_pvm", &st) == 0) {
    *paravirtualized = true;
    return "kvm_pvm";
  }
  if (stat("/sys/module/kvm_intel", &st) == 0) return "kvm_intel";
  if (stat("/sys/module/kvm_amd", &st) == 0) return "kvm_amd";
  return "unknown";
}

ProbeResult probeKvm() {
  ProbeResult r;
  r.module = kvmModuleName(&r.paravirtualized);
  Fd kvm;
  try {
    kvm = openKvm();
  } catch (const VmError& e) {
    r.reason = e.what();
    auto colon = r.reason.find(": ");
    r.fix = colon == std::string::npos ? "" : r.reason.substr(colon + 2);
    return r;
  }
  r.apiVersion = ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
  if (r.apiVersion != KVM_API_VERSION) {
    r.reason = "unsupported KVM API version " + std::to_string(r.apiVersion) + " (need " +
               std::to_string(KVM_API_VERSION) + ")";
    return r;
  }
  struct Cap { const char* name; int id; bool required; };
  // Required: what vstate/devices/snapshot call unconditionally. Optional ones change behaviour only.
  const Cap caps[] = {
      {"userMemory", KVM_CAP_USER_MEMORY, true},     {"irqchip", KVM_CAP_IRQCHIP, true},
      {"pit2", KVM_CAP_PIT2, true},                  {"immediateExit", KVM_CAP_IMMEDIATE_EXIT, true},
      {"extCpuid", KVM_CAP_EXT_CPUID, true},         {"setTssAddr", KVM_CAP_SET_TSS_ADDR, true},
      {"mpState", KVM_CAP_MP_STATE, true},           {"vcpuEvents", KVM_CAP_VCPU_EVENTS, false},
      {"xsave", KVM_CAP_XSAVE, false},               {"xcrs", KVM_CAP_XCRS, false},
      {"irqfd", KVM_CAP_IRQFD, false},               {"adjustClock", KVM_CAP_ADJUST_CLOCK, false},
      {"tscControl", KVM_CAP_TSC_CONTROL, false},
  };
  for (const Cap& c : caps) {
    bool has = ioctl(kvm.get(), KVM_CHECK_EXTENSION, c.id) > 0;
    r.caps[c.name] = has;
    if (c.required && !has) r.missing += (r.missing.empty() ? "" : ", ") + std::string(c.name);
  }
  r.recommendedVcpus = ioctl(kvm.get(), KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
  r.maxVcpus = ioctl(kvm.get(), KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
  if (r.maxVcpus <= 0) r.maxVcpus = r.recommendedVcpus > 0 ? r.recommendedVcpus : 4;
  if (!r.missing.empty()) {
    r.reason = "KVM lacks capabilities the micro-VMM needs: " + r.missing;
    return r;
  }
  r.available = true;
  r.reason = "KVM API " + std::to_string(r.apiVersion) + " via " + r.module +
             (r.paravirtualized ? " (paravirtualized/nested: guests run slowly)" : "");
  return r;
}

}  // namespace vmdesk
