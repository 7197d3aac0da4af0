// i8042 keyboard controller stub: its only job is the CPU-reset command, which ends the micro-VM.
#pragma once
#include <cstdint>
#include <functional>

namespace vmdesk {

class I8042 {
 public:
  static constexpr uint16_t kData = 0x60, kCommand = 0x64;
  explicit I8042(std::function<void()> onReset) : onReset_(std::move(onReset)) {}
  uint8_t read(uint16_t port);
  void write(uint16_t port, uint8_t value);

 private:
  std::function<void()> onReset_;
};

}  // namespace vmdesk
