// Boots the real test guest (Linux bzImage + initramfs, built by test/guest/build.sh into .cache/guest) on the
// micro-VMM. Only where the self-test says KVM runs at hardware speed: nested/paravirtual KVM such as
// kvm_pvm cannot run a stock kernel, so the suite is skipped there with the reason.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { addon, kvmSkipReason, repoRoot, runGuest } from '../native-guests/harness.js';

const guest = join(repoRoot, '.cache', 'guest');
const kernel = join(guest, 'vmlinuz');
const initrd = ['initrd.gz', 'initrd.cpio.gz'].map((f) => join(guest, f)).find((f) => existsSync(f));

let skip = kvmSkipReason();
if (!skip && (!existsSync(kernel) || !initrd)) skip = `test guest kernel not built (${kernel}, initrd): run npm run test:guest`;
if (!skip) {
  const st = await (await addon()).selfTest();
  if (st.class !== 'hardware') skip = `KVM self-test class is "${st.class}" (${st.reason}); a stock Linux kernel needs hardware-speed KVM`;
}
if (skip) console.log(`[microvm-linux] skipped: ${skip}`);

describe.skipIf(!!skip)('Linux on the micro-VMM', () => {
  it('boots the test guest to its ready marker on the serial console', async () => {
    let killed = false;
    const r = await runGuest(
      { cpus: 2, memoryMiB: 256, kernel, initrd, cmdline: 'console=ttyS0 reboot=k panic=-1 quiet' },
      (out, vm) => {
        if (!killed && out.includes('VMDESK-GUEST-READY')) {
          killed = true;
          vm.stop('killed', 'test done');
        }
      },
      120_000,
    );
    expect(r.out).toContain('VMDESK-GUEST-READY');
    expect(r.exit.reason).toBe('killed');
  }, 150_000);
});
