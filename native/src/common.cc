// Implementation of the shared helpers (see common.h).
#include "common.h"
#include <ctime>

namespace vmdesk {

VmError sysError(const std::string& what, const char* code) {
  return VmError(code, what + ": " + std::strerror(errno));
}

uint32_t crc32(const void* data, size_t len, uint32_t seed) {
  static uint32_t table[256];
  static bool ready = false;  // benign race: every thread computes the same table
  if (!ready) {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = true;
  }
  uint32_t c = ~seed;
  auto p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < len; i++) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return ~c;
}

uint64_t monotonicNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

void writeAll(int fd, const void* buf, size_t len, const std::string& what) {
  auto p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw sysError("write " + what);
    }
    p += n;
    len -= size_t(n);
  }
}

void readAll(int fd, void* buf, size_t len, const std::string& what) {
  auto p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = ::read(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw sysError("read " + what);
    }
    if (n == 0) throw invalid(what + ": file is truncated");
    p += n;
    len -= size_t(n);
  }
}

}  // namespace vmdesk
