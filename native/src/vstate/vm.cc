// VM and vCPU lifecycle on KVM. Each vCPU runs KVM_RUN on its own thread; pause/stop requests are delivered
// by a real-time signal that sets kvm_run.immediate_exit, so a vCPU never misses a request that races with
// entering the guest.
#include "vstate/vm.h"
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <cstdio>
#include "kvm/kvm.h"
#include "kvm/kvm_compat.h"
#include "snapshot/snapshot.h"

namespace vmdesk {

namespace {

thread_local kvm_run* tlsRun = nullptr;
thread_local int tlsVcpuId = -1;  // which vCPU a device callback runs on

int kickSignal() { return SIGRTMIN + 2; }  // Node uses SIGUSR1 for its inspector; RT signals are free

void onKick(int) {
  if (tlsRun) tlsRun->immediate_exit = 1;
}

void installKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = onKick;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(kickSignal(), &sa, nullptr);
  });
}

void xioctl(int fd, unsigned long req, void* arg, const char* name) {
  if (ioctl(fd, req, arg) < 0) throw sysError(name);
}

constexpr uint32_t kMsrIa32MiscEnable = 0x1a0;
constexpr uint64_t kTssAddr = 0xfffbd000;
constexpr uint64_t kIdentityMapAddr = 0xfffbc000;

std::string fmtRegs(const kvm_regs& r, const kvm_sregs& s) {
  char buf[512];
  snprintf(buf, sizeof buf,
           "rip=%016llx rsp=%016llx rflags=%08llx rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx rsi=%016llx rdi=%016llx "
           "cr0=%08llx cr3=%016llx cr4=%08llx efer=%llx cs=%04x",
           (unsigned long long)r.rip, (unsigned long long)r.rsp, (unsigned long long)r.rflags, (unsigned long long)r.rax,
           (unsigned long long)r.rbx, (unsigned long long)r.rcx, (unsigned long long)r.rdx, (unsigned long long)r.rsi,
           (unsigned long long)r.rdi, (unsigned long long)s.cr0, (unsigned long long)s.cr3, (unsigned long long)s.cr4,
           (unsigned long long)s.efer, s.cs.selector);
  return buf;
}

std::vector<kvm_cpuid_entry2> supportedCpuid(int kvm) {
  for (uint32_t n = 128; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(KvmCpuid2Header) + n * sizeof(kvm_cpuid_entry2));
    auto* c = reinterpret_cast<KvmCpuid2Header*>(buf.data());
    auto* entries = reinterpret_cast<kvm_cpuid_entry2*>(c + 1);
    c->nent = n;
    if (ioctl(kvm, kKvmGetSupportedCpuid, c) == 0) return std::vector<kvm_cpuid_entry2>(entries, entries + c->nent);
    if (errno != E2BIG) throw sysError("KVM_GET_SUPPORTED_CPUID");
  }
  throw engineError("KVM_GET_SUPPORTED_CPUID: too many entries");
}

void setCpuid(int vcpu, const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint8_t> buf(sizeof(KvmCpuid2Header) + entries.size() * sizeof(kvm_cpuid_entry2));
  auto* c = reinterpret_cast<KvmCpuid2Header*>(buf.data());
  c->nent = uint32_t(entries.size());
  std::memcpy(c + 1, entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  xioctl(vcpu, kKvmSetCpuid2, c, "KVM_SET_CPUID2");
}

// MSRs KVM reports as saveable. Some of them fail to read on some hosts; get/set below skip those.
std::vector<kvm_msr_entry> msrIndexList(int kvm) {
  KvmMsrListHeader probe{};
  probe.nmsrs = 0;
  std::vector<kvm_msr_entry> out;
  std::vector<uint32_t> indices;
  // The list's size comes back with E2BIG; some KVM flavours (kvm_pvm) refuse the call outright, and then
  // the architectural MSRs a 64-bit guest depends on are saved instead.
  if (ioctl(kvm, kKvmGetMsrIndexList, &probe) < 0 && errno == E2BIG && probe.nmsrs > 0) {
    std::vector<uint8_t> buf(sizeof(KvmMsrListHeader) + probe.nmsrs * 4);
    auto* l = reinterpret_cast<KvmMsrListHeader*>(buf.data());
    l->nmsrs = probe.nmsrs;
    auto* idx = reinterpret_cast<uint32_t*>(l + 1);
    if (ioctl(kvm, kKvmGetMsrIndexList, l) == 0) indices.assign(idx, idx + l->nmsrs);
  }
  if (indices.empty()) {
    indices = {0x10 /* TSC */, 0x174, 0x175, 0x176 /* SYSENTER */, 0x1a0 /* MISC_ENABLE */, 0x277 /* PAT */,
               0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084 /* STAR LSTAR CSTAR SFMASK */,
               0xc0000102 /* KERNEL_GS_BASE */, 0xc0000103 /* TSC_AUX */, 0x4b564d00, 0x4b564d01 /* kvmclock */,
               0x4b564d02, 0x4b564d03, 0x4b564d04 /* async pf, steal time, pv eoi */, 0x6e0 /* TSC_DEADLINE */};
  }
  for (uint32_t i = 0; i < indices.size(); i++) {
    kvm_msr_entry e{};
    e.index = indices[i];
    out.push_back(e);
  }
  return out;
}

// KVM_GET/SET_MSRS stop at the first MSR they cannot handle and return how many they did; retry past it.
std::vector<kvm_msr_entry> msrTransfer(int vcpu, std::vector<kvm_msr_entry> list, bool set) {
  std::vector<kvm_msr_entry> done;
  size_t pos = 0;
  while (pos < list.size()) {
    size_t n = list.size() - pos;
    std::vector<uint8_t> buf(sizeof(KvmMsrsHeader) + n * sizeof(kvm_msr_entry));
    auto* m = reinterpret_cast<KvmMsrsHeader*>(buf.data());
    auto* entries = reinterpret_cast<kvm_msr_entry*>(m + 1);
    m->nmsrs = uint32_t(n);
    std::memcpy(entries, list.data() + pos, n * sizeof(kvm_msr_entry));
    int r = ioctl(vcpu, set ? kKvmSetMsrs : kKvmGetMsrs, m);
    if (r < 0) throw sysError(set ? "KVM_SET_MSRS" : "KVM_GET_MSRS");
    for (int i = 0; i < r; i++) done.push_back(entries[i]);
    pos += size_t(r) + 1;  // skip the one that failed
  }
  return done;
}

// The fixed-size records a restore reads; captureState() writes exactly these (optional ones when KVM has them).
struct RecordSpec {
  const char* name;
  size_t size;
  bool required;
};
const RecordSpec kVmRecords[] = {
    {"kernel", sizeof(x86::KernelInfo), true}, {"irqchip0", sizeof(kvm_irqchip), true},
    {"irqchip1", sizeof(kvm_irqchip), true},   {"irqchip2", sizeof(kvm_irqchip), true},
    {"pit", sizeof(kvm_pit_state2), true},     {"clock", sizeof(kvm_clock_data), false},
};
const RecordSpec kVcpuRecords[] = {
    {"regs", sizeof(kvm_regs), true},        {"sregs", sizeof(kvm_sregs), true},     {"lapic", sizeof(kvm_lapic_state), true},
    {"mpstate", sizeof(kvm_mp_state), true}, {"xsave", sizeof(KvmXsave), false},     {"fpu", sizeof(kvm_fpu), false},
    {"xcrs", sizeof(kvm_xcrs), false},       {"events", sizeof(kvm_vcpu_events), false}, {"debugregs", sizeof(kvm_debugregs), false},
};
// Far above what KVM reports on any host (it caps CPUID at 256 entries); anything larger is corruption.
constexpr size_t kMaxCpuidEntries = 4096;
constexpr size_t kMaxMsrEntries = 4096;

// "cpus memBytes disks" exactly as captureState() writes it: decimal numbers, single spaces, nothing else.
bool parseConfig(const std::string& s, uint64_t out[3]) {
  size_t pos = 0;
  for (int i = 0; i < 3; i++) {
    if (i > 0 && (pos >= s.size() || s[pos++] != ' ')) return false;
    size_t start = pos;
    uint64_t v = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      uint64_t d = uint64_t(s[pos++] - '0');
      if (v > (UINT64_MAX - d) / 10) return false;
      v = v * 10 + d;
    }
    if (pos == start) return false;
    out[i] = v;
  }
  return pos == s.size();
}

// An array record (cpuid, msrs) as a vector, after checking it holds whole entries and not absurdly many.
template <typename T>
std::vector<T> arrayRecord(const StateBlob& b, const std::string& key, size_t minCount, size_t maxCount) {
  const std::string& v = b.get(key);
  if (v.size() % sizeof(T) != 0 || v.size() / sizeof(T) < minCount || v.size() / sizeof(T) > maxCount) {
    throw invalid("snapshot record '" + key + "' has " + std::to_string(v.size()) + " bytes: not " + std::to_string(minCount) + " to " +
                  std::to_string(maxCount) + " entries of " + std::to_string(sizeof(T)));
  }
  std::vector<T> out(v.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), v.data(), v.size());
  return out;
}

void checkRecord(const StateBlob& b, const std::string& key, size_t size, bool required) {
  if (!b.has(key)) {
    if (required) throw invalid("snapshot is missing record '" + key + "'");
    return;
  }
  size_t got = b.get(key).size();
  if (got != size) throw invalid("snapshot record '" + key + "' has size " + std::to_string(got) + ", expected " + std::to_string(size));
}

}  // namespace

RestoreConfig checkSnapshotRecords(const OpenedSnapshot& snap, const std::string& path, const std::vector<DiskConfig>* diskOverride) {
  const StateBlob& b = snap.state;
  uint64_t cfg[3];
  if (!parseConfig(b.get("config"), cfg)) throw invalid("snapshot " + path + " has an unreadable configuration record");
  RestoreConfig out;
  if (cfg[0] < 1 || cfg[0] > kMaxVcpus) throw invalid("snapshot " + path + " is corrupt: " + std::to_string(cfg[0]) + " vCPUs (1 to " + std::to_string(kMaxVcpus) + ")");
  if (cfg[1] != snap.header.memBytes) throw invalid("snapshot " + path + " is corrupt: its configuration and header disagree on the memory size");
  if (cfg[2] > kMaxDisks) throw invalid("snapshot " + path + " is corrupt: " + std::to_string(cfg[2]) + " disks (at most " + std::to_string(kMaxDisks) + ")");
  out.cpus = uint32_t(cfg[0]);
  out.memBytes = cfg[1];
  for (uint64_t i = 0; i < cfg[2]; i++) {
    std::string k = "disk" + std::to_string(i);
    const std::string& p = b.get(k + ".path");
    const std::string& ro = b.get(k + ".ro");
    if (p.empty() || p.find('\0') != std::string::npos) throw invalid("snapshot " + path + " is corrupt: record '" + k + ".path' is not a path");
    if (ro != "0" && ro != "1") throw invalid("snapshot " + path + " is corrupt: record '" + k + ".ro' is not 0 or 1");
    checkRecord(b, k + ".state", sizeof(VirtioBlkState), true);
    out.disks.push_back({p, ro == "1"});
  }
  if (diskOverride && !diskOverride->empty()) {
    if (diskOverride->size() != out.disks.size()) throw invalid("the snapshot has " + std::to_string(out.disks.size()) + " disks, " + std::to_string(diskOverride->size()) + " were given");
    out.disks = *diskOverride;
  }
  b.get("serial");  // contents are checked by the device that loads them
  for (const RecordSpec& r : kVmRecords) checkRecord(b, r.name, r.size, r.required);
  for (uint32_t i = 0; i < out.cpus; i++) {
    std::string p = "vcpu" + std::to_string(i) + ".";
    for (const RecordSpec& r : kVcpuRecords) checkRecord(b, p + r.name, r.size, r.required);
    if (!b.has(p + "xsave") && !b.has(p + "fpu")) throw invalid("snapshot is missing record '" + p + "xsave' (or '" + p + "fpu')");
    arrayRecord<kvm_cpuid_entry2>(b, p + "cpuid", 1, kMaxCpuidEntries);
    arrayRecord<kvm_msr_entry>(b, p + "msrs", 0, kMaxMsrEntries);
  }
  return out;
}

StateBlob syntheticSnapshotState(uint32_t cpus, uint64_t memBytes, const std::vector<DiskConfig>& disks) {
  StateBlob b;
  b.put("config", std::to_string(cpus) + " " + std::to_string(memBytes) + " " + std::to_string(disks.size()));
  for (size_t i = 0; i < disks.size(); i++) {
    std::string k = "disk" + std::to_string(i);
    b.put(k + ".path", disks[i].path);
    b.put(k + ".ro", disks[i].readOnly ? "1" : "0");
    b.putPod(k + ".state", VirtioBlkState{});
  }
  b.put("serial", Serial(nullptr, nullptr).saveState());
  b.put("i8042", I8042(nullptr, nullptr).saveState());
  for (const RecordSpec& r : kVmRecords) b.put(r.name, std::string(r.size, '\0'));
  for (uint32_t i = 0; i < cpus; i++) {
    std::string p = "vcpu" + std::to_string(i) + ".";
    for (const RecordSpec& r : kVcpuRecords)
      if (std::strcmp(r.name, "fpu") != 0) b.put(p + r.name, std::string(r.size, '\0'));
    b.put(p + "cpuid", std::string(sizeof(kvm_cpuid_entry2), '\0'));
    b.put(p + "msrs", std::string(2 * sizeof(kvm_msr_entry), '\0'));
  }
  return b;
}

std::unique_ptr<Vm> Vm::boot(const VmOptions& o, VmCallbacks cb) {
  if (o.cpus < 1) throw invalid("a VM needs at least one vCPU");
  if (o.memBytes < kMinMemBytes) throw invalid("a VM needs at least 16 MiB of memory");
  std::unique_ptr<Vm> vm(new Vm());
  vm->cb_ = std::move(cb);
  vm->kvm_ = openKvm();
  int maxVcpus = ioctl(vm->kvm_.get(), KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
  if (maxVcpus > 0 && o.cpus > uint32_t(maxVcpus)) throw invalid("this host's KVM allows at most " + std::to_string(maxVcpus) + " vCPUs");
  vm->createVm(o.memBytes, false, -1, 0);
  vm->createDevices(o.disks);
  x86::BootParams bp = o.boot;
  for (auto& d : vm->disks_) bp.cmdline += (bp.cmdline.empty() ? "" : " ") + d->cmdlineArg();
  vm->kernel_ = x86::loadLinux(vm->mem_, bp);
  x86::writeLongModeTables(vm->mem_);
  x86::writeMpTable(vm->mem_, o.cpus);
  for (uint32_t i = 0; i < o.cpus; i++) vm->createVcpu(i, o.cpus);
  vm->setupBootVcpu(*vm->vcpus_[0], vm->kernel_.entry64);
  return vm;
}

void Vm::createVm(uint64_t memBytes, bool restoring, int memFd, uint64_t memOffset) {
  installKickHandler();
  vm_.reset(ioctl(kvm_.get(), KVM_CREATE_VM, 0));
  if (!vm_.valid()) throw sysError("KVM_CREATE_VM", "EHOST");
  int sz = ioctl(kvm_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (sz <= 0) throw sysError("KVM_GET_VCPU_MMAP_SIZE");
  runSize_ = size_t(sz);
  if (ioctl(vm_.get(), KVM_SET_TSS_ADDR, kTssAddr) < 0) throw sysError("KVM_SET_TSS_ADDR");
  uint64_t idmap = kIdentityMapAddr;
  ioctl(vm_.get(), KVM_SET_IDENTITY_MAP_ADDR, &idmap);  // only meaningful (and only supported) on Intel
  // In-kernel PIC/IOAPIC/LAPIC and PIT: interrupts and a monotonic timer without userspace round trips.
  xioctl(vm_.get(), KVM_CREATE_IRQCHIP, nullptr, "KVM_CREATE_IRQCHIP");
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  xioctl(vm_.get(), KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2");

  if (restoring) {
    mem_.mapPrivate(memFd, memOffset, memBytes);
    anonymousMemory_ = false;
  } else {
    mem_.allocate(memBytes);
  }
  uint32_t slot = 0;
  for (const MemRegion& r : mem_.regions()) {
    kvm_userspace_memory_region region{};
    region.slot = slot++;
    region.guest_phys_addr = r.gpa;
    region.memory_size = r.size;
    region.userspace_addr = reinterpret_cast<uint64_t>(r.host);
    xioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");
  }
  msrList_ = msrIndexList(kvm_.get());
}

void Vm::createDevices(const std::vector<DiskConfig>& disks) {
  serial_ = std::make_unique<Serial>(
      [this](const uint8_t* d, size_t n) { if (cb_.serial) cb_.serial(d, n); },
      [this](uint32_t gsi) { pulseIrq(gsi); });
  if (cb_.serialSpace) serial_->setSpaceCallback(cb_.serialSpace);
  i8042_ = std::make_unique<I8042>([this] {
    ExitInfo e;
    e.reason = "guest-poweroff";
    e.detail = "the guest reset the CPU through the i8042 controller (a micro-VM powers off on reset)";
    e.vcpu = tlsVcpuId;
    requestExit(e);
  }, [this](uint32_t gsi) { pulseIrq(gsi); });
  if (disks.size() > 8) throw invalid("at most 8 disks");
  for (size_t i = 0; i < disks.size(); i++) {
    disks_.push_back(std::make_unique<VirtioBlk>(mem_, disks[i].path, disks[i].readOnly,
                                                 VirtioBlk::kMmioBase + i * VirtioBlk::kMmioSize,
                                                 VirtioBlk::kFirstIrq + uint32_t(i), [this](uint32_t gsi) { pulseIrq(gsi); }));
  }
}

void Vm::createVcpu(uint32_t id, uint32_t count) {
  auto v = std::make_unique<Vcpu>();
  v->id = int(id);
  v->fd.reset(ioctl(vm_.get(), KVM_CREATE_VCPU, id));
  if (!v->fd.valid()) throw sysError("KVM_CREATE_VCPU " + std::to_string(id));
  void* p = mmap(nullptr, runSize_, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd.get(), 0);
  if (p == MAP_FAILED) throw sysError("mmap kvm_run");
  v->run = static_cast<kvm_run*>(p);
  v->cpuid = supportedCpuid(kvm_.get());
  for (auto& e : v->cpuid) {
    if (e.function == 1) {
      e.ebx = (e.ebx & 0x0000ffff) | (id << 24) | ((count & 0xff) << 16);  // initial APIC id, logical count
      e.ecx |= 1u << 31;                                                   // running under a hypervisor
    }
    if (e.function == 0xb || e.function == 0x1f) e.edx = id;  // x2APIC id
  }
  setCpuid(v->fd.get(), v->cpuid);
  // As firmware leaves it ("virtual wire" mode): APIC software-enabled, LINT0 = ExtINT so the legacy PIC
  // reaches the CPU, LINT1 = NMI. Kernels reprogram this; simple guests can use the PIC straight away.
  kvm_lapic_state lapic;
  xioctl(v->fd.get(), KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
  auto setReg = [&](size_t off, uint32_t val) { std::memcpy(lapic.regs + off, &val, 4); };
  setReg(0xf0, 0x1ff);   // spurious vector 0xff, APIC enabled
  setReg(0x350, 0x700);  // LVT LINT0: ExtINT, unmasked
  setReg(0x360, 0x400);  // LVT LINT1: NMI, unmasked
  xioctl(v->fd.get(), KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
  std::vector<kvm_msr_entry> msrs(1);
  msrs[0].index = kMsrIa32MiscEnable;
  msrs[0].data = 1;  // fast string operations, as firmware leaves it
  msrTransfer(v->fd.get(), msrs, true);
  vcpus_.push_back(std::move(v));
}

void Vm::setupBootVcpu(Vcpu& v, uint64_t entry) {
  kvm_sregs sregs;
  xioctl(v.fd.get(), KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
  x86::longModeSregs(sregs);
  xioctl(v.fd.get(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
  kvm_regs regs;
  x86::bootRegs(regs, entry);
  xioctl(v.fd.get(), KVM_SET_REGS, &regs, "KVM_SET_REGS");
  kvm_fpu fpu{};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  xioctl(v.fd.get(), KVM_SET_FPU, &fpu, "KVM_SET_FPU");
}

Vm::~Vm() {
  ExitInfo e;
  e.reason = "stopped";
  e.detail = "the VM object was destroyed";
  requestExit(e);
  join();
  for (auto& v : vcpus_)
    if (v->run) munmap(v->run, runSize_);
}

void Vm::start(bool paused) {
  std::lock_guard<std::mutex> g(mu_);
  if (started_) throw VmError("ESTATE", "the VM was already started");
  started_ = true;
  pauseRequested_ = paused;
  live_ = uint32_t(vcpus_.size());
  for (auto& v : vcpus_) {
    Vcpu* vp = v.get();
    v->thread = std::thread([this, vp] { vcpuLoop(*vp); });
  }
}

void Vm::kickAll() {
  for (auto& v : vcpus_)
    if (v->thread.joinable()) pthread_kill(v->thread.native_handle(), kickSignal());
}

void Vm::pause() {
  std::unique_lock<std::mutex> lk(mu_);
  if (!started_ || exiting_) throw VmError("ESTATE", "the VM is not running");
  pauseRequested_ = true;
  kickAll();
  // vCPUs acknowledge within one KVM_RUN return (the kick interrupts the guest), so this wait is short.
  cv_.wait(lk, [&] { return paused_ == live_ || exiting_; });
}

void Vm::resume() {
  std::lock_guard<std::mutex> g(mu_);
  if (!started_ || exiting_) throw VmError("ESTATE", "the VM is not running");
  pauseRequested_ = false;
  cv_.notify_all();
}

std::string Vm::state() const {
  std::lock_guard<std::mutex> g(mu_);
  if (exiting_) return live_ == 0 ? "stopped" : "stopping";
  if (!started_) return "created";
  if (pauseRequested_) return paused_ == live_ ? "paused" : "pausing";
  return "running";
}

void Vm::requestExit(const ExitInfo& info) {
  std::lock_guard<std::mutex> g(mu_);
  if (exiting_) return;
  exiting_ = true;
  exitInfo_ = info;
  cv_.notify_all();
  kickAll();
  if (!started_ || live_ == 0) {
    // Nothing runs: report at once (no vCPU thread will do it).
    if (!exitReported_ && started_) {
      exitReported_ = true;
    }
  }
}

void Vm::join() {
  for (auto& v : vcpus_)
    if (v->thread.joinable() && v->thread.get_id() != std::this_thread::get_id()) v->thread.join();
}

void Vm::pulseIrq(uint32_t gsi) {
  kvm_irq_level l{};
  l.irq = gsi;
  l.level = 1;
  ioctl(vm_.get(), KVM_IRQ_LINE, &l);
  l.level = 0;
  ioctl(vm_.get(), KVM_IRQ_LINE, &l);
}

void Vm::vcpuLoop(Vcpu& v) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kickSignal());
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  tlsRun = v.run;
  tlsVcpuId = v.id;
  char name[16];
  snprintf(name, sizeof name, "vmdesk-vcpu%d", v.id);
  pthread_setname_np(pthread_self(), name);

  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      if (exiting_) break;
      if (pauseRequested_) {
        lk.unlock();
        // An exit to userspace (port or MMIO read) is only complete once KVM_RUN is entered again; with
        // immediate_exit set it finishes the instruction and returns without running guest code, so the
        // state a snapshot reads is consistent.
        v.run->immediate_exit = 1;
        ioctl(v.fd.get(), KVM_RUN, 0);
        v.run->immediate_exit = 0;
        lk.lock();
        paused_++;
        cv_.notify_all();
        cv_.wait(lk, [&] { return !pauseRequested_ || exiting_; });
        paused_--;
        continue;
      }
    }
    int rc = ioctl(v.fd.get(), KVM_RUN, 0);
    v.run->immediate_exit = 0;
    if (rc < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      ExitInfo e;
      e.reason = "crashed";
      e.detail = std::string("KVM_RUN failed on vCPU ") + std::to_string(v.id) + ": " + std::strerror(errno);
      e.vcpu = v.id;
      requestExit(e);
      continue;
    }
    if (!handleExit(v)) continue;
  }

  // Record where this vCPU stopped (complete any pending I/O first, as for a pause).
  v.run->immediate_exit = 1;
  ioctl(v.fd.get(), KVM_RUN, 0);
  v.run->immediate_exit = 0;
  ioctl(v.fd.get(), KVM_GET_REGS, &v.finalRegs);
  ioctl(v.fd.get(), KVM_GET_SREGS, &v.finalSregs);

  ExitInfo report;
  bool last = false;
  {
    std::lock_guard<std::mutex> g(mu_);
    live_--;
    cv_.notify_all();
    if (live_ == 0 && !exitReported_) {
      exitReported_ = true;
      last = true;
      report = exitInfo_;
    }
  }
  if (last) {
    Vcpu& src = *vcpus_[report.vcpu >= 0 ? size_t(report.vcpu) : 0];
    report.regs = src.finalRegs;
    report.sregs = src.finalSregs;
    report.hasRegs = true;
    if (report.reason == "crashed") report.detail += " [" + fmtRegs(report.regs, report.sregs) + "]";
    if (cb_.exit) cb_.exit(report);
  }
  tlsRun = nullptr;
}

// Returns true when the exit was handled and the vCPU should re-enter the guest.
bool Vm::handleExit(Vcpu& v) {
  kvm_run* run = v.run;
  ExitInfo e;
  e.vcpu = v.id;
  switch (run->exit_reason) {
    case KVM_EXIT_IO: handleIo(v); return true;
    case KVM_EXIT_MMIO: handleMmio(v); return true;
    case KVM_EXIT_INTR: return true;
    case KVM_EXIT_HLT:
      e.reason = "guest-poweroff";
      e.detail = "vCPU " + std::to_string(v.id) + " halted with interrupts disabled";
      break;
    case KVM_EXIT_SHUTDOWN:
      e.reason = "crashed";
      e.detail = "triple fault on vCPU " + std::to_string(v.id);
      break;
    case KVM_EXIT_SYSTEM_EVENT:
      e.reason = "guest-poweroff";
      e.detail = run->system_event.type == KVM_SYSTEM_EVENT_RESET ? "the guest requested a reset" : "the guest powered off";
      break;
    case KVM_EXIT_INTERNAL_ERROR:
      e.reason = "crashed";
      e.detail = "KVM internal error (suberror " + std::to_string(run->internal.suberror) + ") on vCPU " + std::to_string(v.id);
      break;
    case KVM_EXIT_FAIL_ENTRY:
      e.reason = "crashed";
      e.detail = "VM entry failed (hardware reason " + std::to_string(run->fail_entry.hardware_entry_failure_reason) + ")";
      break;
    default:
      e.reason = "crashed";
      e.detail = "unhandled KVM exit reason " + std::to_string(run->exit_reason) + " on vCPU " + std::to_string(v.id);
      break;
  }
  requestExit(e);
  return false;
}

void Vm::handleIo(Vcpu& v) {
  kvm_run* run = v.run;
  uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
  uint16_t port = run->io.port;
  for (uint32_t c = 0; c < run->io.count; c++, data += run->io.size) {
    bool out = run->io.direction == KVM_EXIT_IO_OUT;
    if (port >= Serial::kBase && port < Serial::kBase + 8) {
      if (out) serial_->write(port - Serial::kBase, data[0]);
      else data[0] = serial_->read(port - Serial::kBase);
    } else if (port == I8042::kData || port == I8042::kCommand) {
      if (out) i8042_->write(port, data[0]);
      else data[0] = i8042_->read(port);
    } else if (!out) {
      std::memset(data, 0xff, run->io.size);  // nothing there: an open bus reads all ones
    }
  }
}

void Vm::handleMmio(Vcpu& v) {
  kvm_run* run = v.run;
  uint64_t addr = run->mmio.phys_addr;
  // KVM never reports more than the 8 bytes mmio.data holds; the devices index that buffer by this length.
  uint32_t len = run->mmio.len < sizeof run->mmio.data ? run->mmio.len : uint32_t(sizeof run->mmio.data);
  for (auto& d : disks_) {
    if (addr >= d->base() && addr < d->base() + VirtioBlk::kMmioSize) {
      if (run->mmio.is_write) d->write(addr - d->base(), run->mmio.data, len);
      else d->read(addr - d->base(), run->mmio.data, len);
      return;
    }
  }
  if (!run->mmio.is_write) std::memset(run->mmio.data, 0xff, sizeof run->mmio.data);
}

kvm_regs Vm::regs(uint32_t cpu) {
  if (cpu >= vcpus_.size()) throw invalid("no vCPU " + std::to_string(cpu));
  {
    std::lock_guard<std::mutex> g(mu_);
    if (exiting_ && live_ == 0) return vcpus_[cpu]->finalRegs;
    if (started_ && !(pauseRequested_ && paused_ == live_)) throw VmError("ESTATE", "registers can only be read while the VM is paused or stopped");
  }
  kvm_regs r;
  xioctl(vcpus_[cpu]->fd.get(), KVM_GET_REGS, &r, "KVM_GET_REGS");
  return r;
}

// ---- snapshot ----

void Vm::captureState(StateBlob& b) {
  char cfg[128];
  snprintf(cfg, sizeof cfg, "%u %llu %zu", cpus(), (unsigned long long)mem_.total(), disks_.size());
  b.put("config", std::string(cfg));
  for (size_t i = 0; i < disks_.size(); i++) {
    std::string k = "disk" + std::to_string(i);
    b.put(k + ".path", disks_[i]->path());
    b.put(k + ".ro", disks_[i]->readOnly() ? "1" : "0");
    b.put(k + ".state", disks_[i]->saveState());
  }
  b.put("serial", serial_->saveState());
  b.put("i8042", i8042_->saveState());
  b.putPod("kernel", kernel_);
  for (int chip = 0; chip < 3; chip++) {
    kvm_irqchip c{};
    c.chip_id = uint32_t(chip);
    xioctl(vm_.get(), KVM_GET_IRQCHIP, &c, "KVM_GET_IRQCHIP");
    b.putPod("irqchip" + std::to_string(chip), c);
  }
  kvm_pit_state2 pit{};
  xioctl(vm_.get(), KVM_GET_PIT2, &pit, "KVM_GET_PIT2");
  b.putPod("pit", pit);
  kvm_clock_data clock{};
  if (ioctl(vm_.get(), KVM_GET_CLOCK, &clock) == 0) b.putPod("clock", clock);

  for (auto& v : vcpus_) {
    std::string p = "vcpu" + std::to_string(v->id) + ".";
    int fd = v->fd.get();
    kvm_regs regs; xioctl(fd, KVM_GET_REGS, &regs, "KVM_GET_REGS"); b.putPod(p + "regs", regs);
    kvm_sregs sregs; xioctl(fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS"); b.putPod(p + "sregs", sregs);
    KvmXsave xs{};
    if (ioctl(fd, kKvmGetXsave, &xs) == 0) b.putPod(p + "xsave", xs);
    else { kvm_fpu fpu; xioctl(fd, KVM_GET_FPU, &fpu, "KVM_GET_FPU"); b.putPod(p + "fpu", fpu); }
    kvm_xcrs xcrs{};
    if (ioctl(fd, KVM_GET_XCRS, &xcrs) == 0) b.putPod(p + "xcrs", xcrs);
    kvm_lapic_state lapic; xioctl(fd, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC"); b.putPod(p + "lapic", lapic);
    kvm_mp_state mp; xioctl(fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE"); b.putPod(p + "mpstate", mp);
    kvm_vcpu_events ev{};
    if (ioctl(fd, KVM_GET_VCPU_EVENTS, &ev) == 0) b.putPod(p + "events", ev);
    kvm_debugregs dr{};
    if (ioctl(fd, KVM_GET_DEBUGREGS, &dr) == 0) b.putPod(p + "debugregs", dr);
    std::vector<kvm_msr_entry> msrs = msrTransfer(fd, msrList_, false);
    b.put(p + "msrs", msrs.data(), msrs.size() * sizeof(kvm_msr_entry));
    b.put(p + "cpuid", v->cpuid.data(), v->cpuid.size() * sizeof(kvm_cpuid_entry2));
  }
}

uint64_t Vm::saveSnapshot(const std::string& path) {
  std::lock_guard<std::mutex> snap(snapshotMu_);
  bool wasRunning;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!started_ || exiting_) throw VmError("ESTATE", "only a running or paused VM can be snapshotted");
    wasRunning = !pauseRequested_;
  }
  if (wasRunning) pause();
  uint64_t bytes = 0;
  try {
    StateBlob b;
    captureState(b);
    bytes = writeSnapshot(path, b, mem_, anonymousMemory_);
  } catch (...) {
    if (wasRunning) resume();
    throw;
  }
  if (wasRunning) resume();
  return bytes;
}

void Vm::loadDeviceState(const StateBlob& b) {
  serial_->loadState(b.get("serial"));
  if (b.has("i8042")) i8042_->loadState(b.get("i8042"));
  for (size_t i = 0; i < disks_.size(); i++) disks_[i]->loadState(b.get("disk" + std::to_string(i) + ".state"));
}

void Vm::applyState(const StateBlob& b) {
  loadDeviceState(b);
  for (int chip = 0; chip < 3; chip++) {
    auto c = b.getPod<kvm_irqchip>("irqchip" + std::to_string(chip));
    xioctl(vm_.get(), KVM_SET_IRQCHIP, &c, "KVM_SET_IRQCHIP");
  }
  auto pit = b.getPod<kvm_pit_state2>("pit");
  xioctl(vm_.get(), KVM_SET_PIT2, &pit, "KVM_SET_PIT2");
  // Same order as Firecracker: cpuid, mp_state, regs, sregs, xsave, xcrs, debugregs, lapic, msrs, events.
  for (auto& v : vcpus_) {
    std::string p = "vcpu" + std::to_string(v->id) + ".";
    int fd = v->fd.get();
    v->cpuid = arrayRecord<kvm_cpuid_entry2>(b, p + "cpuid", 1, kMaxCpuidEntries);
    setCpuid(fd, v->cpuid);
    auto mp = b.getPod<kvm_mp_state>(p + "mpstate"); xioctl(fd, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE");
    auto regs = b.getPod<kvm_regs>(p + "regs"); xioctl(fd, KVM_SET_REGS, &regs, "KVM_SET_REGS");
    auto sregs = b.getPod<kvm_sregs>(p + "sregs"); xioctl(fd, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
    if (b.has(p + "xsave")) { auto xs = b.getPod<KvmXsave>(p + "xsave"); xioctl(fd, kKvmSetXsave, &xs, "KVM_SET_XSAVE"); }
    else { auto fpu = b.getPod<kvm_fpu>(p + "fpu"); xioctl(fd, KVM_SET_FPU, &fpu, "KVM_SET_FPU"); }
    if (b.has(p + "xcrs")) { auto x = b.getPod<kvm_xcrs>(p + "xcrs"); ioctl(fd, KVM_SET_XCRS, &x); }
    if (b.has(p + "debugregs")) { auto d = b.getPod<kvm_debugregs>(p + "debugregs"); ioctl(fd, KVM_SET_DEBUGREGS, &d); }
    auto lapic = b.getPod<kvm_lapic_state>(p + "lapic"); xioctl(fd, KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
    msrTransfer(fd, arrayRecord<kvm_msr_entry>(b, p + "msrs", 0, kMaxMsrEntries), true);
    if (b.has(p + "events")) { auto ev = b.getPod<kvm_vcpu_events>(p + "events"); ioctl(fd, KVM_SET_VCPU_EVENTS, &ev); }
  }
  if (b.has("clock")) {
    auto clock = b.getPod<kvm_clock_data>("clock");
    kvm_clock_data set{};
    set.clock = clock.clock;  // continue guest time from where it was saved
    ioctl(vm_.get(), KVM_SET_CLOCK, &set);
  }
}

std::unique_ptr<Vm> Vm::restore(const std::string& path, VmCallbacks cb, const std::vector<DiskConfig>* diskOverride) {
  OpenedSnapshot snap = openSnapshot(path);
  RestoreConfig cfg = checkSnapshotRecords(snap, path, diskOverride);
  std::unique_ptr<Vm> vm(new Vm());
  vm->cb_ = std::move(cb);
  vm->kvm_ = openKvm();
  int maxVcpus = ioctl(vm->kvm_.get(), KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
  if (maxVcpus > 0 && cfg.cpus > uint32_t(maxVcpus)) throw invalid("the snapshot has " + std::to_string(cfg.cpus) + " vCPUs; this host's KVM allows at most " + std::to_string(maxVcpus));
  vm->createVm(snap.header.memBytes, true, snap.fd.get(), snap.header.memOffset);
  vm->createDevices(cfg.disks);
  vm->kernel_ = snap.state.getPod<x86::KernelInfo>("kernel");
  for (uint32_t i = 0; i < cfg.cpus; i++) vm->createVcpu(i, cfg.cpus);
  vm->applyState(snap.state);
  return vm;
}

RestoreConfig Vm::checkRestore(const std::string& path, const std::vector<DiskConfig>* diskOverride) {
  OpenedSnapshot snap = openSnapshot(path);
  RestoreConfig cfg = checkSnapshotRecords(snap, path, diskOverride);
  std::unique_ptr<Vm> vm(new Vm());
  vm->mem_.mapPrivate(snap.fd.get(), snap.header.memOffset, snap.header.memBytes);
  vm->anonymousMemory_ = false;
  vm->createDevices(cfg.disks);
  vm->loadDeviceState(snap.state);
  return cfg;
}

}  // namespace vmdesk
