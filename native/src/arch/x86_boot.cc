// Linux x86 boot protocol loader (Documentation/arch/x86/boot.rst): only the 64-bit entry point is used,
// so the kernel must advertise XLF_KERNEL_64 (protocol 2.12+).
#include "arch/x86_boot.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <algorithm>
#include <vector>

namespace vmdesk {
namespace x86 {

namespace {

// Offsets inside the zero page (struct boot_params) and its embedded setup header.
constexpr size_t kHdrSetupSects = 0x1f1;
constexpr size_t kHdrSyssize = 0x1f4;
constexpr size_t kHdrBootFlag = 0x1fe;
constexpr size_t kHdrJump = 0x200;
constexpr size_t kHdrMagic = 0x202;
constexpr size_t kHdrVersion = 0x206;
constexpr size_t kHdrVidMode = 0x1fa;
constexpr size_t kHdrTypeOfLoader = 0x210;
constexpr size_t kHdrLoadflags = 0x211;
constexpr size_t kHdrRamdiskImage = 0x218;
constexpr size_t kHdrRamdiskSize = 0x21c;
constexpr size_t kHdrHeapEnd = 0x224;
constexpr size_t kHdrCmdLinePtr = 0x228;
constexpr size_t kHdrInitrdAddrMax = 0x22c;
constexpr size_t kHdrKernelAlignment = 0x230;
constexpr size_t kHdrXloadflags = 0x236;
constexpr size_t kHdrCmdlineSize = 0x238;
constexpr size_t kHdrInitSize = 0x260;
constexpr size_t kHdrRelocatable = 0x234;
constexpr size_t kHdrPrefAddress = 0x258;
constexpr size_t kBpExtRamdiskImage = 0x0c0;
constexpr size_t kBpExtRamdiskSize = 0x0c4;
constexpr size_t kBpExtCmdLinePtr = 0x0c8;
constexpr size_t kBpE820Entries = 0x1e8;
constexpr size_t kBpE820Table = 0x2d0;
constexpr size_t kE820Max = 128;

constexpr uint8_t kLoadedHigh = 0x01;
constexpr uint8_t kCanUseHeap = 0x80;
constexpr uint16_t kXlfKernel64 = 0x01;
constexpr uint16_t kMinProtocol = 0x020c;  // first version with xloadflags, hence XLF_KERNEL_64

template <typename T>
T rd(const std::vector<uint8_t>& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
template <typename T>
void wr(uint8_t* p, size_t off, T v) { std::memcpy(p + off, &v, sizeof v); }

std::vector<uint8_t> readFile(const std::string& path, const char* what) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw sysError(std::string("cannot open ") + what + " " + path, "EINVAL");
  struct stat st;
  if (fstat(fd.get(), &st) != 0) throw sysError(std::string("stat ") + what);
  if (!S_ISREG(st.st_mode)) throw invalid(std::string(what) + " " + path + " is not a regular file");
  std::vector<uint8_t> data(size_t(st.st_size));
  readAll(fd.get(), data.data(), data.size(), what);
  return data;
}

std::string hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)v);
  return buf;
}

std::string mib(uint64_t v) { return std::to_string((v + (1 << 20) - 1) >> 20) + " MiB"; }

}  // namespace

KernelInfo loadLinux(GuestMemory& mem, const BootParams& p) {
  std::vector<uint8_t> img = readFile(p.kernelPath, "kernel");
  const std::string name = "kernel " + p.kernelPath;
  if (img.size() < 0x270) throw invalid(name + " is truncated (" + std::to_string(img.size()) + " bytes, no full setup header)");
  if (rd<uint32_t>(img, kHdrMagic) != 0x53726448u) throw invalid(name + " is not a bzImage: setup header magic \"HdrS\" missing at 0x202");
  if (rd<uint16_t>(img, kHdrBootFlag) != 0xAA55) throw invalid(name + " is not a bzImage: boot flag 0xAA55 missing at 0x1fe");

  KernelInfo k;
  k.protocol = rd<uint16_t>(img, kHdrVersion);
  if (k.protocol < kMinProtocol) {
    char buf[96];
    snprintf(buf, sizeof buf, "boot protocol %u.%02u is too old (need 2.12 or later for a 64-bit entry point)", k.protocol >> 8, k.protocol & 0xff);
    throw invalid(name + ": " + buf);
  }
  uint8_t loadflags = img[kHdrLoadflags];
  if (!(loadflags & kLoadedHigh)) throw invalid(name + " is a zImage (not loaded high): only bzImage is supported");
  if (!(rd<uint16_t>(img, kHdrXloadflags) & kXlfKernel64)) throw invalid(name + " has no 64-bit entry point (XLF_KERNEL_64 not set)");

  unsigned setupSects = img[kHdrSetupSects] ? img[kHdrSetupSects] : 4;
  uint64_t setupBytes = uint64_t(setupSects + 1) * 512;
  uint64_t declared = uint64_t(rd<uint32_t>(img, kHdrSyssize)) * 16;
  if (img.size() <= setupBytes) throw invalid(name + " is truncated: it ends inside the " + std::to_string(setupBytes) + "-byte setup code");
  k.kernelBytes = img.size() - setupBytes;
  if (declared > k.kernelBytes) {
    throw invalid(name + " is truncated: header declares " + std::to_string(declared) + " bytes of kernel, file has " + std::to_string(k.kernelBytes));
  }
  k.initSize = std::max<uint64_t>(rd<uint32_t>(img, kHdrInitSize), k.kernelBytes);
  k.loadAddr = kKernelLoadAddr;
  k.entry64 = k.loadAddr + 0x200;
  // Where the kernel decompresses itself: a relocatable kernel rounds the load address up to its
  // alignment but never goes below pref_address (LOAD_PHYSICAL_ADDR); a fixed one uses pref_address.
  uint64_t align = rd<uint32_t>(img, kHdrKernelAlignment);
  if (align == 0 || (align & (align - 1))) align = 0x200000;
  uint64_t pref = rd<uint64_t>(img, kHdrPrefAddress);
  if (pref == 0) pref = k.loadAddr;
  uint64_t target = img[kHdrRelocatable] ? std::max((k.loadAddr + align - 1) & ~(align - 1), pref) : pref;
  k.runEnd = std::max(k.loadAddr + k.kernelBytes, target + k.initSize);
  if (k.runEnd > mem.lowEnd()) {
    throw invalid(name + " needs " + mib(k.runEnd) + " of memory to load and decompress, the VM has " + mib(mem.total()));
  }
  std::memcpy(mem.ptr(k.loadAddr, k.kernelBytes), img.data() + setupBytes, k.kernelBytes);

  uint8_t* zp = mem.ptr(kZeroPageAddr, 4096);
  std::memset(zp, 0, 4096);
  // The setup header runs from 0x1f1 to 0x202 + the length byte at 0x201; copy it as the loader must.
  size_t hdrEnd = std::min<size_t>(0x202 + img[0x201], 0x280);
  std::memcpy(zp + kHdrSetupSects, img.data() + kHdrSetupSects, hdrEnd - kHdrSetupSects);
  (void)kHdrJump;
  wr<uint16_t>(zp, kHdrVidMode, 0xffff);
  zp[kHdrTypeOfLoader] = 0xff;  // "undefined" boot loader id
  zp[kHdrLoadflags] = loadflags | kCanUseHeap;
  wr<uint16_t>(zp, kHdrHeapEnd, 0xfe00);

  uint32_t cmdlineSize = rd<uint32_t>(img, kHdrCmdlineSize);
  if (p.cmdline.size() + 1 > std::min<uint64_t>(cmdlineSize ? cmdlineSize : 256, kCmdlineMax)) {
    throw invalid("kernel command line is " + std::to_string(p.cmdline.size()) + " bytes; the kernel accepts at most " + std::to_string(cmdlineSize - 1));
  }
  uint8_t* cl = mem.ptr(kCmdlineAddr, kCmdlineMax);
  std::memset(cl, 0, p.cmdline.size() + 1);
  std::memcpy(cl, p.cmdline.data(), p.cmdline.size());
  wr<uint32_t>(zp, kHdrCmdLinePtr, uint32_t(kCmdlineAddr));
  wr<uint32_t>(zp, kBpExtCmdLinePtr, 0);

  if (!p.initrdPath.empty()) {
    std::vector<uint8_t> initrd = readFile(p.initrdPath, "initrd");
    uint64_t maxAddr = rd<uint32_t>(img, kHdrInitrdAddrMax);
    uint64_t top = std::min<uint64_t>(mem.lowEnd(), maxAddr + 1);
    uint64_t kernelEnd = k.runEnd;
    if (initrd.size() > top || ((top - initrd.size()) & ~0xfffull) < kernelEnd) {
      throw invalid("initrd " + p.initrdPath + " (" + mib(initrd.size()) + ") does not fit in guest memory above the kernel (" +
                    mib(mem.total()) + " total): give the VM more memory");
    }
    // Highest page-aligned spot, like other loaders: keeps the initrd clear of the decompressing kernel.
    k.initrdAddr = (top - initrd.size()) & ~0xfffull;
    k.initrdBytes = initrd.size();
    std::memcpy(mem.ptr(k.initrdAddr, initrd.size()), initrd.data(), initrd.size());
    wr<uint32_t>(zp, kHdrRamdiskImage, uint32_t(k.initrdAddr));
    wr<uint32_t>(zp, kHdrRamdiskSize, uint32_t(k.initrdBytes));
    wr<uint32_t>(zp, kBpExtRamdiskImage, uint32_t(k.initrdAddr >> 32));
    wr<uint32_t>(zp, kBpExtRamdiskSize, uint32_t(k.initrdBytes >> 32));
  }

  struct E820 { uint64_t addr, size; uint32_t type; } __attribute__((packed));
  std::vector<E820> map;
  map.push_back({0, kEbdaStart, 1});
  map.push_back({kEbdaStart, 0x100000 - kEbdaStart, 2});  // EBDA, VGA hole and BIOS area
  map.push_back({0x100000, mem.lowEnd() - 0x100000, 1});
  for (size_t i = 1; i < mem.regions().size(); i++) map.push_back({mem.regions()[i].gpa, mem.regions()[i].size, 1});
  if (map.size() > kE820Max) throw engineError("too many e820 entries");
  zp[kBpE820Entries] = uint8_t(map.size());
  std::memcpy(zp + kBpE820Table, map.data(), map.size() * sizeof(E820));
  (void)hex;
  return k;
}

void writeLongModeTables(GuestMemory& mem) {
  auto* pml4 = reinterpret_cast<uint64_t*>(mem.ptr(kPml4Addr, 4096));
  auto* pdpt = reinterpret_cast<uint64_t*>(mem.ptr(kPdptAddr, 4096));
  auto* pd = reinterpret_cast<uint64_t*>(mem.ptr(kPdAddr, 4 * 4096));
  std::memset(pml4, 0, 4096);
  std::memset(pdpt, 0, 4096);
  pml4[0] = kPdptAddr | 0x3;  // present | writable
  for (uint64_t i = 0; i < 4; i++) pdpt[i] = (kPdAddr + i * 4096) | 0x3;
  for (uint64_t i = 0; i < 4 * 512; i++) pd[i] = (i << 21) | 0x83;  // 2 MiB page | writable | present

  uint64_t* gdt = reinterpret_cast<uint64_t*>(mem.ptr(kGdtAddr, 5 * 8));
  gdt[0] = 0;
  gdt[1] = 0;
  gdt[2] = 0x00af9b000000ffffull;  // 64-bit code, present, ring 0
  gdt[3] = 0x00cf93000000ffffull;  // flat data
  gdt[4] = 0x008f8b000000ffffull;  // busy TSS (only loaded, never used)
}

namespace {
uint8_t checksum(const uint8_t* p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; i++) sum = uint8_t(sum + p[i]);
  return uint8_t(-sum);
}
}  // namespace

void writeMpTable(GuestMemory& mem, uint32_t cpus) {
  // Configuration table: 44-byte header, a processor entry per vCPU, the ISA bus, the IOAPIC, the 16 ISA
  // interrupts routed to IOAPIC pins and the two local interrupt lines.
  const uint32_t kIrqs = 16;
  const uint8_t ioapicId = uint8_t(cpus < 254 ? cpus + 1 : 255);
  std::vector<uint8_t> t(44, 0);
  auto put = [&](std::initializer_list<uint8_t> bytes) { t.insert(t.end(), bytes); };
  uint16_t entries = 0;
  for (uint32_t i = 0; i < cpus; i++, entries++) {
    uint8_t e[20] = {0, uint8_t(i), 0x14, uint8_t(1 | (i == 0 ? 2 : 0))};  // processor, enabled (+BSP)
    uint32_t signature = 0x600, features = 0x201;  // family 6; FPU + APIC
    std::memcpy(e + 4, &signature, 4);
    std::memcpy(e + 8, &features, 4);
    t.insert(t.end(), e, e + 20);
  }
  put({1, 0, 'I', 'S', 'A', ' ', ' ', ' '});  // bus 0 is ISA
  entries++;
  {
    uint8_t e[8] = {2, ioapicId, 0x11, 1};
    std::memcpy(e + 4, &kIoapicAddr, 4);
    t.insert(t.end(), e, e + 8);
    entries++;
  }
  for (uint8_t irq = 0; irq < kIrqs; irq++, entries++) put({3, 0, 0, 0, 0, irq, ioapicId, irq});  // ISA irq -> IOAPIC pin
  put({4, 3, 0, 0, 0, 0, 0xff, 0});  // ExtINT -> LINT0 of all local APICs
  put({4, 1, 0, 0, 0, 0, 0xff, 1});  // NMI -> LINT1
  entries += 2;

  uint8_t* h = t.data();
  std::memcpy(h, "PCMP", 4);
  uint16_t len = uint16_t(t.size());
  std::memcpy(h + 4, &len, 2);
  h[6] = 4;  // spec revision 1.4
  std::memcpy(h + 8, "VMDESK  ", 8);
  std::memcpy(h + 16, "MICROVM     ", 12);
  std::memcpy(h + 34, &entries, 2);
  uint32_t lapic = 0xfee00000;
  std::memcpy(h + 36, &lapic, 4);
  h[7] = checksum(h, t.size());

  uint8_t fp[16] = {'_', 'M', 'P', '_'};
  uint32_t tableAddr = uint32_t(kMpConfigAddr);
  std::memcpy(fp + 4, &tableAddr, 4);
  fp[8] = 1;  // length in 16-byte units
  fp[9] = 4;
  fp[10] = checksum(fp, 16);
  if (t.size() > 0x10000) throw invalid("too many vCPUs for the MP table (" + std::to_string(cpus) + ")");
  std::memcpy(mem.ptr(kMpTableAddr, 16), fp, 16);
  std::memcpy(mem.ptr(kMpConfigAddr, t.size()), t.data(), t.size());
}

static kvm_segment segment(uint16_t sel, uint8_t type, bool code64, bool s) {
  kvm_segment seg{};
  seg.base = 0;
  seg.limit = 0xfffff;
  seg.selector = sel;
  seg.type = type;
  seg.present = 1;
  seg.dpl = 0;
  seg.db = code64 ? 0 : (s ? 1 : 0);
  seg.s = s;
  seg.l = code64;
  seg.g = 1;
  return seg;
}

void longModeSregs(kvm_sregs& s) {
  s.cs = segment(kBootCs, 0xb, true, true);
  s.ds = s.es = s.fs = s.gs = s.ss = segment(kBootDs, 0x3, false, true);
  s.tr = segment(kBootTss, 0xb, false, false);
  s.gdt.base = kGdtAddr;
  s.gdt.limit = 5 * 8 - 1;
  s.idt.base = 0;
  s.idt.limit = 0;
  s.cr3 = kPml4Addr;
  s.cr4 |= 0x20;                   // PAE
  s.cr0 |= 0x80000001u | 0x10;     // PG | PE | ET
  s.efer |= 0x500;                 // LME | LMA
}

void bootRegs(kvm_regs& r, uint64_t entry) {
  std::memset(&r, 0, sizeof r);
  r.rflags = 0x2;
  r.rip = entry;
  r.rsi = kZeroPageAddr;  // the 64-bit boot protocol passes the zero page in %rsi
  r.rsp = kBootStackTop;
  r.rbp = kBootStackTop;
}

}  // namespace x86
}  // namespace vmdesk
