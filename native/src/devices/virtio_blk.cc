// virtio-blk over virtio-mmio: split virtqueue handling (descriptor chains: header, data, status byte).
// Everything in the rings is written by the guest and may be hostile: ring extents, indexes, chain lengths,
// descriptor directions and extents and sectors are all checked before any guest memory or disk access.
#include "devices/virtio_blk.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <algorithm>
#include <atomic>
#include <cstring>

namespace vmdesk {

namespace {
constexpr uint32_t kMagic = 0x74726976;  // "virt"
constexpr uint32_t kDeviceIdBlock = 2;
constexpr uint64_t kFeatureVersion1 = 1ull << 32;
constexpr uint64_t kFeatureBlkRo = 1ull << 5;
constexpr uint64_t kFeatureBlkFlush = 1ull << 9;
constexpr uint16_t kDescNext = 1, kDescWrite = 2, kDescIndirect = 4;
constexpr uint32_t kReqIn = 0, kReqOut = 1, kReqFlush = 4, kReqGetId = 8;
constexpr uint8_t kStatusOk = 0, kStatusIoErr = 1, kStatusUnsupported = 2;
constexpr uint32_t kDeviceNeedsReset = 0x40;
constexpr uint32_t kIntUsedBuffer = 1, kIntConfigChange = 2;
constexpr uint32_t kHeaderBytes = 16;
constexpr uint32_t kIdBytes = 20;

bool validQueueSize(uint32_t n) { return n != 0 && n <= VirtioBlk::kQueueMax && (n & (n - 1)) == 0; }

// One pread/pwrite moves at most ~2 GiB, and a descriptor may describe up to 4 GiB.
bool transferAll(int fd, uint8_t* buf, uint64_t len, uint64_t pos, bool in) {
  while (len > 0) {
    size_t chunk = len > (1ull << 30) ? size_t(1) << 30 : size_t(len);
    ssize_t r = in ? pread(fd, buf, chunk, off_t(pos)) : pwrite(fd, buf, chunk, off_t(pos));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    buf += r;
    pos += uint64_t(r);
    len -= uint64_t(r);
  }
  return true;
}
}  // namespace

VirtioBlk::VirtioBlk(const GuestMemory& mem, const std::string& path, bool readOnly, uint64_t base, uint32_t irq, IrqPulse pulse)
    : mem_(mem), path_(path), readOnly_(readOnly), base_(base), irq_(irq), pulse_(std::move(pulse)) {
  fd_.reset(::open(path.c_str(), (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC));
  if (!fd_.valid()) throw sysError("cannot open disk image " + path, "EINVAL");
  struct stat st;
  if (fstat(fd_.get(), &st) != 0) throw sysError("stat disk image " + path);
  sectors_ = uint64_t(st.st_size) / 512;
}

std::string VirtioBlk::cmdlineArg() const {
  char buf[96];
  snprintf(buf, sizeof buf, "virtio_mmio.device=4K@0x%llx:%u", (unsigned long long)base_, irq_);
  return buf;
}

uint64_t VirtioBlk::features() const { return kFeatureVersion1 | kFeatureBlkFlush | (readOnly_ ? kFeatureBlkRo : 0); }

void VirtioBlk::read(uint64_t off, uint8_t* data, uint32_t len) {
  std::lock_guard<std::mutex> g(mu_);
  uint32_t v = 0;
  if (off >= 0x100) {
    // Config space: capacity (u64 sectors) first; the rest reads as zero.
    uint8_t cfg[64] = {};
    std::memcpy(cfg, &sectors_, 8);
    uint64_t o = off - 0x100;
    std::memset(data, 0, len);
    if (o + len <= sizeof cfg) std::memcpy(data, cfg + o, len);
    return;
  }
  switch (off) {
    case 0x000: v = kMagic; break;
    case 0x004: v = 2; break;
    case 0x008: v = kDeviceIdBlock; break;
    case 0x00c: v = 0x4b534456; break;  // vendor "VDSK"
    case 0x010: v = s_.deviceFeaturesSel == 0 ? uint32_t(features()) : s_.deviceFeaturesSel == 1 ? uint32_t(features() >> 32) : 0; break;
    case 0x034: v = s_.queueSel == 0 ? kQueueMax : 0; break;
    case 0x044: v = s_.queueSel == 0 ? s_.q.ready : 0; break;
    case 0x060: v = s_.interruptStatus; break;
    case 0x070: v = s_.status; break;
    case 0x0fc: v = s_.configGeneration; break;
  }
  std::memset(data, 0, len);
  std::memcpy(data, &v, len < 4 ? len : 4);
}

void VirtioBlk::write(uint64_t off, const uint8_t* data, uint32_t len) {
  uint32_t v = 0;
  std::memcpy(&v, data, len < 4 ? len : 4);
  bool notify = false;
  {
    std::lock_guard<std::mutex> g(mu_);
    VirtqState& q = s_.q;
    bool q0 = s_.queueSel == 0;
    switch (off) {
      case 0x014: s_.deviceFeaturesSel = v; break;
      case 0x020:
        if (s_.driverFeaturesSel < 2) {
          uint64_t shift = 32ull * s_.driverFeaturesSel;
          s_.driverFeatures = (s_.driverFeatures & ~(0xffffffffull << shift)) | (uint64_t(v) << shift);
        }
        break;
      case 0x024: s_.driverFeaturesSel = v; break;
      case 0x030: s_.queueSel = v; break;
      case 0x038: if (q0 && v <= kQueueMax && v && !(v & (v - 1))) q.num = v; break;
      case 0x044: if (q0) q.ready = v & 1; break;
      case 0x050: notify = (v == 0); break;
      case 0x064: s_.interruptStatus &= ~v; break;
      case 0x070:
        if (v == 0) {  // device reset
          s_ = VirtioBlkState{};
        } else {
          // Only a reset clears DEVICE_NEEDS_RESET: a driver cannot talk a broken queue back into service.
          s_.status = (v & 0xff) | (s_.status & kDeviceNeedsReset);
        }
        break;
      case 0x080: if (q0) q.desc = (q.desc & ~0xffffffffull) | v; break;
      case 0x084: if (q0) q.desc = (q.desc & 0xffffffffull) | (uint64_t(v) << 32); break;
      case 0x090: if (q0) q.avail = (q.avail & ~0xffffffffull) | v; break;
      case 0x094: if (q0) q.avail = (q.avail & 0xffffffffull) | (uint64_t(v) << 32); break;
      case 0x0a0: if (q0) q.used = (q.used & ~0xffffffffull) | v; break;
      case 0x0a4: if (q0) q.used = (q.used & 0xffffffffull) | (uint64_t(v) << 32); break;
    }
  }
  if (notify) processQueue();
}

bool VirtioBlk::ringsValid(const VirtqState& q) const {
  if (!validQueueSize(q.num)) return false;
  // The split-virtqueue alignments; they also keep the 16-bit index accesses below aligned.
  if (q.desc % 16 != 0 || q.avail % 2 != 0 || q.used % 4 != 0) return false;
  return mem_.ptr(q.desc, 16ull * q.num) && mem_.ptr(q.avail, 4 + 2ull * q.num) && mem_.ptr(q.used, 4 + 8ull * q.num);
}

bool VirtioBlk::readChain(uint16_t head, VirtqDesc* out, uint32_t* n) const {
  const VirtqState& q = s_.q;
  const uint8_t* table = mem_.ptr(q.desc, 16ull * q.num);
  if (!table) return false;
  uint32_t count = 0;
  for (uint32_t i = head;;) {
    // A chain longer than the queue must visit some descriptor twice: a loop built to hang the device.
    if (i >= q.num || count >= q.num || count >= kQueueMax) return false;
    VirtqDesc d;
    std::memcpy(&d, table + 16ull * i, sizeof d);  // one read: another vCPU may rewrite the table meanwhile
    if (d.flags & kDescIndirect) return false;     // VIRTIO_F_INDIRECT_DESC is not offered
    out[count++] = d;
    if (!(d.flags & kDescNext)) break;
    i = d.next;
  }
  *n = count;
  return true;
}

bool VirtioBlk::handleRequest(const VirtqDesc* chain, uint32_t n, uint32_t* written) {
  // The status byte ends the chain; without a device-writable one in guest memory there is no way to answer.
  const VirtqDesc& last = chain[n - 1];
  uint8_t* status = (last.flags & kDescWrite) && last.len >= 1 ? mem_.ptr(last.addr, 1) : nullptr;
  if (!status) return false;
  uint64_t data = 0;
  uint8_t result = kStatusIoErr;
  const VirtqDesc& h = chain[0];
  const uint8_t* hdr = n >= 2 && !(h.flags & kDescWrite) && h.len >= kHeaderBytes ? mem_.ptr(h.addr, kHeaderBytes) : nullptr;
  if (hdr) {
    uint32_t type;
    uint64_t sector;
    std::memcpy(&type, hdr, 4);
    std::memcpy(&sector, hdr + 8, 8);
    result = execute(type, sector, chain + 1, n - 2, &data);
  }
  *status = result;
  *written = uint32_t(1 + data);
  return true;
}

uint8_t VirtioBlk::execute(uint32_t type, uint64_t sector, const VirtqDesc* bufs, uint32_t nbufs, uint64_t* data) {
  if (type != kReqIn && type != kReqOut && type != kReqFlush && type != kReqGetId) return kStatusUnsupported;
  if (type == kReqFlush) return fdatasync(fd_.get()) == 0 ? kStatusOk : kStatusIoErr;
  // The device writes into the buffers of reads and of the ID and reads those of writes; each must say so
  // and lie wholly inside guest memory before anything is transferred.
  bool deviceWrites = type != kReqOut;
  uint64_t total = 0;
  for (uint32_t i = 0; i < nbufs; i++) {
    if (bool(bufs[i].flags & kDescWrite) != deviceWrites || !mem_.ptr(bufs[i].addr, bufs[i].len)) return kStatusIoErr;
    total += bufs[i].len;  // at most 256 * (2^32 - 1): cannot wrap
  }
  if (type == kReqGetId) {
    static const char id[kIdBytes] = "vmdesk-microvm-disk";
    for (uint32_t i = 0; i < nbufs && *data < kIdBytes; i++) {
      uint32_t l = uint32_t(std::min<uint64_t>(bufs[i].len, kIdBytes - *data));
      std::memcpy(mem_.ptr(bufs[i].addr, l), id + *data, l);
      *data += l;
    }
    return kStatusOk;
  }
  if (type == kReqOut && readOnly_) return kStatusIoErr;
  // sector * 512 and the end of the request must both stay inside the disk, checked without wrapping.
  uint64_t capacity = sectors_ * 512;
  if (sector > capacity / 512 || total > capacity - sector * 512) return kStatusIoErr;
  if (total > UINT32_MAX - 1) return kStatusIoErr;  // the used ring reports lengths in 32 bits
  uint64_t pos = sector * 512;
  for (uint32_t i = 0; i < nbufs; i++) {
    if (!transferAll(fd_.get(), mem_.ptr(bufs[i].addr, bufs[i].len), bufs[i].len, pos, type == kReqIn)) return kStatusIoErr;
    if (type == kReqIn) *data += bufs[i].len;
    pos += bufs[i].len;
  }
  return kStatusOk;
}

// Caller holds mu_. The spec's answer to a driver that broke the queue: stop using it, set
// DEVICE_NEEDS_RESET and tell the driver through a configuration-change interrupt.
void VirtioBlk::markBroken() {
  s_.status |= kDeviceNeedsReset;
  s_.interruptStatus |= kIntConfigChange;
}

void VirtioBlk::processQueue() {
  bool interrupt = false;
  {
    std::lock_guard<std::mutex> g(mu_);
    VirtqState& q = s_.q;
    // A broken device stays silent until the driver resets it.
    if (!q.ready || (s_.status & kDeviceNeedsReset)) return;
    if (!ringsValid(q)) {
      markBroken();
      interrupt = true;
    } else {
      uint8_t* avail = mem_.ptr(q.avail, 4 + 2ull * q.num);
      uint8_t* used = mem_.ptr(q.used, 4 + 8ull * q.num);
      auto* availIdx = reinterpret_cast<volatile uint16_t*>(avail + 2);
      auto* usedIdx = reinterpret_cast<volatile uint16_t*>(used + 2);
      // Only the buffers available at this notification: a vCPU that keeps adding buffers must not keep this
      // one (and a host pause waiting for it) busy forever; the driver notifies again for later ones.
      uint16_t pending = uint16_t(*availIdx - q.lastAvail);
      std::atomic_thread_fence(std::memory_order_acquire);
      // A driver never has more than a queue's worth of buffers outstanding; more is a corrupt index.
      if (pending > q.num) {
        markBroken();
        interrupt = true;
        pending = 0;
      }
      bool completed = false;
      for (uint16_t k = 0; k < pending; k++) {
        uint16_t head;
        std::memcpy(&head, avail + 4 + 2 * (q.lastAvail % q.num), 2);
        VirtqDesc chain[kQueueMax];
        uint32_t n = 0, written = 0;
        if (head >= q.num || !readChain(head, chain, &n) || !handleRequest(chain, n, &written)) {
          markBroken();
          interrupt = true;
          break;
        }
        uint16_t u = *usedIdx;
        uint32_t elem[2] = {head, written};
        std::memcpy(used + 4 + 8 * (u % q.num), elem, 8);
        std::atomic_thread_fence(std::memory_order_release);
        *usedIdx = uint16_t(u + 1);
        q.lastAvail++;
        completed = true;
      }
      if (completed) {
        s_.interruptStatus |= kIntUsedBuffer;
        interrupt = true;
      }
    }
  }
  if (interrupt) pulse_(irq_);
}

std::string VirtioBlk::saveState() {
  std::lock_guard<std::mutex> g(mu_);
  return std::string(reinterpret_cast<const char*>(&s_), sizeof s_);
}

void VirtioBlk::loadState(const std::string& blob) {
  std::lock_guard<std::mutex> g(mu_);
  auto corrupt = [&](const std::string& why) { return invalid("snapshot state of disk " + path_ + " is corrupt: " + why); };
  if (blob.size() != sizeof(VirtioBlkState)) {
    throw corrupt("the record has " + std::to_string(blob.size()) + " bytes, expected " + std::to_string(sizeof(VirtioBlkState)));
  }
  VirtioBlkState st;
  std::memcpy(&st, blob.data(), sizeof st);
  const VirtqState& q = st.q;
  if (q.num != 0 && !validQueueSize(q.num)) {
    throw corrupt("queue size " + std::to_string(q.num) + " (the device allows powers of two up to " + std::to_string(kQueueMax) + ")");
  }
  if (q.ready > 1) throw corrupt("queue ready flag " + std::to_string(q.ready));
  if (st.status > 0xff) throw corrupt("device status " + std::to_string(st.status));
  if (st.interruptStatus > (kIntUsedBuffer | kIntConfigChange)) throw corrupt("interrupt status " + std::to_string(st.interruptStatus));
  // A queue in use must lie in guest memory with at most a queue's worth of buffers outstanding. A device
  // that had already given up (DEVICE_NEEDS_RESET) touches nothing until a reset clears the queue.
  if (q.ready && !(st.status & kDeviceNeedsReset)) {
    if (!ringsValid(q)) throw corrupt("the queue's rings lie outside guest memory or are misaligned");
    uint16_t availIdx;
    std::memcpy(&availIdx, mem_.ptr(q.avail + 2, 2), 2);
    if (uint16_t(availIdx - q.lastAvail) > q.num) {
      throw corrupt("queue position " + std::to_string(q.lastAvail) + " is more than a queue behind the driver's " + std::to_string(availIdx));
    }
  }
  s_ = st;
}

}  // namespace vmdesk
