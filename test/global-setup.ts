// Builds the test guest once (from Debian packages) before any suite needs it.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export default function setup(): void {
  if (process.env.VMDESK_SKIP_GUEST_BUILD) return;
  if (!existsSync('test/guest/build.sh')) return;
  const r = spawnSync('bash', ['test/guest/build.sh'], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) console.warn('test guest could not be built; suites that boot it will fail (run: npm run test:guest)');
  // The guest as a bootable disk (the "cloud image" the gallery, image cache and shell tests serve), made once
  // here: the files that use it run in any order, and two of them building it at once raced.
  const k = spawnSync('bash', ['test/guest/build-disk.sh'], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (k.status !== 0) console.warn('the test guest disk could not be built; the gallery and image cache tests will fail (run: bash test/guest/build-disk.sh)');
  // The same guest on Debian's generic kernel (virtio-gpu, 9p) for the guest integration tests (issue 12).
  const d = spawnSync('bash', ['test/guest/build.sh'], { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, VMDESK_GUEST_FLAVOUR: 'desktop' } });
  if (d.status !== 0) console.warn('desktop test guest could not be built; the display resize and 9p tests will fail (run: VMDESK_GUEST_FLAVOUR=desktop npm run test:guest)');
}
