// Locates the test guest built by test/guest/build.sh (kernel + initramfs) for integration tests.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Printed by the guest's /init once devices, network, acpid and the HTTP service are up. */
export const GUEST_READY_MARKER = 'VMDESK-GUEST-READY';
/** Served by the guest's busybox httpd on GUEST_HTTP_PORT (GET /). */
export const GUEST_HTTP_TEXT = 'vmdesk-guest-http-ok';
export const GUEST_HTTP_PORT = 8080;

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function guestPaths(): { kernel: string; initrd: string } {
  const dir = join(repoRoot, '.cache', 'guest');
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initrd.cpio.gz');
  if (!existsSync(kernel) || !existsSync(initrd)) {
    throw new Error(`test guest not built (${dir} has no vmlinuz/initrd.cpio.gz): run \`npm run test:guest\` first`);
  }
  return { kernel, initrd };
}
