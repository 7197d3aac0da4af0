// x86-64 Linux boot protocol: bzImage validation and loading, zero page, e820, cmdline, initrd, and the
// long-mode CPU state (identity page tables, GDT, registers) a 64-bit kernel entry expects.
#pragma once
#include <linux/kvm.h>
#include <cstdint>
#include <string>
#include "vstate/memory.h"

namespace vmdesk {
namespace x86 {

// Guest-physical layout of the boot structures, all in low memory that Linux later reclaims.
constexpr uint64_t kGdtAddr = 0x500;
constexpr uint64_t kZeroPageAddr = 0x7000;
constexpr uint64_t kBootStackTop = 0x8ff0;
constexpr uint64_t kPml4Addr = 0x9000;
constexpr uint64_t kPdptAddr = 0xa000;
constexpr uint64_t kPdAddr = 0xb000;  // four page directories: the first 4 GiB with 2 MiB pages
constexpr uint64_t kCmdlineAddr = 0x20000;
constexpr uint64_t kCmdlineMax = 0x10000;
constexpr uint64_t kKernelLoadAddr = 0x100000;
constexpr uint64_t kEbdaStart = 0x9fc00;
constexpr uint16_t kBootCs = 0x10;  // __BOOT_CS/__BOOT_DS as the boot protocol requires
constexpr uint16_t kBootDs = 0x18;
constexpr uint16_t kBootTss = 0x20;

struct KernelInfo {
  uint16_t protocol = 0;      // e.g. 0x020f
  uint64_t loadAddr = 0;
  uint64_t entry64 = 0;       // loadAddr + 0x200
  uint64_t kernelBytes = 0;   // protected-mode image size
  uint64_t initSize = 0;      // memory the kernel needs from its decompression address
  uint64_t runEnd = 0;        // end of the memory the kernel occupies while decompressing
  uint64_t initrdAddr = 0;
  uint64_t initrdBytes = 0;
};

struct BootParams {
  std::string kernelPath;
  std::string initrdPath;
  std::string cmdline;
};

// Validates the bzImage, copies kernel, initrd and cmdline into guest memory and fills the zero page.
// Throws VmError(EINVAL) with a message naming the problem for malformed or unfitting images.
KernelInfo loadLinux(GuestMemory& mem, const BootParams& p);
// Identity-mapped page tables and GDT in guest memory (the CPU state below points at them).
void writeLongModeTables(GuestMemory& mem);
// Intel MP table (spec 1.4): how a kernel without ACPI finds the other CPUs and the IOAPIC. The floating
// pointer sits at the EBDA, where Linux scans; the configuration table in the (reserved) BIOS area.
constexpr uint64_t kMpTableAddr = 0x9fc00;
constexpr uint64_t kMpConfigAddr = 0xf0000;
constexpr uint32_t kIoapicAddr = 0xfec00000;
void writeMpTable(GuestMemory& mem, uint32_t cpus);
void longModeSregs(kvm_sregs& s);
void bootRegs(kvm_regs& r, uint64_t entry);

}  // namespace x86
}  // namespace vmdesk
