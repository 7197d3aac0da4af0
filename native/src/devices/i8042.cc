// i8042 reset line. Like Firecracker, a micro-VM has no reboot: "reset" (Linux reboot=k, or a test guest
// writing 0xFE to port 0x64) powers the VM off and the supervisor reports guest-poweroff.
#include "devices/i8042.h"

namespace vmdesk {

uint8_t I8042::read(uint16_t port) {
  // Status 0: output buffer empty, input buffer empty, so drivers never wait on us.
  return 0;
}

void I8042::write(uint16_t port, uint8_t value) {
  if (port == kCommand && value == 0xfe && onReset_) onReset_();
}

}  // namespace vmdesk
