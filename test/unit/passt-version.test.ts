// Which passt can complete a forwarded connection to a guest service that speaks first (see PASST_FIXED_SINCE):
// the warning at start names the affected guest ports and stays quiet for SSH/HTTP-only forwards.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASST_MISSING, passtBuildDate, passtForwardWarning, passtHostNote } from '../../main/engines/qemu/passt.js';

let dir = '';
/** A stand-in passt binary that prints what an upstream build prints for --version. */
async function fakePasst(name: string, versionLine: string): Promise<string> {
  const p = path.join(dir, name);
  await writeFile(p, `#!/bin/sh\necho '${versionLine}'\necho 'Copyright Red Hat'\n`);
  await chmod(p, 0o755);
  return p;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-passt-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('passt and services that speak first', () => {
  it('reads the build date of an upstream build, and warns only before the fix', async () => {
    const old = await fakePasst('passt-old', 'passt 2023_06_27.289301b');
    const fixed = await fakePasst('passt-new', 'passt 2023_10_04.f851084');
    expect(passtBuildDate(old)).toBe(20230627);
    expect(passtBuildDate(fixed)).toBe(20231004);
    const smtp = { protocol: 'tcp' as const, hostPort: 2525, guestPort: 25 };
    expect(passtForwardWarning(old, [smtp])).toMatch(/built 2023-06-27.*speak first.*guest port 25\)/);
    expect(passtForwardWarning(fixed, [smtp])).toBeUndefined();
  });

  it('stays quiet for forwards whose clients speak first (SSH, HTTP), for UDP, and when the version is unknown', async () => {
    const old = await fakePasst('passt-old2', 'passt 2023_03_09.7c7625d');
    expect(passtForwardWarning(old, [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }, { protocol: 'tcp', hostPort: 8080, guestPort: 80 }])).toBeUndefined();
    expect(passtForwardWarning(old, [{ protocol: 'udp', hostPort: 5353, guestPort: 53 }])).toBeUndefined();
    expect(passtForwardWarning(old, [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }, { protocol: 'tcp', hostPort: 5900, guestPort: 5900 }])).toMatch(/guest port 5900\)/);
    expect(passtHostNote(old)).toMatch(/built 2023-03-09.*predates 2023_10_04.*nat-host/);
    expect(passtHostNote(await fakePasst('passt-new2', 'passt 2023_10_04.f851084'))).toBeUndefined();
    if (process.platform === 'linux') expect(passtHostNote(undefined)).toBe(PASST_MISSING);
    const unknown = await fakePasst('passt-unknown', 'passt unknown version');
    expect(passtBuildDate(unknown)).toBeUndefined();
    expect(passtForwardWarning(unknown, [{ protocol: 'tcp', hostPort: 2525, guestPort: 25 }])).toBeUndefined();
  });
});
