// Guest physical memory: one or two host mappings (below the 32-bit MMIO hole and above 4 GiB).
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "common.h"

namespace vmdesk {

// Everything from 3 GiB to 4 GiB stays unbacked for MMIO devices, as on a PC.
constexpr uint64_t kMmioHoleStart = 0xC0000000ull;
constexpr uint64_t kHighMemStart = 0x100000000ull;
// Bounds a snapshot's memory size must respect to be taken seriously (boot enforces the minimum too).
constexpr uint64_t kMinMemBytes = 16ull << 20;
constexpr uint64_t kMaxMemBytes = 1ull << 40;

struct MemRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint8_t* host = nullptr;
  uint64_t fileOffset = 0;  // position of this region in a snapshot's memory area
};

class GuestMemory {
 public:
  GuestMemory() = default;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();
  // Anonymous memory for a fresh boot (MAP_NORESERVE: the host only pays for pages the guest touches).
  void allocate(uint64_t totalBytes);
  // Copy-on-write view of a snapshot's memory: restore costs page faults, not a copy of the whole image.
  void mapPrivate(int fd, uint64_t fileOffset, uint64_t totalBytes);
  uint64_t total() const { return total_; }
  const std::vector<MemRegion>& regions() const { return regions_; }
  // Host pointer for [gpa, gpa+len) or nullptr when the range is not fully inside one region.
  uint8_t* ptr(uint64_t gpa, uint64_t len) const;
  // Highest guest address + 1 of low (below 4 GiB) RAM.
  uint64_t lowEnd() const { return regions_.empty() ? 0 : regions_[0].gpa + regions_[0].size; }

 private:
  static std::vector<MemRegion> layout(uint64_t totalBytes);
  std::vector<MemRegion> regions_;
  uint64_t total_ = 0;
};

}  // namespace vmdesk
