// Locks between real processes: exclusive even when six meet a lock left by a dead process at once,
// released by the kernel when the holder is killed, and never stuck on an empty lock file (a full disk).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { acquireLock, lockImplementation } from '../../main/platform/lock.js';

const root = mkdtempSync(join(tmpdir(), 'vmdesk-locks-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const lockModule = pathToFileURL(resolve('main/platform/lock.ts')).href;
const tsx = pathToFileURL(resolve('node_modules/tsx/dist/loader.mjs')).href;

/**
 * A child that announces it is ready, waits for the go file (the barrier: all start together), takes the
 * lock, logs enter/exit around a short hold, and releases.
 */
const CHILD = `
import { appendFileSync, existsSync } from 'node:fs';
const { acquireLock } = await import(process.env.LOCK_MODULE);
const [dir, log, go, holdMs] = process.argv.slice(1);
appendFileSync(log + '.ready', 'x');
while (go !== '-' && !existsSync(go)) await new Promise((r) => setTimeout(r, 2));
const release = await acquireLock(dir, 'test lock', 20000);
appendFileSync(log, 'enter ' + process.pid + '\\n');
await new Promise((r) => setTimeout(r, Number(holdMs)));
appendFileSync(log, 'exit ' + process.pid + '\\n');
await release();
`;

function runChild(dir: string, log: string, go: string, impl: string, holdMs = 15): Promise<number | null> {
  const child = spawn(process.execPath, ['--import', tsx, '--input-type=module', '-e', CHILD, dir, log, go, String(holdMs)], {
    env: { ...process.env, LOCK_MODULE: lockModule, VMDESK_LOCKS: impl, VMDESK_LOCK_TAKEOVER_DELAY_MS: '40' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  return new Promise((r) => child.on('exit', (code) => (code === 0 ? r(code) : r(Promise.reject(new Error(err)) as never))));
}

/** The log must read enter/exit/enter/exit…: never two holders at once. */
function assertExclusive(log: string, processes: number): void {
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  expect(lines).toHaveLength(processes * 2);
  for (let i = 0; i < lines.length; i += 2) {
    const [a, pa] = lines[i]!.split(' ');
    const [b, pb] = lines[i + 1]!.split(' ');
    expect(`${a} ${b}`).toBe('enter exit');
    expect(pb).toBe(pa);
  }
}

const impls = ['portable', ...(lockImplementation() === 'flock' ? ['flock'] : [])];

describe.each(impls)('%s locks', (impl) => {
  it('six processes meeting a lock left by a dead process: exactly one holds it at a time', async () => {
    for (let round = 0; round < 3; round++) {
      const dir = join(root, `${impl}-race-${round}`);
      mkdirSync(dir);
      // What a killed holder leaves behind (pid 999999 does not run).
      writeFileSync(join(dir, '.lock'), '999999 1\n');
      writeFileSync(join(dir, '.lock.1'), '999999 1\n');
      const log = join(dir, 'log');
      writeFileSync(log, '');
      const go = join(dir, 'go');
      const children = Array.from({ length: 6 }, () => runChild(dir, log, go, impl === 'flock' ? '' : 'portable'));
      const ready = `${log}.ready`;
      for (let i = 0; i < 600 && (readFileSync(ready, { flag: 'a+' }).length < 6); i++) await new Promise((r) => setTimeout(r, 25));
      writeFileSync(go, '');
      await Promise.all(children);
      assertExclusive(log, 6);
    }
  }, 60_000);

  it('an empty lock file (what a full disk left) does not block forever', async () => {
    const dir = join(root, `${impl}-empty`);
    mkdirSync(dir);
    writeFileSync(join(dir, '.lock'), '');
    writeFileSync(join(dir, '.lock.1'), '');
    const old = new Date(Date.now() - 10_000);
    utimesSync(join(dir, '.lock.1'), old, old);
    const prev = process.env.VMDESK_LOCKS;
    process.env.VMDESK_LOCKS = impl === 'flock' ? '' : 'portable';
    try {
      const release = await acquireLock(dir, 'test lock', 1000);
      await release();
    } finally {
      process.env.VMDESK_LOCKS = prev;
    }
  });

  it('a killed holder releases the lock; a live one makes others wait, then EBUSY', async () => {
    const dir = join(root, `${impl}-kill`);
    mkdirSync(dir);
    const log = join(dir, 'log');
    writeFileSync(log, '');
    const holder = spawn(process.execPath, ['--import', tsx, '--input-type=module', '-e', CHILD, dir, log, '-', '60000'], {
      env: { ...process.env, LOCK_MODULE: lockModule, VMDESK_LOCKS: impl === 'flock' ? '' : 'portable' },
      stdio: 'ignore',
    });
    for (let i = 0; i < 200 && !readFileSync(log, 'utf8').includes('enter'); i++) await new Promise((r) => setTimeout(r, 25));
    const prev = process.env.VMDESK_LOCKS;
    process.env.VMDESK_LOCKS = impl === 'flock' ? '' : 'portable';
    try {
      await expect(acquireLock(dir, 'VM "x"', 300)).rejects.toMatchObject({ code: 'EBUSY', message: expect.stringContaining(`pid ${holder.pid}`) });
      holder.kill('SIGKILL');
      await new Promise((r) => holder.on('exit', r));
      const release = await acquireLock(dir, 'VM "x"', 3000);
      await release();
    } finally {
      process.env.VMDESK_LOCKS = prev;
    }
  });
});
