// Shared helpers for the micro-VMM: typed errors that map onto VMDesk error codes, fd ownership, CRC32.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unistd.h>

namespace vmdesk {

// Error codes match main/api/errors.ts so the TypeScript side can rethrow them as VmdeskError unchanged.
struct VmError : std::runtime_error {
  std::string code;
  VmError(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

inline VmError invalid(const std::string& msg) { return VmError("EINVAL", msg); }
inline VmError hostError(const std::string& msg) { return VmError("EHOST", msg); }
inline VmError engineError(const std::string& msg) { return VmError("EENGINE", msg); }
// Appends strerror(errno) so every failed syscall says which call and why.
VmError sysError(const std::string& what, const char* code = "EENGINE");

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept { reset(o.release()); return *this; }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { int f = fd_; fd_ = -1; return f; }
  void reset(int f = -1) { if (fd_ >= 0) ::close(fd_); fd_ = f; }
 private:
  int fd_ = -1;
};

uint32_t crc32(const void* data, size_t len, uint32_t seed = 0);
uint64_t monotonicNanos();
void writeAll(int fd, const void* buf, size_t len, const std::string& what);
void readAll(int fd, void* buf, size_t len, const std::string& what);

}  // namespace vmdesk
