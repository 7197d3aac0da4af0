// i8042 controller and a keyboard that acknowledges everything. Like Firecracker, a micro-VM has no reboot:
// "reset" (Linux reboot=k, or a test guest writing 0xFE to port 0x64) powers the VM off.
#include "devices/i8042.h"
#include <cstring>
#include "common.h"

namespace vmdesk {

namespace {
constexpr uint8_t kStatusObf = 0x01, kStatusSys = 0x04, kStatusCmd = 0x08;
constexpr uint8_t kCtrKbdInt = 0x01, kCtrKbdDisabled = 0x10;
constexpr size_t kMaxQueued = 64;
}  // namespace

// Caller holds mu_. One byte is visible at a time; each read of the data port raises the next interrupt.
void I8042::push(uint8_t b) {
  if (out_.size() >= kMaxQueued) return;
  out_.push_back(b);
  if (out_.size() == 1 && (ctr_ & kCtrKbdInt)) irq_(kIrq);
}

uint8_t I8042::read(uint16_t port) {
  std::lock_guard<std::mutex> g(mu_);
  if (port == kCommand) return uint8_t((out_.empty() ? 0 : kStatusObf) | kStatusSys | (lastWasCmd_ ? kStatusCmd : 0));
  if (out_.empty()) return lastRead_;
  lastRead_ = out_.front();
  out_.pop_front();
  if (!out_.empty() && (ctr_ & kCtrKbdInt)) irq_(kIrq);
  return lastRead_;
}

void I8042::write(uint16_t port, uint8_t v) {
  bool reset = false;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (port == kCommand) {
      lastWasCmd_ = 1;
      switch (v) {
        case 0x20: push(ctr_); break;                     // read command byte
        case 0x60: case 0xd1: case 0xd2: pendingCmd_ = v; break;  // command byte / output port / fake kbd input follow
        case 0xaa: push(0x55); break;                     // controller self-test passed
        case 0xab: push(0x00); break;                     // keyboard interface test passed
        case 0xad: ctr_ |= kCtrKbdDisabled; break;
        case 0xae: ctr_ &= uint8_t(~kCtrKbdDisabled); break;
        case 0xd0: push(0x01); break;                     // output port: reset line not asserted
        case 0xfe: reset = true; break;                   // pulse the CPU reset line
        default: break;                                   // no AUX port: its commands go unanswered
      }
    } else {
      lastWasCmd_ = 0;
      if (pendingCmd_) {
        uint8_t cmd = pendingCmd_;
        pendingCmd_ = 0;
        if (cmd == 0x60) ctr_ = v;
        else if (cmd == 0xd1) reset = !(v & 0x01);
        else if (cmd == 0xd2) push(v);
      } else {
        // A byte for the keyboard itself: acknowledge; answer reset and identify like an AT keyboard.
        push(0xfa);
        if (v == 0xff) push(0xaa);
        if (v == 0xf2) { push(0xab); push(0x41); }
      }
    }
  }
  if (reset && onReset_) onReset_();
}

void I8042::sendCtrlAltDel() {
  std::lock_guard<std::mutex> g(mu_);
  // Scancode set 1 (the controller translates): Ctrl, Alt, E0 Delete pressed, then released.
  for (uint8_t b : {0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d}) push(b);
}

std::string I8042::saveState() {
  std::lock_guard<std::mutex> g(mu_);
  std::string s;
  s.push_back(char(ctr_));
  s.push_back(char(pendingCmd_));
  s.push_back(char(lastWasCmd_));
  s.push_back(char(lastRead_));
  for (uint8_t b : out_) s.push_back(char(b));
  return s;
}

void I8042::loadState(const std::string& s) {
  std::lock_guard<std::mutex> g(mu_);
  // Four registers, then the output queue, which is bounded at run time as well.
  if (s.size() < 4 || s.size() - 4 > kMaxQueued) {
    throw invalid("snapshot i8042 state is corrupt: " + std::to_string(s.size()) + " bytes (4 + at most " + std::to_string(kMaxQueued) + " queued)");
  }
  uint8_t cmd = uint8_t(s[1]);
  if ((cmd != 0 && cmd != 0x60 && cmd != 0xd1 && cmd != 0xd2) || uint8_t(s[2]) > 1) {
    throw invalid("snapshot i8042 state is corrupt: pending command " + std::to_string(cmd));
  }
  ctr_ = uint8_t(s[0]);
  pendingCmd_ = uint8_t(s[1]);
  lastWasCmd_ = uint8_t(s[2]);
  lastRead_ = uint8_t(s[3]);
  out_.clear();
  for (size_t i = 4; i < s.size(); i++) out_.push_back(uint8_t(s[i]));
}

}  // namespace vmdesk
