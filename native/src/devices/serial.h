// 8250/16550A UART on COM1 (0x3f8, IRQ 4): output goes to a sink, input comes from the host.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include "devices/irq.h"

namespace vmdesk {

struct SerialState {  // everything a snapshot must keep, as plain bytes
  uint8_t ier = 0, iir = 1, lcr = 0, mcr = 0x08, lsr = 0x60, msr = 0xb0, scr = 0, dll = 0x0c, dlm = 0, fcr = 0;
  uint8_t threPending = 0;
  uint8_t reserved[5] = {};
};

class Serial {
 public:
  static constexpr uint16_t kBase = 0x3f8;
  static constexpr uint32_t kIrq = 4;
  using Sink = std::function<void(const uint8_t*, size_t)>;
  Serial(Sink sink, IrqPulse irq) : sink_(std::move(sink)), irq_(std::move(irq)) {}
  uint8_t read(uint16_t offset);
  void write(uint16_t offset, uint8_t value);
  // Host-side input: queued and announced with an interrupt. Returns how many bytes fit in the input FIFO;
  // when not all did, the space callback fires once the guest has read the FIFO down to half.
  size_t input(const uint8_t* data, size_t len);
  void setSpaceCallback(std::function<void()> fn) { std::lock_guard<std::mutex> g(mu_); space_ = std::move(fn); }
  std::string saveState();
  void loadState(const std::string& blob);

 private:
  uint8_t computeIir() const;
  void updateIrq(bool edge);
  std::mutex mu_;
  SerialState s_;
  std::deque<uint8_t> rx_;
  Sink sink_;
  IrqPulse irq_;
  std::function<void()> space_;
  bool wantSpace_ = false;  // input was refused: tell the host when there is room again
};

}  // namespace vmdesk
