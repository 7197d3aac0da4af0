// The addon's flock(2) primitive (flockFile/funlockFile) between real processes: two processes never hold the
// exclusive lock together, shared locks coexist, a waiter gets the lock when it is freed, and the kernel
// releases a lock whose holder is SIGKILLed (no stale lock is left behind for anyone to guess about).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { addonFile, hooksSkipReason, nativeWithHooks, type NativeWithHooks } from '../native-guests/hardening.js';

const skip = hooksSkipReason();
if (skip) console.log(`[native-hardening-flock] skipped: ${skip}`);

// argv: file, 'ex' | 'sh', 'wait' | 'nowait', 'hold' | 'exit'. Prints "locked" or "busy".
const CHILD = `
  const a = require(${JSON.stringify(addonFile)});
  const [file, kind, wait, after] = process.argv.slice(1);
  const fd = require('node:fs').openSync(file, 'r+');
  const ok = a.flockFile(fd, kind === 'ex', wait === 'wait');
  process.stdout.write(ok ? 'locked\\n' : 'busy\\n');
  if (ok && after === 'hold') setInterval(() => {}, 1000); else process.exit(0);
`;

interface Child {
  proc: ChildProcess;
  /** The first line the child printed ("locked" or "busy"), or undefined if it exited without one. */
  line: Promise<string | undefined>;
}

const children: ChildProcess[] = [];

function child(file: string, kind: 'ex' | 'sh', wait: boolean, after: 'hold' | 'exit'): Child {
  const proc = spawn(process.execPath, ['-e', CHILD, file, kind, wait ? 'wait' : 'nowait', after], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  let out = '';
  let err = '';
  const line = new Promise<string | undefined>((resolve) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    proc.on('exit', () => {
      if (err) console.error(err);
      resolve(out ? out.split('\n')[0] : undefined);
    });
  });
  return { proc, line };
}

async function kill9(c: Child): Promise<void> {
  const exited = once(c.proc, 'exit');
  c.proc.kill('SIGKILL');
  const [code, signal] = await exited;
  expect(code).toBeNull();
  expect(signal).toBe('SIGKILL');
}

describe.skipIf(!!skip)('flockFile / funlockFile across processes', () => {
  let native: NativeWithHooks;
  let dir: string;
  let file: string;
  let n = 0;

  beforeAll(() => {
    native = nativeWithHooks();
    dir = mkdtempSync(path.join(tmpdir(), 'vmd-flock-'));
  });
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const fresh = () => {
    file = path.join(dir, `lock-${n++}`);
    writeFileSync(file, '');
    return file;
  };

  it('lets exactly one process hold the exclusive lock, and the kernel frees it when the holder is SIGKILLed', async () => {
    fresh();
    const holder = child(file, 'ex', false, 'hold');
    expect(await holder.line).toBe('locked');

    const rival = child(file, 'ex', false, 'exit');
    expect(await rival.line).toBe('busy');
    const shared = child(file, 'sh', false, 'exit');
    expect(await shared.line).toBe('busy');
    const fd = openSync(file, 'r+'); // this process's own open file is a contender too
    try {
      expect(native.flockFile(fd, true, false)).toBe(false);

      await kill9(holder);
      const next = child(file, 'ex', false, 'hold');
      expect(await next.line).toBe('locked');
      expect(native.flockFile(fd, true, false)).toBe(false);
      await kill9(next);
      expect(native.flockFile(fd, true, false)).toBe(true);
      const late = child(file, 'ex', false, 'exit');
      expect(await late.line).toBe('busy');
      native.funlockFile(fd);
      const after = child(file, 'ex', false, 'exit');
      expect(await after.line).toBe('locked');
    } finally {
      closeSync(fd);
    }
  });

  it('blocks a waiting process until the holder dies, then hands it the lock', async () => {
    fresh();
    const holder = child(file, 'ex', false, 'hold');
    expect(await holder.line).toBe('locked');
    const waiter = child(file, 'ex', true, 'hold');
    const early = await Promise.race([waiter.line, new Promise((r) => setTimeout(() => r('still waiting'), 400))]);
    expect(early).toBe('still waiting');
    await kill9(holder);
    expect(await waiter.line).toBe('locked');
    const rival = child(file, 'ex', false, 'exit');
    expect(await rival.line).toBe('busy');
    await kill9(waiter);
  });

  it('lets shared locks coexist and keeps an exclusive one out until the last shared holder is gone', async () => {
    fresh();
    const a = child(file, 'sh', false, 'hold');
    const b = child(file, 'sh', false, 'hold');
    expect(await a.line).toBe('locked');
    expect(await b.line).toBe('locked');
    expect(await child(file, 'ex', false, 'exit').line).toBe('busy');
    await kill9(a);
    expect(await child(file, 'ex', false, 'exit').line).toBe('busy');
    await kill9(b);
    expect(await child(file, 'ex', false, 'exit').line).toBe('locked');
  });

  it('throws with a VMDesk error code for a bad descriptor and a TypeError for a non-number', () => {
    expect(() => native.flockFile(987654, true, false)).toThrow(/flock: Bad file descriptor/);
    try {
      native.flockFile(987654, true, false);
    } catch (e) {
      expect((e as { code: string }).code).toBe('EINVAL');
    }
    expect(() => native.funlockFile(987654)).toThrow(/Bad file descriptor/);
    expect(() => native.flockFile(-1, true, false)).toThrow(TypeError);
    expect(() => native.flockFile(1.5, true, false)).toThrow(TypeError);
    expect(() => (native.flockFile as unknown as (fd: string) => boolean)('3')).toThrow(TypeError);
  });

  it('is typed and reachable through nativeFlock() in main/engines/microvm/native.ts', async () => {
    const { nativeFlock } = await import('../../main/engines/microvm/native.js');
    const api = nativeFlock();
    expect(api).toBeDefined();
    const fd = openSync(fresh(), 'r+');
    try {
      expect(api!.flockFile(fd, true, false)).toBe(true);
      expect(await child(file, 'ex', false, 'exit').line).toBe('busy');
      api!.funlockFile(fd);
      expect(await child(file, 'ex', false, 'exit').line).toBe('locked');
    } finally {
      closeSync(fd);
    }
  });
});
