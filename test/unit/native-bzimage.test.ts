// The boot-protocol loader rejects malformed or unfitting images with messages naming the problem.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { addon, ensureTestGuest, kvmSkipReason, repoRoot, testGuestDir, writeBrokenGuest } from '../native-guests/harness.js';

const skip = kvmSkipReason();
if (skip) console.log(`[native-bzimage] skipped: ${skip}`);

async function bootError(opts: { kernel: string; initrd?: string; memoryMiB?: number; cmdline?: string }): Promise<{ message: string; code: string }> {
  const native = await addon();
  try {
    const vm = new native.Vm({ cpus: 1, memoryMiB: 64, ...opts, onSerial: () => {}, onExit: () => {} });
    vm.close();
  } catch (e) {
    return e as { message: string; code: string };
  }
  throw new Error('the image was accepted');
}

describe.skipIf(!!skip)('bzImage validation', () => {
  it('accepts the well-formed test guest and reports its protocol and load address', async () => {
    const native = await addon();
    const vm = new native.Vm({ cpus: 1, memoryMiB: 64, kernel: ensureTestGuest(), onSerial: () => {}, onExit: () => {} });
    const info = vm.info();
    vm.close();
    expect(info.bootProtocol).toBe(0x020f);
    expect(info.kernelLoadAddr).toBe(0x100000);
    expect(info.kernelEntry).toBe(0x100200);
  });

  it.each([
    ['bad-magic', /not a bzImage.*HdrS/],
    ['old-protocol', /boot protocol 2\.04 is too old/],
    ['no-64bit', /no 64-bit entry point \(XLF_KERNEL_64/],
    ['truncated', /truncated: header declares \d+ bytes of kernel, file has \d+/],
    ['tiny', /truncated \(300 bytes/],
    ['huge', /needs \d+ MiB of memory to load and decompress, the VM has 64 MiB/],
  ] as const)('rejects a %s image', async (kind, message) => {
    const err = await bootError({ kernel: writeBrokenGuest(kind) });
    expect(err.message).toMatch(message);
    expect(err.code).toBe('EINVAL');
  });

  const realKernel = join(repoRoot, '.cache', 'guest', 'vmlinuz');
  it.skipIf(!existsSync(realKernel))('accounts for where a relocatable Linux kernel decompresses (pref_address + init_size)', async () => {
    // Debian's kernel decompresses at 16 MiB and needs ~52 MiB from there: 64 MiB is too little.
    const err = await bootError({ kernel: realKernel, memoryMiB: 64 });
    expect(err.message).toMatch(/needs 6\d MiB of memory to load and decompress, the VM has 64 MiB/);
    const native = await addon();
    const vm = new native.Vm({ cpus: 1, memoryMiB: 128, kernel: realKernel, onSerial: () => {}, onExit: () => {} });
    expect(vm.info().bootProtocol).toBeGreaterThanOrEqual(0x020c);
    vm.close();
  });

  it('rejects a missing kernel file', async () => {
    const err = await bootError({ kernel: '/nonexistent/vmlinuz' });
    expect(err.message).toMatch(/cannot open kernel \/nonexistent\/vmlinuz: No such file/);
    expect(err.code).toBe('EINVAL');
  });

  it('rejects an initrd that does not fit in guest memory', async () => {
    const initrd = join(testGuestDir, 'big-initrd.bin');
    writeFileSync(initrd, Buffer.alloc(20 << 20, 1));
    const err = await bootError({ kernel: ensureTestGuest(), initrd, memoryMiB: 16 });
    expect(err.message).toMatch(/initrd .* does not fit in guest memory/);
  });

  it('places an initrd page-aligned at the top of low memory', async () => {
    const native = await addon();
    const initrd = join(testGuestDir, 'small-initrd.bin');
    writeFileSync(initrd, Buffer.alloc(12345, 7));
    const vm = new native.Vm({ cpus: 1, memoryMiB: 64, kernel: ensureTestGuest(), initrd, onSerial: () => {}, onExit: () => {} });
    const info = vm.info();
    vm.close();
    expect(info.initrdBytes).toBe(12345);
    expect(info.initrdAddr % 4096).toBe(0);
    expect(info.initrdAddr + 12345).toBeLessThanOrEqual(64 << 20);
    expect(info.initrdAddr).toBeGreaterThan((64 << 20) - 2 * 12345 - 4096);
  });

  it('rejects a command line longer than the kernel accepts', async () => {
    const err = await bootError({ kernel: ensureTestGuest(), cmdline: 'x'.repeat(3000) });
    expect(err.message).toMatch(/command line is 3000 bytes; the kernel accepts at most 2047/);
  });
});
