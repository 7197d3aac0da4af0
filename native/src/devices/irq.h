// How devices signal interrupts without knowing about KVM: an edge on an ISA/IOAPIC pin.
#pragma once
#include <cstdint>
#include <functional>

namespace vmdesk {
using IrqPulse = std::function<void(uint32_t gsi)>;
}
