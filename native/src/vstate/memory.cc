// Guest memory mappings (see memory.h).
#include "vstate/memory.h"
#include <sys/mman.h>

namespace vmdesk {

GuestMemory::~GuestMemory() {
  for (auto& r : regions_)
    if (r.host) munmap(r.host, r.size);
}

std::vector<MemRegion> GuestMemory::layout(uint64_t totalBytes) {
  std::vector<MemRegion> out;
  uint64_t low = totalBytes < kMmioHoleStart ? totalBytes : kMmioHoleStart;
  out.push_back({0, low, nullptr, 0});
  if (totalBytes > low) out.push_back({kHighMemStart, totalBytes - low, nullptr, low});
  return out;
}

void GuestMemory::allocate(uint64_t totalBytes) {
  regions_ = layout(totalBytes);
  total_ = totalBytes;
  for (auto& r : regions_) {
    void* p = mmap(nullptr, r.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw sysError("mmap guest memory (" + std::to_string(r.size >> 20) + " MiB)", "EHOST");
    r.host = static_cast<uint8_t*>(p);
  }
}

void GuestMemory::mapPrivate(int fd, uint64_t fileOffset, uint64_t totalBytes) {
  regions_ = layout(totalBytes);
  total_ = totalBytes;
  for (auto& r : regions_) {
    void* p = mmap(nullptr, r.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd,
                   off_t(fileOffset + r.fileOffset));
    if (p == MAP_FAILED) throw sysError("mmap snapshot memory");
    r.host = static_cast<uint8_t*>(p);
  }
}

uint8_t* GuestMemory::ptr(uint64_t gpa, uint64_t len) const {
  for (auto& r : regions_) {
    if (gpa >= r.gpa && gpa - r.gpa <= r.size && len <= r.size - (gpa - r.gpa)) return r.host + (gpa - r.gpa);
  }
  return nullptr;
}

}  // namespace vmdesk
