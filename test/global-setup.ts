// Builds the test guest once (from Debian packages) before any suite needs it.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export default function setup(): void {
  if (process.env.VMDESK_SKIP_GUEST_BUILD) return;
  if (!existsSync('test/guest/build.sh')) return;
  const r = spawnSync('bash', ['test/guest/build.sh'], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) console.warn('test guest could not be built; suites that boot it will fail (run: npm run test:guest)');
}
