// 8250 UART register model: enough of the 16550A for Linux's 8250 driver and for polled test guests.
#include "devices/serial.h"
#include <cstring>
#include "common.h"

namespace vmdesk {

namespace {
constexpr uint8_t kIerRda = 0x01, kIerThre = 0x02;
constexpr uint8_t kIirNone = 0x01, kIirThre = 0x02, kIirRda = 0x04, kIirFifo = 0xc0;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kLsrDr = 0x01, kLsrIdle = 0x60;
constexpr size_t kRxMax = 65536;  // host input beyond this is dropped rather than growing without bound
}  // namespace

uint8_t Serial::computeIir() const {
  uint8_t fifo = (s_.fcr & 1) ? kIirFifo : 0;
  if ((s_.ier & kIerRda) && !rx_.empty()) return fifo | kIirRda;
  if ((s_.ier & kIerThre) && s_.threPending) return fifo | kIirThre;
  return fifo | kIirNone;
}

// Interrupts are edges on the PIC/IOAPIC pin: raise when a new condition appears, the driver then reads IIR.
void Serial::updateIrq(bool edge) {
  if (edge && (computeIir() & 0x0f) != kIirNone) irq_(kIrq);
}

uint8_t Serial::read(uint16_t off) {
  std::unique_lock<std::mutex> g(mu_);
  switch (off) {
    case 0:
      if (s_.lcr & kLcrDlab) return s_.dll;
      if (!rx_.empty()) {
        uint8_t v = rx_.front();
        rx_.pop_front();
        updateIrq(!rx_.empty());
        if (wantSpace_ && rx_.size() <= kRxMax / 2) {
          wantSpace_ = false;
          std::function<void()> fn = space_;
          g.unlock();
          if (fn) fn();
        }
        return v;
      }
      return 0;
    case 1: return (s_.lcr & kLcrDlab) ? s_.dlm : s_.ier;
    case 2: {
      uint8_t iir = computeIir();
      if ((iir & 0x0f) == kIirThre) s_.threPending = 0;  // reading IIR acknowledges THR-empty
      return iir;
    }
    case 3: return s_.lcr;
    case 4: return s_.mcr;
    case 5: return uint8_t(kLsrIdle | (rx_.empty() ? 0 : kLsrDr));
    case 6:
      if (s_.mcr & kMcrLoop) {
        // Loopback wiring the 8250 driver probes: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
        uint8_t m = s_.mcr;
        return uint8_t(((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4));
      }
      return s_.msr;
    case 7: return s_.scr;
  }
  return 0xff;
}

void Serial::write(uint16_t off, uint8_t v) {
  std::unique_lock<std::mutex> g(mu_);
  switch (off) {
    case 0:
      if (s_.lcr & kLcrDlab) { s_.dll = v; return; }
      if (s_.mcr & kMcrLoop) {
        if (rx_.size() < kRxMax) rx_.push_back(v);
        updateIrq(true);
        return;
      }
      // Transmission is instant, so the holding register is empty again at once.
      s_.threPending = 1;
      {
        Sink sink = sink_;
        g.unlock();
        if (sink) sink(&v, 1);
        g.lock();
      }
      updateIrq(true);
      return;
    case 1:
      if (s_.lcr & kLcrDlab) { s_.dlm = v; return; }
      {
        bool threNewlyEnabled = (v & kIerThre) && !(s_.ier & kIerThre);
        s_.ier = v & 0x0f;
        if (threNewlyEnabled) s_.threPending = 1;
        updateIrq(true);
      }
      return;
    case 2:
      s_.fcr = v;
      if (v & 0x02) rx_.clear();
      return;
    case 3: s_.lcr = v; return;
    case 4: s_.mcr = v & 0x1f; return;
    case 7: s_.scr = v; return;
  }
}

size_t Serial::input(const uint8_t* data, size_t len) {
  std::lock_guard<std::mutex> g(mu_);
  size_t n = 0;
  while (n < len && rx_.size() < kRxMax) rx_.push_back(data[n++]);
  if (n < len) wantSpace_ = true;
  updateIrq(true);
  return n;
}

std::string Serial::saveState() {
  std::lock_guard<std::mutex> g(mu_);
  std::string out(reinterpret_cast<const char*>(&s_), sizeof s_);
  uint32_t n = uint32_t(rx_.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  for (uint8_t b : rx_) out.push_back(char(b));
  return out;
}

void Serial::loadState(const std::string& blob) {
  std::lock_guard<std::mutex> g(mu_);
  if (blob.size() < sizeof s_ + 4) throw invalid("snapshot serial state is truncated (" + std::to_string(blob.size()) + " bytes)");
  SerialState st;
  std::memcpy(&st, blob.data(), sizeof st);
  uint32_t n;
  std::memcpy(&n, blob.data() + sizeof st, 4);
  // The input FIFO is bounded at run time; a snapshot may not smuggle in more, nor claim bytes it lacks.
  if (n > kRxMax || blob.size() - sizeof st - 4 != n) {
    throw invalid("snapshot serial state is corrupt: input FIFO of " + std::to_string(n) + " bytes in a record with " +
                  std::to_string(blob.size() - sizeof st - 4) + " (at most " + std::to_string(kRxMax) + ")");
  }
  if (st.threPending > 1) throw invalid("snapshot serial state is corrupt: transmitter flag " + std::to_string(st.threPending));
  s_ = st;
  rx_.assign(blob.begin() + long(sizeof st + 4), blob.end());
}

}  // namespace vmdesk
