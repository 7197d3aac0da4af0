// virtio-blk over virtio-mmio: split virtqueue handling (descriptor chains: header, data, status byte).
#include "devices/virtio_blk.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <atomic>
#include <cstring>

namespace vmdesk {

namespace {
constexpr uint32_t kMagic = 0x74726976;  // "virt"
constexpr uint32_t kDeviceIdBlock = 2;
constexpr uint64_t kFeatureVersion1 = 1ull << 32;
constexpr uint64_t kFeatureBlkRo = 1ull << 5;
constexpr uint64_t kFeatureBlkFlush = 1ull << 9;
constexpr uint16_t kDescNext = 1, kDescWrite = 2;
constexpr uint32_t kReqIn = 0, kReqOut = 1, kReqFlush = 4, kReqGetId = 8;
constexpr uint8_t kStatusOk = 0, kStatusIoErr = 1, kStatusUnsupported = 2;

struct Desc { uint64_t addr; uint32_t len; uint16_t flags, next; } __attribute__((packed));
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
          s_.status = v;
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

uint8_t VirtioBlk::handleRequest(uint16_t head, uint32_t* written) {
  const VirtqState& q = s_.q;
  auto* descs = reinterpret_cast<const Desc*>(mem_.ptr(q.desc, uint64_t(q.num) * sizeof(Desc)));
  if (!descs) return kStatusIoErr;
  // Walk the chain into a small list; a chain longer than the queue is a malicious loop.
  Desc chain[kQueueMax];
  uint32_t n = 0;
  for (uint16_t i = head;; i = descs[i].next) {
    if (i >= q.num || n >= q.num) return kStatusIoErr;
    chain[n++] = descs[i];
    if (!(descs[i].flags & kDescNext)) break;
  }
  if (n < 2 || chain[0].len < 16) return kStatusIoErr;
  const uint8_t* hdr = mem_.ptr(chain[0].addr, 16);
  uint8_t* status = mem_.ptr(chain[n - 1].addr, 1);
  if (!hdr || !status || !(chain[n - 1].flags & kDescWrite)) return kStatusIoErr;
  uint32_t type;
  uint64_t sector;
  std::memcpy(&type, hdr, 4);
  std::memcpy(&sector, hdr + 8, 8);
  uint8_t result = kStatusOk;
  uint64_t pos = sector * 512;
  *written = 1;
  for (uint32_t i = 1; i + 1 < n && result == kStatusOk; i++) {
    uint8_t* buf = mem_.ptr(chain[i].addr, chain[i].len);
    if (!buf) { result = kStatusIoErr; break; }
    if (type == kReqIn || type == kReqOut) {
      if (pos + chain[i].len > sectors_ * 512) { result = kStatusIoErr; break; }
      ssize_t r = type == kReqIn ? pread(fd_.get(), buf, chain[i].len, off_t(pos)) : (readOnly_ ? -1 : pwrite(fd_.get(), buf, chain[i].len, off_t(pos)));
      if (r != ssize_t(chain[i].len)) { result = kStatusIoErr; break; }
      if (type == kReqIn) *written += chain[i].len;
      pos += chain[i].len;
    } else if (type == kReqGetId) {
      char id[20] = "vmdesk-microvm-disk";
      uint32_t l = chain[i].len < 20 ? chain[i].len : 20;
      std::memcpy(buf, id, l);
      *written += l;
    }
  }
  if (type == kReqFlush && result == kStatusOk) result = fdatasync(fd_.get()) == 0 ? kStatusOk : kStatusIoErr;
  if (type != kReqIn && type != kReqOut && type != kReqFlush && type != kReqGetId) result = kStatusUnsupported;
  *status = result;
  return result;
}

void VirtioBlk::processQueue() {
  bool any = false;
  {
    std::lock_guard<std::mutex> g(mu_);
    VirtqState& q = s_.q;
    if (!q.ready || !q.num) return;
    uint8_t* avail = mem_.ptr(q.avail, 4 + 2 * uint64_t(q.num));
    uint8_t* used = mem_.ptr(q.used, 4 + 8 * uint64_t(q.num));
    if (!avail || !used) return;
    auto* availIdx = reinterpret_cast<volatile uint16_t*>(avail + 2);
    auto* usedIdx = reinterpret_cast<volatile uint16_t*>(used + 2);
    while (q.lastAvail != *availIdx) {
      std::atomic_thread_fence(std::memory_order_acquire);
      uint16_t head;
      std::memcpy(&head, avail + 4 + 2 * (q.lastAvail % q.num), 2);
      uint32_t written = 0;
      handleRequest(head, &written);
      uint16_t u = *usedIdx;
      uint32_t elem[2] = {head, written};
      std::memcpy(used + 4 + 8 * (u % q.num), elem, 8);
      std::atomic_thread_fence(std::memory_order_release);
      *usedIdx = uint16_t(u + 1);
      q.lastAvail++;
      any = true;
    }
    if (any) s_.interruptStatus |= 1;
  }
  if (any) pulse_(irq_);
}

std::string VirtioBlk::saveState() {
  std::lock_guard<std::mutex> g(mu_);
  return std::string(reinterpret_cast<const char*>(&s_), sizeof s_);
}

void VirtioBlk::loadState(const std::string& blob) {
  std::lock_guard<std::mutex> g(mu_);
  if (blob.size() != sizeof s_) throw std::runtime_error("virtio-blk state has the wrong size");
  std::memcpy(&s_, blob.data(), sizeof s_);
}

}  // namespace vmdesk
