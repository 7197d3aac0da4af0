// Accelerator self-test: boots a few bytes of 64-bit code that counts down a register, and times it.
// The loop rate separates real hardware virtualization from nested/paravirtual KVM (kvm_pvm), which runs
// the same loop orders of magnitude slower.
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include "arch/x86_boot.h"
#include "kvm/kvm.h"

namespace vmdesk {

namespace {

// A bare-metal loop at 2.5 GHz does ~1e9 iterations/s; hardware KVM gets close. Anything under this
// threshold is a VM that still works but is too slow to boot a general-purpose kernel promptly.
constexpr double kHardwareLoopsPerSecond = 1e8;
constexpr uint16_t kDonePort = 0x10;

struct TinyVm {
  Fd vm, vcpu;
  kvm_run* run = nullptr;
  size_t runSize = 0;
  GuestMemory mem;
  ~TinyVm() { if (run) munmap(run, runSize); }
};

void setupTinyVm(int kvm, TinyVm& t, uint64_t loops) {
  t.vm.reset(ioctl(kvm, KVM_CREATE_VM, 0));
  if (!t.vm.valid()) throw sysError("KVM_CREATE_VM", "EHOST");
  t.mem.allocate(2 << 20);
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.guest_phys_addr = 0;
  region.memory_size = t.mem.total();
  region.userspace_addr = reinterpret_cast<uint64_t>(t.mem.regions()[0].host);
  if (ioctl(t.vm.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0) throw sysError("KVM_SET_USER_MEMORY_REGION", "EHOST");
  x86::writeLongModeTables(t.mem);
  // mov rcx, loops ; 1: dec rcx ; jnz 1b ; out 0x10, al ; hlt
  uint8_t code[] = {0x48, 0xb9, 0, 0, 0, 0, 0, 0, 0, 0, 0x48, 0xff, 0xc9, 0x75, 0xfb, 0xe6, uint8_t(kDonePort), 0xf4};
  std::memcpy(code + 2, &loops, 8);
  std::memcpy(t.mem.ptr(0x1000, sizeof code), code, sizeof code);

  t.vcpu.reset(ioctl(t.vm.get(), KVM_CREATE_VCPU, 0));
  if (!t.vcpu.valid()) throw sysError("KVM_CREATE_VCPU", "EHOST");
  int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (sz <= 0) throw sysError("KVM_GET_VCPU_MMAP_SIZE", "EHOST");
  t.runSize = size_t(sz);
  void* p = mmap(nullptr, t.runSize, PROT_READ | PROT_WRITE, MAP_SHARED, t.vcpu.get(), 0);
  if (p == MAP_FAILED) throw sysError("mmap kvm_run", "EHOST");
  t.run = static_cast<kvm_run*>(p);
  kvm_sregs sregs;
  if (ioctl(t.vcpu.get(), KVM_GET_SREGS, &sregs) < 0) throw sysError("KVM_GET_SREGS", "EHOST");
  x86::longModeSregs(sregs);
  if (ioctl(t.vcpu.get(), KVM_SET_SREGS, &sregs) < 0) throw sysError("KVM_SET_SREGS", "EHOST");
  kvm_regs regs;
  x86::bootRegs(regs, 0x1000);
  if (ioctl(t.vcpu.get(), KVM_SET_REGS, &regs) < 0) throw sysError("KVM_SET_REGS", "EHOST");
}

// Runs until the OUT to kDonePort; returns nanoseconds spent inside KVM_RUN.
uint64_t runTinyVm(TinyVm& t) {
  uint64_t spent = 0;
  for (int exits = 0; exits < 100000; exits++) {
    uint64_t t0 = monotonicNanos();
    int rc = ioctl(t.vcpu.get(), KVM_RUN, 0);
    spent += monotonicNanos() - t0;
    if (rc < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      throw sysError("KVM_RUN", "EHOST");
    }
    switch (t.run->exit_reason) {
      case KVM_EXIT_IO:
        if (t.run->io.port == kDonePort) return spent;
        break;
      case KVM_EXIT_INTR:
        break;
      default:
        throw hostError("self-test guest stopped with KVM exit reason " + std::to_string(t.run->exit_reason));
    }
  }
  throw hostError("self-test guest never finished");
}

}  // namespace

SelfTestResult runSelfTest() {
  SelfTestResult r;
  bool pv = false;
  std::string module = kvmModuleName(&pv);
  try {
    Fd kvm = openKvm();
    // Calibrate: a short run sizes the timed run to ~50 ms whatever the speed, so slow hosts stay quick.
    uint64_t loops = 20000;
    for (int attempt = 0; attempt < 4; attempt++) {
      TinyVm t;
      setupTinyVm(kvm.get(), t, loops);
      uint64_t ns = runTinyVm(t);
      r.loops = loops;
      r.nanos = ns ? ns : 1;
      if (ns >= 20000000ull || attempt == 3) break;
      double rate = double(loops) * 1e9 / double(r.nanos);
      uint64_t next = uint64_t(rate * 0.05);
      if (next <= loops) break;
      loops = std::min<uint64_t>(next, 2000000000ull);
    }
    r.loopsPerSecond = double(r.loops) * 1e9 / double(r.nanos);
    r.ok = true;
    char rate[64];
    snprintf(rate, sizeof rate, "%.3g loops/s", r.loopsPerSecond);
    if (r.loopsPerSecond >= kHardwareLoopsPerSecond && !pv) {
      r.cls = "hardware";
      r.reason = std::string("KVM runs guest code at hardware speed (") + rate + ", " + module + ")";
    } else {
      r.cls = "slow";
      r.reason = std::string("KVM works but guest code runs slowly (") + rate + (pv ? ", paravirtualized kvm_pvm: nested virtualization" : ", probably nested virtualization") + "); tiny guests run, general-purpose kernels may not";
    }
  } catch (const VmError& e) {
    r.ok = false;
    r.cls = "unusable";
    r.reason = e.what();
  }
  return r;
}

}  // namespace vmdesk
