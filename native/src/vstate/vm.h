// A running micro-VM: the KVM VM (memory, irqchip, PIT), one native thread per vCPU, the device bus,
// pause/resume, and snapshot capture/restore of all of it.
#pragma once
#include <linux/kvm.h>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include "arch/x86_boot.h"
#include "common.h"
#include "devices/i8042.h"
#include "devices/serial.h"
#include "devices/virtio_blk.h"
#include "snapshot/snapshot.h"
#include "vstate/memory.h"

namespace vmdesk {

struct DiskConfig {
  std::string path;
  bool readOnly = false;
};

// What a snapshot's records say about the VM to recreate, after every record has been checked.
struct RestoreConfig {
  uint32_t cpus = 0;
  uint64_t memBytes = 0;
  std::vector<DiskConfig> disks;  // the snapshot's, or the override
};

// 8-bit xAPIC ids, with the IOAPIC taking the id after the last vCPU's.
constexpr uint32_t kMaxVcpus = 255;
constexpr size_t kMaxDisks = 8;

// Checks every record restore reads (configuration, disks, devices present, KVM state sizes, per-vCPU
// records) without KVM; throws VmError(EINVAL) naming the first bad one.
RestoreConfig checkSnapshotRecords(const OpenedSnapshot& snap, const std::string& path, const std::vector<DiskConfig>* diskOverride);
// Tests only: a state blob with every record a restore requires (KVM state zero-filled, devices as after a
// reset), the structurally valid starting point for building corrupt snapshots.
StateBlob syntheticSnapshotState(uint32_t cpus, uint64_t memBytes, const std::vector<DiskConfig>& disks);

struct VmOptions {
  uint32_t cpus = 1;
  uint64_t memBytes = 0;
  x86::BootParams boot;
  std::vector<DiskConfig> disks;
};

struct ExitInfo {
  std::string reason;  // guest-poweroff | crashed | stopped
  std::string detail;
  int vcpu = -1;       // the vCPU that caused it, -1 for host requests
  bool hasRegs = false;
  kvm_regs regs{};     // of that vCPU (vCPU 0 for host requests) when it stopped
  kvm_sregs sregs{};
};

struct VmCallbacks {
  // Called on vCPU threads: implementations must only queue work for the Node thread.
  std::function<void(const uint8_t*, size_t)> serial;
  std::function<void(const ExitInfo&)> exit;
  // Optional: the guest read its input FIFO down after serialInput() had to refuse bytes.
  std::function<void()> serialSpace;
};

class Vm {
 public:
  static std::unique_ptr<Vm> boot(const VmOptions& opts, VmCallbacks cb);
  // diskOverride replaces the disk paths stored in the snapshot (same count and order).
  static std::unique_ptr<Vm> restore(const std::string& path, VmCallbacks cb, const std::vector<DiskConfig>* diskOverride);
  // Everything restore() checks before it needs KVM, devices included (loaded over a copy-on-write mapping
  // of the snapshot's memory): a snapshot file is untrusted input, and this can be tested without /dev/kvm.
  static RestoreConfig checkRestore(const std::string& path, const std::vector<DiskConfig>* diskOverride);
  ~Vm();

  void start(bool paused);
  void pause();
  void resume();
  // Asks every vCPU to stop; the exit callback fires once all have.
  void requestExit(const ExitInfo& info);
  // Returns how many bytes the UART's input FIFO took; VmCallbacks::serialSpace announces room for the rest.
  size_t serialInput(const uint8_t* data, size_t len) { return serial_->input(data, len); }
  // Graceful shutdown request for guests without ACPI: Linux reboots on it, and reboot ends a micro-VM.
  void sendCtrlAltDel() { i8042_->sendCtrlAltDel(); }
  // Pauses if needed, writes the snapshot, then resumes if it was running. Returns the bytes written.
  uint64_t saveSnapshot(const std::string& path);
  std::string state() const;
  uint32_t cpus() const { return uint32_t(vcpus_.size()); }
  uint64_t memBytes() const { return mem_.total(); }
  size_t diskCount() const { return disks_.size(); }
  const x86::KernelInfo& kernel() const { return kernel_; }
  // Registers of a stopped or paused vCPU.
  kvm_regs regs(uint32_t cpu);
  // Joins the vCPU threads after an exit (safe to call repeatedly).
  void join();

 private:
  struct Vcpu {
    int id = 0;
    Fd fd;
    kvm_run* run = nullptr;
    std::thread thread;
    kvm_regs finalRegs{};
    kvm_sregs finalSregs{};
    std::vector<kvm_cpuid_entry2> cpuid;
  };
  Vm() = default;
  void createVm(uint64_t memBytes, bool restoring, int memFd, uint64_t memOffset);
  void createDevices(const std::vector<DiskConfig>& disks);
  void createVcpu(uint32_t id, uint32_t count);
  void setupBootVcpu(Vcpu& v, uint64_t entry);
  void vcpuLoop(Vcpu& v);
  bool handleExit(Vcpu& v);
  void handleIo(Vcpu& v);
  void handleMmio(Vcpu& v);
  void pulseIrq(uint32_t gsi);
  void kickAll();
  void captureState(StateBlob& blob);
  void applyState(const StateBlob& blob);
  void loadDeviceState(const StateBlob& blob);

  Fd kvm_, vm_;
  size_t runSize_ = 0;
  GuestMemory mem_;
  bool anonymousMemory_ = true;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  std::unique_ptr<Serial> serial_;
  std::unique_ptr<I8042> i8042_;
  std::vector<std::unique_ptr<VirtioBlk>> disks_;
  std::vector<kvm_msr_entry> msrList_;
  x86::KernelInfo kernel_;
  VmCallbacks cb_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool pauseRequested_ = false;
  bool exiting_ = false;
  bool exitReported_ = false;
  uint32_t paused_ = 0;
  uint32_t live_ = 0;
  ExitInfo exitInfo_;
  std::mutex snapshotMu_;
};

}  // namespace vmdesk
