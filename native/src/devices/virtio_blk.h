// virtio-mmio (version 2) block device over a raw image file, processing requests synchronously on the
// vCPU thread that notifies the queue.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include "common.h"
#include "devices/irq.h"
#include "vstate/memory.h"

namespace vmdesk {

struct VirtqState {
  uint32_t num = 0, ready = 0;
  uint64_t desc = 0, avail = 0, used = 0;
  uint16_t lastAvail = 0, pad[3] = {};
};

// A split-virtqueue descriptor exactly as the guest lays it out.
struct VirtqDesc { uint64_t addr; uint32_t len; uint16_t flags, next; } __attribute__((packed));

struct VirtioBlkState {  // snapshot payload: transport registers and queue positions
  uint32_t status = 0, driverFeaturesSel = 0, deviceFeaturesSel = 0, queueSel = 0, interruptStatus = 0, configGeneration = 0;
  uint64_t driverFeatures = 0;
  VirtqState q;
};

class VirtioBlk {
 public:
  static constexpr uint64_t kMmioBase = 0xd0000000ull;
  static constexpr uint64_t kMmioSize = 0x1000;
  static constexpr uint32_t kFirstIrq = 5;
  static constexpr uint32_t kQueueMax = 256;
  VirtioBlk(const GuestMemory& mem, const std::string& path, bool readOnly, uint64_t base, uint32_t irq, IrqPulse pulse);
  uint64_t base() const { return base_; }
  uint32_t irq() const { return irq_; }
  const std::string& path() const { return path_; }
  bool readOnly() const { return readOnly_; }
  void read(uint64_t offset, uint8_t* data, uint32_t len);
  void write(uint64_t offset, const uint8_t* data, uint32_t len);
  std::string saveState();
  // The blob comes from a snapshot file: every field is checked (against this device's guest memory too)
  // and a bad one throws VmError(EINVAL) before anything is changed.
  void loadState(const std::string& blob);
  // Linux discovers virtio-mmio devices from the command line (no ACPI/device tree in a micro-VM).
  std::string cmdlineArg() const;

 private:
  uint64_t features() const;
  void processQueue();
  // Caller holds mu_. Ring sizes and addresses as the driver set them (or a snapshot restored them).
  bool ringsValid(const VirtqState& q) const;
  // Caller holds mu_. Copies the chain starting at head into out; false when it is not a chain at all.
  bool readChain(uint16_t head, VirtqDesc* out, uint32_t* n) const;
  // Caller holds mu_. Performs one request; false when there is no status byte to report a result in.
  bool handleRequest(const VirtqDesc* chain, uint32_t n, uint32_t* written);
  // Caller holds mu_. The request proper: returns the status byte, counts bytes written into guest buffers.
  uint8_t execute(uint32_t type, uint64_t sector, const VirtqDesc* bufs, uint32_t nbufs, uint64_t* data);
  void markBroken();
  const GuestMemory& mem_;
  std::string path_;
  bool readOnly_;
  Fd fd_;
  uint64_t sectors_ = 0;
  uint64_t base_;
  uint32_t irq_;
  IrqPulse pulse_;
  std::mutex mu_;
  VirtioBlkState s_;
};

}  // namespace vmdesk
