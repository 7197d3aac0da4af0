/* Freestanding test guest for the micro-VMM. Reads the boot parameters exactly as Linux does (cmdline from
 * cmd_line_ptr/ext_cmd_line_ptr, e820 table from the zero page), prints them on COM1, then runs the mode
 * named by "mode=" on the command line: echo, compute, blk, smp, fill, irq. Ends by resetting through the i8042,
 * which the micro-VMM reports as guest-poweroff. */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 mmio_read(u64 a) { return *(volatile u32 *)a; }
static inline void mmio_write(u64 a, u32 v) { *(volatile u32 *)a = v; }

void *memset(void *d, int c, unsigned long n) { u8 *p = d; while (n--) *p++ = (u8)c; return d; }
void *memcpy(void *d, const void *s, unsigned long n) { u8 *p = d; const u8 *q = s; while (n--) *p++ = *q++; return d; }

#define COM1 0x3f8
static volatile int print_lock;
static void lock(void) { while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE)) __asm__ volatile("pause"); }
static void unlock(void) { __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE); }

static void putc_(char c) {
  while (!(inb(COM1 + 5) & 0x20)) {}
  outb(COM1, (u8)c);
}
static void puts_(const char *s) { while (*s) putc_(*s++); }
static void puthex(u64 v, int digits) {
  for (int i = digits - 1; i >= 0; i--) putc_("0123456789abcdef"[(v >> (i * 4)) & 0xf]);
}
static void putdec(u64 v) {
  char b[24]; int n = 0;
  do { b[n++] = (char)('0' + v % 10); v /= 10; } while (v);
  while (n) putc_(b[--n]);
}

static void poweroff(void) {
  outb(0x64, 0xfe);
  for (;;) __asm__ volatile("cli; hlt");
}

static int starts_with(const char *s, const char *p) { while (*p) if (*s++ != *p++) return 0; return 1; }
/* Value of key=... in the command line, copied into out (NUL-terminated); 0 when absent. */
static int cmdline_get(const char *cl, const char *key, char *out, int max) {
  const char *p = cl;
  while (*p) {
    while (*p == ' ') p++;
    if (starts_with(p, key) && p[0] && (p == cl || p[-1] == ' ')) {
      const char *k = key; while (*k) { k++; p++; }
      if (*p == '=') {
        p++;
        int n = 0;
        while (*p && *p != ' ' && n < max - 1) out[n++] = *p++;
        out[n] = 0;
        return 1;
      }
    }
    while (*p && *p != ' ') p++;
  }
  return 0;
}
static u64 cmdline_num(const char *cl, const char *key, u64 dflt) {
  char b[24];
  if (!cmdline_get(cl, key, b, sizeof b)) return dflt;
  u64 v = 0;
  for (char *p = b; *p >= '0' && *p <= '9'; p++) v = v * 10 + (u64)(*p - '0');
  return v;
}
static int streq(const char *a, const char *b) { while (*a && *a == *b) { a++; b++; } return *a == *b; }

/* ---- echo: serial input comes back unchanged; ^D ends ---- */
static void mode_echo(void) {
  puts_("ECHO-READY\n");
  for (;;) {
    if (inb(COM1 + 5) & 1) {
      u8 c = inb(COM1);
      if (c == 4) { puts_("\nBYE\n"); poweroff(); }
      putc_((char)c);
    }
  }
}

/* ---- compute: a deterministic hash chain with progress lines; results left in registers ---- */
static void mode_compute(const char *cl) {
  u64 steps = cmdline_num(cl, "steps", 10), iters = cmdline_num(cl, "iters", 2000);
  u64 h = 0x9e3779b97f4a7c15ull;
  for (u64 s = 1; s <= steps; s++) {
    for (u64 i = 0; i < iters; i++) {
      h ^= h << 13; h ^= h >> 7; h ^= h << 17; h += i;
    }
    puts_("STEP "); putdec(s); putc_(' '); puthex(h, 16); putc_('\n');
  }
  puts_("DONE "); puthex(h, 16); putc_('\n');
  /* Final registers are part of what a snapshot must reproduce: park known values, then power off. */
  __asm__ volatile(
      "mov %0, %%r12\n mov %1, %%r13\n mov %2, %%r14\n mov $0x5eed5eed, %%r15\n"
      "mov %0, %%rbx\n xor %1, %%rbx\n"
      "mov $0xfe, %%al\n outb %%al, $0x64\n 1: cli\n hlt\n jmp 1b" ::"r"(h), "r"(steps), "r"(iters)
      : "r12", "r13", "r14", "r15", "rbx", "rax", "memory");
}

/* ---- blk: minimal virtio-mmio v2 driver, polled ---- */
#define VIRTIO_BASE 0xd0000000ull
struct vdesc { u64 addr; u32 len; u16 flags, next; };
struct vavail { u16 flags, idx, ring[8]; };
struct vused_elem { u32 id, len; };
struct vused { u16 flags, idx; struct vused_elem ring[8]; };
static struct vdesc vq_desc[8] __attribute__((aligned(4096)));
static struct vavail vq_avail __attribute__((aligned(4096)));
static struct vused vq_used __attribute__((aligned(4096)));
static struct { u32 type, reserved; u64 sector; } blk_hdr __attribute__((aligned(16)));
static u8 blk_buf[512] __attribute__((aligned(512)));
static volatile u8 blk_status;

static int blk_request(u32 type, u64 sector) {
  vq_desc[0] = (struct vdesc){(u64)&blk_hdr, 16, 1, 1};
  blk_hdr.type = type; blk_hdr.reserved = 0; blk_hdr.sector = sector;
  vq_desc[1] = (struct vdesc){(u64)blk_buf, 512, (u16)(1 | (type == 0 ? 2 : 0)), 2};
  vq_desc[2] = (struct vdesc){(u64)&blk_status, 1, 2, 0};
  blk_status = 0xff;
  u16 seen = vq_used.idx;
  vq_avail.ring[vq_avail.idx % 8] = 0;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  vq_avail.idx++;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  mmio_write(VIRTIO_BASE + 0x50, 0);
  while (*(volatile u16 *)&vq_used.idx == seen) {}
  mmio_write(VIRTIO_BASE + 0x64, mmio_read(VIRTIO_BASE + 0x60));
  return blk_status;
}

static void mode_blk(void) {
  if (mmio_read(VIRTIO_BASE) != 0x74726976 || mmio_read(VIRTIO_BASE + 4) != 2 || mmio_read(VIRTIO_BASE + 8) != 2) {
    puts_("BLK-NODEV\n"); poweroff();
  }
  mmio_write(VIRTIO_BASE + 0x70, 0);
  mmio_write(VIRTIO_BASE + 0x70, 1 | 2);
  mmio_write(VIRTIO_BASE + 0x24, 1); mmio_write(VIRTIO_BASE + 0x20, 1); /* VIRTIO_F_VERSION_1 */
  mmio_write(VIRTIO_BASE + 0x24, 0); mmio_write(VIRTIO_BASE + 0x20, 0);
  mmio_write(VIRTIO_BASE + 0x70, 1 | 2 | 8);
  mmio_write(VIRTIO_BASE + 0x30, 0);
  mmio_write(VIRTIO_BASE + 0x38, 8);
  mmio_write(VIRTIO_BASE + 0x80, (u32)(u64)vq_desc); mmio_write(VIRTIO_BASE + 0x84, 0);
  mmio_write(VIRTIO_BASE + 0x90, (u32)(u64)&vq_avail); mmio_write(VIRTIO_BASE + 0x94, 0);
  mmio_write(VIRTIO_BASE + 0xa0, (u32)(u64)&vq_used); mmio_write(VIRTIO_BASE + 0xa4, 0);
  mmio_write(VIRTIO_BASE + 0x44, 1);
  mmio_write(VIRTIO_BASE + 0x70, 1 | 2 | 8 | 4);
  u64 cap = mmio_read(VIRTIO_BASE + 0x100) | ((u64)mmio_read(VIRTIO_BASE + 0x104) << 32);
  puts_("BLK-CAPACITY "); putdec(cap); putc_('\n');

  int st = blk_request(0, 0);
  puts_("BLK-READ "); putdec((u64)st); putc_(' ');
  for (int i = 0; i < 32 && blk_buf[i] >= 32 && blk_buf[i] < 127; i++) putc_((char)blk_buf[i]);
  putc_('\n');

  const char *msg = "WRITTEN-BY-GUEST sector 1";
  memset(blk_buf, 0, 512);
  for (int i = 0; msg[i]; i++) blk_buf[i] = (u8)msg[i];
  st = blk_request(1, 1);
  puts_("BLK-WRITE "); putdec((u64)st); putc_('\n');
  st = blk_request(4, 0);
  puts_("BLK-FLUSH "); putdec((u64)st); putc_('\n');
  memset(blk_buf, 0, 512);
  st = blk_request(0, 1);
  int same = 1;
  for (int i = 0; msg[i]; i++) if (blk_buf[i] != (u8)msg[i]) same = 0;
  puts_(same && st == 0 ? "BLK-VERIFY OK\n" : "BLK-VERIFY FAIL\n");
  poweroff();
}

/* ---- smp: start the APs with INIT-SIPI-SIPI; each reports from its own CPU ---- */
#define LAPIC 0xfee00000ull
extern const u8 ap_tramp_start[], ap_tramp_end[];
static volatile int aps_up;
static u32 apic_id(void) { u32 a, b, c, d; __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0)); return b >> 24; }

void ap_main(void) {
  lock();
  puts_("AP-RUNNING apic="); putdec(apic_id()); putc_('\n');
  unlock();
  __atomic_fetch_add(&aps_up, 1, __ATOMIC_SEQ_CST);
  for (;;) __asm__ volatile("cli; hlt");
}

static void icr(u32 dest, u32 low) {
  mmio_write(LAPIC + 0x310, dest << 24);
  mmio_write(LAPIC + 0x300, low);
  while (mmio_read(LAPIC + 0x300) & (1u << 12)) {}
}

/* The MP table as Linux's mpparse finds it: "_MP_" floating pointer in the EBDA, checksummed "PCMP" table. */
static void print_mptable(void) {
  const u8 *fp = (const u8 *)0x9fc00;
  u8 sum = 0;
  for (int i = 0; i < 16; i++) sum = (u8)(sum + fp[i]);
  if (fp[0] != '_' || fp[1] != 'M' || fp[2] != 'P' || fp[3] != '_' || sum) { puts_("MPTABLE missing\n"); return; }
  const u8 *t = (const u8 *)(u64)*(const u32 *)(fp + 4);
  u16 len = *(const u16 *)(t + 4), count = *(const u16 *)(t + 34);
  sum = 0;
  for (u16 i = 0; i < len; i++) sum = (u8)(sum + t[i]);
  if (t[0] != 'P' || t[1] != 'C' || t[2] != 'M' || t[3] != 'P' || sum) { puts_("MPTABLE bad-checksum\n"); return; }
  int cpus = 0, irqs = 0; u32 ioapic = 0;
  const u8 *e = t + 44;
  for (u16 i = 0; i < count; i++) {
    if (e[0] == 0) { cpus += e[3] & 1; e += 20; continue; }
    if (e[0] == 2) ioapic = *(const u32 *)(e + 4);
    if (e[0] == 3) irqs++;
    e += 8;
  }
  puts_("MPTABLE cpus="); putdec((u64)cpus); puts_(" ioapic=0x"); puthex(ioapic, 8); puts_(" irqs="); putdec((u64)irqs); putc_('\n');
}

static void mode_smp(const char *cl) {
  u64 cpus = cmdline_num(cl, "cpus", 2);
  print_mptable();
  memcpy((void *)0x6000, ap_tramp_start, (unsigned long)(ap_tramp_end - ap_tramp_start));
  lock();
  puts_("BSP-RUNNING apic="); putdec(apic_id()); putc_('\n');
  unlock();
  for (u32 id = 1; id < cpus; id++) {
    icr(id, 0x4500);         /* INIT */
    icr(id, 0x4600 | 0x06);  /* SIPI, vector 0x06 -> 0x6000 */
    icr(id, 0x4600 | 0x06);
    /* One AP at a time: they share a stack. */
    for (u64 spin = 0; __atomic_load_n(&aps_up, __ATOMIC_SEQ_CST) < (int)id && spin < 2000000000ull; spin++) __asm__ volatile("pause");
  }
  lock();
  puts_("SMP-OK cpus="); putdec((u64)aps_up + 1); putc_('\n');
  unlock();
  poweroff();
}

/* ---- fill: dirty every page of usable RAM below 4 GiB (above the image), then echo ---- */
static void mode_fill(const u8 *zp) {
  u64 pages = 0;
  for (u8 i = 0; i < zp[0x1e8]; i++) {
    const u8 *e = zp + 0x2d0 + i * 20;
    u64 addr = *(const u64 *)e, end = addr + *(const u64 *)(e + 8);
    if (*(const u32 *)(e + 16) != 1) continue;
    if (addr < 0x400000) addr = 0x400000;
    if (end > 0x100000000ull) end = 0x100000000ull;
    for (u64 a = addr; a + 8 <= end; a += 4096, pages++) *(volatile u64 *)a = a ^ 0x5a5a5a5a5a5a5a5aull;
  }
  puts_("FILLED pages="); putdec(pages); putc_('\n');
  mode_echo();
}

/* ---- irq: interrupt-driven serial input through the in-kernel PIC, PIT ticks as the clock ---- */
struct idt_entry { u16 off0, sel; u8 ist, type; u16 off1; u32 off2, zero; } __attribute__((packed));
static struct idt_entry idt[256] __attribute__((aligned(16)));
static struct { u16 limit; u64 base; } __attribute__((packed)) idtr;
struct interrupt_frame;
static volatile u64 ticks;
static volatile u8 rx_buf[64];
static volatile u32 rx_head, rx_tail;

__attribute__((interrupt)) static void irq_timer(struct interrupt_frame *f) {
  (void)f;
  ticks++;
  outb(0x20, 0x20);
}
__attribute__((interrupt)) static void irq_serial(struct interrupt_frame *f) {
  (void)f;
  while (inb(COM1 + 5) & 1) rx_buf[rx_head++ % 64] = inb(COM1);
  outb(0x20, 0x20);
}
static volatile u8 kbd_buf[64];
static volatile u32 kbd_head, kbd_tail;
__attribute__((interrupt)) static void irq_keyboard(struct interrupt_frame *f) {
  (void)f;
  while (inb(0x64) & 1) kbd_buf[kbd_head++ % 64] = inb(0x60);
  outb(0x20, 0x20);
}
__attribute__((interrupt)) static void irq_spurious(struct interrupt_frame *f) { (void)f; }

static void set_gate(int v, void (*h)(struct interrupt_frame *)) {
  u64 a = (u64)h;
  idt[v] = (struct idt_entry){(u16)a, 0x10, 0, 0x8e, (u16)(a >> 16), (u32)(a >> 32), 0};
}

static void mode_irq(void) {
  for (int v = 0x20; v < 0x30; v++) set_gate(v, irq_spurious);
  set_gate(0xff, irq_spurious);
  set_gate(0x20, irq_timer);
  set_gate(0x21, irq_keyboard);
  set_gate(0x24, irq_serial);
  idtr.limit = sizeof idt - 1;
  idtr.base = (u64)idt;
  __asm__ volatile("lidt %0" ::"m"(idtr));
  /* 8259 PIC: vectors 0x20-0x2f, only IRQ0 (PIT), IRQ1 (keyboard) and IRQ4 (COM1) unmasked. */
  outb(0x20, 0x11); outb(0xa0, 0x11);
  outb(0x21, 0x20); outb(0xa1, 0x28);
  outb(0x21, 4); outb(0xa1, 2);
  outb(0x21, 1); outb(0xa1, 1);
  outb(0x21, 0xec); outb(0xa1, 0xff);
  /* PIT channel 0, rate generator, ~100 Hz. */
  outb(0x43, 0x34); outb(0x40, 11932 & 0xff); outb(0x40, 11932 >> 8);
  outb(COM1 + 4, 0x0b);  /* DTR | RTS | OUT2 (the PC's IRQ enable) */
  outb(COM1 + 1, 0x01);  /* interrupt on received data */
  puts_("IRQ-READY\n");
  __asm__ volatile("sti");
  u64 last = 0;
  int ctrl = 0, alt = 0, e0 = 0;
  for (;;) {
    __asm__ volatile("hlt");
    while (kbd_tail != kbd_head) {
      u8 sc = kbd_buf[kbd_tail++ % 64];
      if (sc == 0xe0) { e0 = 1; continue; }
      if (sc == 0x1d || sc == 0x9d) ctrl = sc == 0x1d;
      if (sc == 0x38 || sc == 0xb8) alt = sc == 0x38;
      if (e0 && sc == 0x53 && ctrl && alt) {
        __asm__ volatile("cli");
        puts_("CTRL-ALT-DEL\n");
        poweroff();
      }
      e0 = 0;
    }
    while (rx_tail != rx_head) {
      u8 c = rx_buf[rx_tail++ % 64];
      u64 t = ticks;
      __asm__ volatile("cli");
      puts_("IRQ-RX "); putc_((char)c); puts_(" ticks="); putdec(t); puts_(t >= last ? " monotonic\n" : " BACKWARDS\n");
      last = t;
      if (c == 'q') { puts_("PIT-TICKS "); putdec(ticks); putc_('\n'); poweroff(); }
      __asm__ volatile("sti");
    }
  }
}

static void print_e820(const u8 *zp) {
  u8 n = zp[0x1e8];
  for (u8 i = 0; i < n; i++) {
    const u8 *e = zp + 0x2d0 + i * 20;
    u64 addr = *(const u64 *)e, size = *(const u64 *)(e + 8);
    u32 type = *(const u32 *)(e + 16);
    /* Same text as Linux's e820__print_table(). */
    puts_("BIOS-e820: [mem 0x"); puthex(addr, 16); puts_("-0x"); puthex(addr + size - 1, 16); puts_("] ");
    puts_(type == 1 ? "usable" : type == 2 ? "reserved" : type == 3 ? "ACPI data" : "unknown");
    putc_('\n');
  }
}

void guest_main(const u8 *zp) {
  /* Linux: cmd_line_ptr at 0x228 in the setup header, high half in ext_cmd_line_ptr at 0x0c8. */
  u64 clp = *(const u32 *)(zp + 0x228) | ((u64)*(const u32 *)(zp + 0x0c8) << 32);
  const char *cl = (const char *)clp;
  lock();
  puts_("VMDESK-TEST-GUEST boot protocol 0x"); puthex(*(const u16 *)(zp + 0x206), 4); putc_('\n');
  puts_("Command line: "); puts_(cl); putc_('\n');
  print_e820(zp);
  unlock();
  char mode[16];
  if (!cmdline_get(cl, "mode", mode, sizeof mode)) mode[0] = 0;
  if (streq(mode, "echo")) mode_echo();
  if (streq(mode, "compute")) mode_compute(cl);
  if (streq(mode, "blk")) mode_blk();
  if (streq(mode, "smp")) mode_smp(cl);
  if (streq(mode, "fill")) mode_fill(zp);
  if (streq(mode, "irq")) mode_irq();
  puts_("GUEST-DONE\n");
  poweroff();
}
