// i8042 keyboard controller: enough for Linux's i8042/atkbd drivers to find a keyboard, Ctrl-Alt-Del
// injection (the micro-VM's graceful shutdown request), and the CPU-reset command, which ends the micro-VM.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include "devices/irq.h"

namespace vmdesk {

class I8042 {
 public:
  static constexpr uint16_t kData = 0x60, kCommand = 0x64;
  static constexpr uint32_t kIrq = 1;
  I8042(std::function<void()> onReset, IrqPulse irq) : onReset_(std::move(onReset)), irq_(std::move(irq)) {}
  uint8_t read(uint16_t port);
  void write(uint16_t port, uint8_t value);
  // Queues the scancodes of Ctrl+Alt+Del (press and release) as a keyboard would send them.
  void sendCtrlAltDel();
  std::string saveState();
  void loadState(const std::string& blob);

 private:
  void push(uint8_t byte);  // caller holds mu_
  std::mutex mu_;
  std::deque<uint8_t> out_;
  uint8_t ctr_ = 0x45;       // keyboard interrupt on, system flag, scancode translation (set 1)
  uint8_t pendingCmd_ = 0;   // controller command waiting for its data byte
  uint8_t lastWasCmd_ = 0;
  uint8_t lastRead_ = 0;
  std::function<void()> onReset_;
  IrqPulse irq_;
};

}  // namespace vmdesk
