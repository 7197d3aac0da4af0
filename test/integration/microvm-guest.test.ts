// Real KVM guests on the native micro-VMM: boot parameters as Linux reads them, serial in/out, two vCPUs,
// virtio-blk reads and writes, pause/resume, and snapshot/restore continuing exactly where it left off.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { addon, ensureTestGuest, kvmSkipReason, runGuest } from '../native-guests/harness.js';

const skip = kvmSkipReason();
if (skip) console.log(`[microvm-guest] skipped: ${skip}`);
const work = mkdtempSync(join(tmpdir(), 'vmdesk-microvm-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function e820Lines(out: string): string[] {
  return out.split('\n').filter((l) => l.startsWith('BIOS-e820:'));
}

describe.skipIf(!!skip)('micro-VM guests on KVM', () => {
  it('passes the command line and the e820 map through the zero page as Linux reads them', async () => {
    const cmdline = 'console=ttyS0 quiet vmdesk.test=a-b_c/42';
    const r = await runGuest({ cpus: 1, memoryMiB: 64, kernel: ensureTestGuest(), cmdline });
    expect(r.out).toContain('VMDESK-TEST-GUEST boot protocol 0x020f');
    expect(r.out).toContain(`Command line: ${cmdline}\n`);
    expect(e820Lines(r.out)).toEqual([
      'BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable',
      'BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved',
      'BIOS-e820: [mem 0x0000000000100000-0x0000000003ffffff] usable',
    ]);
    expect(r.exit.reason).toBe('guest-poweroff');
    expect(r.out).toContain('GUEST-DONE');
  });

  it('splits memory around the 32-bit MMIO hole in the e820 map', async () => {
    const r = await runGuest({ cpus: 1, memoryMiB: 4096, kernel: ensureTestGuest(), cmdline: 'x' });
    expect(e820Lines(r.out)).toEqual([
      'BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable',
      'BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved',
      'BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable',
      'BIOS-e820: [mem 0x0000000100000000-0x000000013fffffff] usable',
    ]);
  });

  it('echoes serial input back', async () => {
    let typed = false;
    const r = await runGuest({ cpus: 1, memoryMiB: 32, kernel: ensureTestGuest(), cmdline: 'mode=echo' }, (out, vm) => {
      if (!typed && out.includes('ECHO-READY\n')) {
        typed = true;
        vm.writeSerial(Buffer.from('hello, serial 123\r\n'));
        setTimeout(() => vm.writeSerial(Buffer.from('second line\n\x04')), 50);
      }
    });
    const after = r.out.slice(r.out.indexOf('ECHO-READY\n') + 'ECHO-READY\n'.length);
    expect(after).toBe('hello, serial 123\r\nsecond line\n\nBYE\n');
    expect(r.exit.reason).toBe('guest-poweroff');
  });

  it('runs two vCPUs: the BSP starts the AP with INIT/SIPI and both print', async () => {
    const r = await runGuest({ cpus: 2, memoryMiB: 32, kernel: ensureTestGuest(), cmdline: 'mode=smp cpus=2' });
    // The MP table (what a kernel without ACPI uses to find CPUs) lists both, with the IOAPIC and ISA IRQs.
    expect(r.out).toContain('MPTABLE cpus=2 ioapic=0xfec00000 irqs=16');
    expect(r.out).toContain('BSP-RUNNING apic=0');
    expect(r.out).toContain('AP-RUNNING apic=1');
    expect(r.out).toContain('SMP-OK cpus=2');
  });

  it('runs four vCPUs', async () => {
    const r = await runGuest({ cpus: 4, memoryMiB: 32, kernel: ensureTestGuest(), cmdline: 'mode=smp cpus=4' });
    expect(r.out).toContain('MPTABLE cpus=4');
    for (const id of [1, 2, 3]) expect(r.out).toContain(`AP-RUNNING apic=${id}`);
    expect(r.out).toContain('SMP-OK cpus=4');
  });

  it('reads and writes sectors of a raw image over virtio-blk', async () => {
    const disk = join(work, 'disk.img');
    const img = Buffer.alloc(1 << 20);
    img.write('SECTOR-ZERO-CONTENT from host', 0);
    writeFileSync(disk, img);
    const r = await runGuest({ cpus: 1, memoryMiB: 32, kernel: ensureTestGuest(), cmdline: 'mode=blk', disks: [{ path: disk }] });
    expect(r.out).toContain('virtio_mmio.device=4K@0xd0000000:5');
    expect(r.out).toContain('BLK-CAPACITY 2048');
    expect(r.out).toContain('BLK-READ 0 SECTOR-ZERO-CONTENT from host');
    expect(r.out).toContain('BLK-WRITE 0');
    expect(r.out).toContain('BLK-VERIFY OK');
    const after = readFileSync(disk);
    expect(after.subarray(512, 512 + 25).toString()).toBe('WRITTEN-BY-GUEST sector 1');
    expect(after.subarray(0, 29).toString()).toBe('SECTOR-ZERO-CONTENT from host');
  });

  it('refuses writes to a read-only disk', async () => {
    const disk = join(work, 'ro.img');
    writeFileSync(disk, Buffer.alloc(1 << 20));
    const r = await runGuest({ cpus: 1, memoryMiB: 32, kernel: ensureTestGuest(), cmdline: 'mode=blk', disks: [{ path: disk, readOnly: true }] });
    expect(r.out).toContain('BLK-WRITE 1');
    expect(readFileSync(disk).subarray(512, 540).every((b) => b === 0)).toBe(true);
  });

  it('delivers serial and PIT interrupts through the in-kernel irqchip', async () => {
    // Each key is typed only after the previous one was handled, so a loaded host cannot merge them.
    let typedA = false;
    let typedQ = false;
    const r = await runGuest({ cpus: 1, memoryMiB: 32, kernel: ensureTestGuest(), cmdline: 'mode=irq' }, (out, vm) => {
      if (!typedA && out.includes('IRQ-READY')) {
        typedA = true;
        setTimeout(() => vm.writeSerial(Buffer.from('a')), 300);
      }
      if (!typedQ && out.includes('IRQ-RX a')) {
        typedQ = true;
        setTimeout(() => vm.writeSerial(Buffer.from('q')), 400);
      }
    });
    const ticks = [...r.out.matchAll(/IRQ-RX (.) ticks=(\d+) monotonic/g)].map((m) => [m[1], Number(m[2])] as const);
    expect(ticks.map((t) => t[0])).toEqual(['a', 'q']);
    // The PIT runs at ~100 Hz: ticks advance between the two keystrokes ~400 ms apart.
    expect(ticks[0]![1]).toBeGreaterThan(0);
    expect(ticks[1]![1]).toBeGreaterThan(ticks[0]![1]);
    expect(r.out).not.toContain('BACKWARDS');
  });

  it('delivers Ctrl-Alt-Del through the i8042 keyboard interrupt', async () => {
    let sent = false;
    const r = await runGuest({ cpus: 1, memoryMiB: 32, kernel: ensureTestGuest(), cmdline: 'mode=irq' }, (out, vm) => {
      if (!sent && out.includes('IRQ-READY')) {
        sent = true;
        setTimeout(() => vm.sendCtrlAltDel(), 100);
      }
    });
    expect(r.out).toContain('CTRL-ALT-DEL');
    expect(r.exit.reason).toBe('guest-poweroff');
  });

  it('keeps interrupts, the PIT and the UART working across snapshot and restore', async () => {
    const snap = join(work, 'irq.snap');
    let snapDone: Promise<unknown> | undefined;
    await runGuest({ cpus: 1, memoryMiB: 32, kernel: ensureTestGuest(), cmdline: 'mode=irq' }, (out, vm) => {
      if (!snapDone && out.includes('IRQ-READY')) {
        snapDone = new Promise((r) => setTimeout(r, 300)).then(() => vm.snapshot(snap)).then(() => vm.writeSerial(Buffer.from('q')));
      }
    });
    await snapDone;
    // The restored guest sits in HLT waiting for interrupts, silent until it gets input.
    let typedQ = false;
    const r = await runGuest(
      { restoreFrom: snap },
      (out, vm) => {
        if (!typedQ && out.includes('IRQ-RX x')) {
          typedQ = true;
          setTimeout(() => vm.writeSerial(Buffer.from('q')), 400);
        }
      },
      30_000,
      (vm) => setTimeout(() => vm.writeSerial(Buffer.from('x')), 200),
    );
    expect(r.out).toMatch(/IRQ-RX x ticks=\d+ monotonic/);
    const [, x, q] = /IRQ-RX x ticks=(\d+)[\s\S]*IRQ-RX q ticks=(\d+)/.exec(r.out) ?? [];
    expect(Number(q)).toBeGreaterThan(Number(x));
  });

  it('pauses and resumes without losing the guest', async () => {
    let paused = false;
    let stateWhilePaused = '';
    const r = await runGuest({ cpus: 1, memoryMiB: 32, kernel: ensureTestGuest(), cmdline: 'mode=compute steps=6 iters=2000' }, (out, vm) => {
      if (!paused && out.includes('STEP 1 ')) {
        paused = true;
        vm.pause();
        stateWhilePaused = vm.state();
        const rip = vm.regs(0).rip;
        setTimeout(() => {
          expect(vm.regs(0).rip).toBe(rip); // nothing ran while paused
          vm.resume();
        }, 200);
      }
    });
    expect(stateWhilePaused).toBe('paused');
    expect(r.out).toContain('DONE ');
  });

  it('restores a snapshot taken mid-computation to the identical continuation', async () => {
    const snap = join(work, 'compute.snap');
    let snapStarted = false;
    let snapDone: Promise<{ bytes: number; nanos: number }> | undefined;
    let outAtSnapshot = 0;
    const original = await runGuest({ cpus: 1, memoryMiB: 64, kernel: ensureTestGuest(), cmdline: 'mode=compute steps=8 iters=3000' }, (out, vm) => {
      if (!snapStarted && out.includes('STEP 2 ')) {
        snapStarted = true;
        outAtSnapshot = out.length;
        snapDone = vm.snapshot(snap);
      }
    });
    const saved = await snapDone!;
    expect(saved.bytes).toBeGreaterThan(4096);
    expect(statSync(snap).size).toBeGreaterThanOrEqual(64 << 20); // sparse: full size, few blocks written
    expect(original.exit.reason).toBe('guest-poweroff');

    const restored = await runGuest({ restoreFrom: snap });
    // Everything the restored guest prints is exactly what the original printed after the snapshot point.
    expect(restored.out.length).toBeGreaterThan(0);
    expect(original.out.endsWith(restored.out)).toBe(true);
    expect(original.out.length - restored.out.length).toBeGreaterThanOrEqual(outAtSnapshot - 20);
    expect(restored.out).toMatch(/DONE [0-9a-f]{16}\n$/);
    expect(restored.exit.reason).toBe('guest-poweroff');
    expect(restored.exit.regs).toEqual(original.exit.regs);
    expect(restored.exit.regs?.r15).toBe(0x5eed5eedn);
  });

  it('restores the same snapshot twice with the same result (memory is mapped copy-on-write)', async () => {
    const snap = join(work, 'twice.snap');
    let snapDone: Promise<unknown> | undefined;
    await runGuest({ cpus: 2, memoryMiB: 32, kernel: ensureTestGuest(), cmdline: 'mode=compute steps=4 iters=2000' }, (out, vm) => {
      if (!snapDone && out.includes('STEP 1 ')) snapDone = vm.snapshot(snap);
    });
    await snapDone;
    const a = await runGuest({ restoreFrom: snap });
    const b = await runGuest({ restoreFrom: snap });
    expect(a.out).toBe(b.out);
    expect(a.exit.regs).toEqual(b.exit.regs);
  });

  it('rejects corrupt and foreign snapshot files', async () => {
    const native = await addon();
    const bad = join(work, 'bad.snap');
    writeFileSync(bad, Buffer.alloc(8192, 0x41));
    expect(() => new native.Vm({ restoreFrom: bad, onSerial: () => {}, onExit: () => {} })).toThrow(/not a VMDesk micro-VM snapshot/);
    const snap = join(work, 'compute.snap');
    const data = readFileSync(snap);
    const flipped = Buffer.from(data.subarray(0, 8192));
    flipped[4096 + 10] = flipped[4096 + 10]! ^ 0xff; // inside the state records
    writeFileSync(bad, Buffer.concat([flipped, data.subarray(8192)]));
    expect(() => new native.Vm({ restoreFrom: bad, onSerial: () => {}, onExit: () => {} })).toThrow(/checksum mismatch/);
    writeFileSync(bad, data.subarray(0, 20000));
    expect(() => new native.Vm({ restoreFrom: bad, onSerial: () => {}, onExit: () => {} })).toThrow(/truncated or corrupt/);
  });

  it('reports a triple fault as a crash with registers', async () => {
    // A payload whose 64-bit entry loads an empty IDT and raises an exception: #UD -> #DF -> triple fault.
    const { packBzImage } = await import('../native-guests/build.mjs');
    const code = Buffer.alloc(0x200 + 16, 0x90);
    Buffer.from([0x48, 0x31, 0xc0, 0x0f, 0x01, 0x18, 0x0f, 0x0b]).copy(code, 0x200); // xor rax,rax; lidt [rax]; ud2
    const kernel = join(work, 'fault.bzImage');
    writeFileSync(kernel, packBzImage(code));
    const r = await runGuest({ cpus: 1, memoryMiB: 16, kernel });
    expect(r.exit.reason).toBe('crashed');
    expect(r.exit.detail).toMatch(/triple fault on vCPU 0.*rip=/);
  });
});
