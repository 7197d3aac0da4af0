// The micro-VM engine end to end on KVM: vmdesk-microvm processes running the tiny test guests
// (test/native-guests), driven through the engine module as the daemon drives them: first serial byte,
// serial both ways, pause/resume, reset, shutdown and kill records, snapshots saved and loaded in place,
// adoption after detach, the exit record the executable writes when nobody watches, hostile control lines
// against the real process, disk locks and the process's memory footprint. Skips without /dev/kvm.
import { afterAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitRecord, VmConfig } from '../../main/api/schema.js';
import type { EngineContext, VmRuntime } from '../../main/engines/engine.js';
import { processRunning } from '../../main/platform/process.js';
import { ensureTestGuest, kvmSkipReason, writeBrokenGuest } from '../native-guests/harness.js';

const skip = kvmSkipReason();
if (skip) console.log(`[microvm-runtime] skipped: ${skip}`);
const work = mkdtempSync(join(tmpdir(), 'vmd-mvr-'));
const runtimes: VmRuntime[] = [];
afterAll(async () => {
  for (const r of runtimes) await r.kill().catch(() => {});
  rmSync(work, { recursive: true, force: true });
});

const engine = async () => (await import('../../main/engines/microvm/module.js')).microvmEngine;

function context(name: string, cmdline: string, extra: Partial<VmConfig> = {}): EngineContext {
  const now = new Date().toISOString();
  const config = VmConfig.parse({
    schemaVersion: 1, id: randomUUID(), name, engine: 'microvm', cpus: 1, memoryMiB: 32, network: [],
    directKernel: { kernel: ensureTestGuest(), cmdline }, createdAt: now, modifiedAt: now, ...extra,
  });
  return { config, bundleDir: join(work, name), runtimeDir: join(work, `${name}.run`) };
}

async function start(ctx: EngineContext, paused = false): Promise<VmRuntime> {
  const rt = await (await engine()).start(ctx, { paused });
  runtimes.push(rt);
  return rt;
}

const serialLog = (ctx: EngineContext) => {
  try {
    return readFileSync(join(ctx.bundleDir, 'logs', 'serial.log'), 'latin1');
  } catch {
    return '';
  }
};
const lastExit = (ctx: EngineContext) => ExitRecord.parse(JSON.parse(readFileSync(join(ctx.bundleDir, 'logs', 'last-exit.json'), 'utf8')));

async function until<T>(what: string, probe: () => T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with everything the runtime's serial port delivered once it contains marker. */
function readUntil(rt: VmRuntime, marker: string, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const off = rt.serial.onData((d) => {
      text += d.toString('latin1');
      if (text.includes(marker)) {
        clearTimeout(timer);
        off();
        resolve(text);
      }
    });
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no "${marker}" on the serial port: ${JSON.stringify(text.slice(-300))}`));
    }, timeoutMs);
  });
}

/** "STEP n hash" lines of the compute guest. */
const steps = (text: string) => [...text.matchAll(/STEP (\d+) ([0-9a-f]{16})/g)].map((m) => ({ n: Number(m[1]), hash: m[2]! }));

describe.skipIf(!!skip)('micro-VM runtime (vmdesk-microvm on KVM)', () => {
  it('boots the echo guest in its own process: first serial byte, serial both ways, pause/resume, info', async () => {
    const ctx = context('echo-vm', 'mode=echo');
    const { accel } = await (await engine()).check(ctx);
    expect(accel.used).toBe('kvm');
    const t0 = Date.now();
    const rt = await start(ctx);
    expect(rt.pid).toBeGreaterThan(0);
    expect(rt.pid).not.toBe(process.pid);
    expect(rt).toMatchObject({ adopted: false, state: 'running' });
    expect(rt.accel.used).toBe('kvm');
    // The executable writes serial.log itself: the banner is there whether or not we were connected yet.
    await until('the banner in serial.log', () => serialLog(ctx).includes('ECHO-READY'));
    console.log(`[microvm-runtime] start -> ECHO-READY in serial.log: ${Date.now() - t0} ms`);
    expect(serialLog(ctx)).toMatch(/^VMDESK-TEST-GUEST boot protocol 0x020f\nCommand line: mode=echo/);

    const echoed = readUntil(rt, 'ping-1');
    expect(rt.serial.write(Buffer.from('ping-1\n'))).toBe(true);
    await echoed;

    const states: string[] = [];
    rt.onState((s) => states.push(s));
    await rt.pause();
    expect(rt.state).toBe('paused');
    let whilePaused = '';
    const off = rt.serial.onData((d) => (whilePaused += d.toString()));
    rt.serial.write(Buffer.from('during-pause\n'));
    await new Promise((r) => setTimeout(r, 300));
    expect(whilePaused).toBe(''); // a paused guest echoes nothing...
    const after = readUntil(rt, 'during-pause');
    await rt.resume();
    await after; // ...and everything once it runs again
    off();
    expect(states).toEqual(['paused', 'running']);
    const info = await (rt as unknown as { info(): Promise<Record<string, unknown>> }).info();
    expect(info).toMatchObject({ state: 'running', pid: rt.pid, cpus: 1, memoryBytes: 32 * 1024 * 1024, disks: 0, job: null, serialClient: true });

    const rec = await rt.kill();
    expect(rec).toMatchObject({ reason: 'killed', exitCode: 0, signal: null });
    expect(rec.logTail.join('\n')).toContain('during-pause');
    expect(lastExit(ctx)).toEqual(rec);
    expect(rt.state).toBe('stopped');
    expect(existsSync(join(ctx.runtimeDir, 'microvm.json'))).toBe(false);
    expect(existsSync(join(ctx.runtimeDir, 'microvm-control.sock'))).toBe(false);
    expect(processRunning(rt.pid)).toBe(false);
  });

  it('keeps the process small: VmRSS beyond the guest\'s touched pages is at most 8 MiB', async () => {
    const ctx = context('rss-vm', 'mode=echo', { memoryMiB: 256 });
    const rt = await start(ctx);
    await until('the banner', () => serialLog(ctx).includes('ECHO-READY'));
    await new Promise((r) => setTimeout(r, 200));
    const status = readFileSync(`/proc/${rt.pid}/status`, 'utf8');
    const rssKiB = Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]);
    // Guest memory is the one 256 MiB mapping: its resident part is what the guest touched.
    let guestKiB = 0;
    const smaps = readFileSync(`/proc/${rt.pid}/smaps`, 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/);
    for (const m of smaps) {
      if (Number(/\nSize:\s+(\d+) kB/.exec(m)?.[1]) === 256 * 1024) guestKiB += Number(/\nRss:\s+(\d+) kB/.exec(m)?.[1] ?? 0);
    }
    console.log(`[microvm-runtime] VmRSS ${rssKiB} KiB, of which guest memory ${guestKiB} KiB`);
    expect(rssKiB - guestKiB).toBeLessThanOrEqual(8 * 1024);
    await rt.kill();
  });

  it('records guest-poweroff with the serial tail and the exit status when the guest powers itself off', async () => {
    const ctx = context('poweroff-vm', 'mode=compute steps=2 iters=100');
    const rt = await start(ctx);
    const rec = await rt.exited;
    expect(rec).toMatchObject({ reason: 'guest-poweroff', exitCode: 0, signal: null });
    expect(rec.logTail.join('\n')).toMatch(/DONE [0-9a-f]{16}/);
    expect(lastExit(ctx)).toEqual(rec);
    expect(rt.state).toBe('stopped');
  });

  it('shuts down with Ctrl-Alt-Del, and forces off a guest that ignores it', async () => {
    // The irq guest handles keyboard interrupts and powers off on Ctrl-Alt-Del, as Linux with reboot=k does.
    const ctx = context('graceful-vm', 'mode=irq');
    const rt = await start(ctx);
    await until('IRQ-READY', () => serialLog(ctx).includes('IRQ-READY'));
    const graceful = await rt.shutdown(20_000);
    expect(graceful).toMatchObject({ reason: 'shutdown', detail: expect.stringMatching(/powered off after a Ctrl-Alt-Del shutdown request/) });
    expect(graceful.logTail).toContain('CTRL-ALT-DEL');

    const stubborn = context('stubborn-vm', 'mode=echo');
    const rt2 = await start(stubborn);
    const forced = await rt2.shutdown(300);
    expect(forced).toMatchObject({ reason: 'killed', detail: 'the guest did not power off within 300 ms of Ctrl-Alt-Del; forced off' });
    expect(lastExit(stubborn).reason).toBe('killed');
  });

  it('starts paused: nothing runs until resumed', async () => {
    const ctx = context('paused-vm', 'mode=echo');
    const rt = await start(ctx, true);
    expect(rt.state).toBe('paused');
    await new Promise((r) => setTimeout(r, 300));
    expect(serialLog(ctx)).toBe('');
    await rt.resume();
    expect(rt.state).toBe('running');
    await until('the banner after resume', () => serialLog(ctx).includes('ECHO-READY'));
    await rt.kill();
  });

  it('resets by booting the kernel afresh in the same process', async () => {
    const ctx = context('reset-vm', 'mode=echo');
    const rt = await start(ctx);
    await until('the banner', () => serialLog(ctx).includes('ECHO-READY'));
    const banner = readUntil(rt, 'ECHO-READY');
    await rt.reset();
    await banner;
    expect(rt.state).toBe('running');
    expect(serialLog(ctx).split('ECHO-READY').length).toBe(3);
    expect(processRunning(rt.pid)).toBe(true);
    await rt.kill();
  });

  it('saves a snapshot mid-computation, runs on, and loads it in place: the hash chain continues from the snapshot point', async () => {
    const { microvmSnapshots } = await import('../../main/engines/microvm/snapshots.js');
    const ctx = context('snap-vm', 'mode=compute steps=100000 iters=20000');
    const rt = await start(ctx);
    await until('a few steps', () => (steps(serialLog(ctx)).at(-1)?.n ?? 0) >= 3, 60_000);
    mkdirSync(join(ctx.bundleDir, 'snapshots'), { recursive: true });
    const snap = { id: 'mid00001', tag: 'vmdesk-mid00001', stateFile: join(ctx.bundleDir, 'snapshots', 'mid00001.vmstate') };
    const before = steps(serialLog(ctx)).at(-1)!.n;
    const saved = await microvmSnapshots.saveLive(rt, ctx, snap, () => {});
    const at = steps(serialLog(ctx)).at(-1)!.n;
    expect(saved).toEqual({ vmStateBytes: statSync(snap.stateFile).size, targets: ['vmstate'] });
    expect(rt.state).toBe('running');
    await until('progress after the snapshot', () => (steps(serialLog(ctx)).at(-1)?.n ?? 0) >= at + 3, 60_000);
    const original = new Map(steps(serialLog(ctx)).map((s) => [s.n, s.hash]));
    expect((await microvmSnapshots.stored(ctx, true)).get('vmdesk-mid00001')?.get('vmstate')?.vmStateBytes).toBe(saved.vmStateBytes);

    // A corrupt file is refused and the running guest is left as it was.
    const bad = { id: 'bad00001', tag: 'vmdesk-bad00001', stateFile: join(ctx.bundleDir, 'snapshots', 'bad00001.vmstate') };
    writeFileSync(bad.stateFile, Buffer.alloc(8192, 1));
    await expect(microvmSnapshots.loadLive(rt, ctx, bad, () => {})).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/not a VMDesk micro-VM snapshot/) });
    expect(rt.state).toBe('running');

    const mark = serialLog(ctx).length;
    await microvmSnapshots.loadLive(rt, ctx, snap, () => {});
    expect(rt.state).toBe('paused'); // the core resumes (or not) after a load
    await new Promise((r) => setTimeout(r, 200));
    expect(steps(serialLog(ctx).slice(mark))).toEqual([]);
    await rt.resume();
    const resumed = await until('the restored guest to print', () => {
      const s = steps(serialLog(ctx).slice(mark));
      return s.length >= 3 ? s : undefined;
    }, 60_000);
    expect(resumed[0]!.n).toBeGreaterThan(before);
    expect(resumed[0]!.n).toBeLessThanOrEqual(at + 1);
    expect(resumed[0]!.hash).toBe(original.get(resumed[0]!.n));
    expect(resumed[1]).toEqual({ n: resumed[0]!.n + 1, hash: original.get(resumed[0]!.n + 1) });
    // Deleting the file the guest now runs from is fine: it keeps its copy-on-write mapping.
    await microvmSnapshots.deleteLive(rt, ctx, snap);
    const n = steps(serialLog(ctx)).at(-1)!.n;
    await until('the guest to keep computing', () => steps(serialLog(ctx)).at(-1)!.n > n, 60_000);
    await rt.kill();
  });

  it('is adopted after the daemon detaches: same process, serial and control work, and it is killed from there', async () => {
    const ctx = context('adopt-vm', 'mode=echo');
    const rt = await start(ctx);
    await until('the banner', () => serialLog(ctx).includes('ECHO-READY'));
    rt.detach();
    expect(processRunning(rt.pid)).toBe(true);
    const again = (await (await engine()).adopt(ctx))!;
    expect(again).not.toBeNull();
    runtimes.push(again);
    expect(again).toMatchObject({ pid: rt.pid, adopted: true, state: 'running' });
    expect(again.accel.reason).toMatch(/built-in micro-VMM on KVM/);
    const echoed = readUntil(again, 'adopted-echo');
    again.serial.write(Buffer.from('adopted-echo\n'));
    await echoed;
    await again.pause();
    expect(again.state).toBe('paused');
    const rec = await again.kill();
    expect(rec).toMatchObject({ reason: 'killed', exitCode: null });
    expect(lastExit(ctx)).toMatchObject({ reason: 'killed' });
    expect(processRunning(rt.pid)).toBe(false);
    expect(await (await engine()).adopt(ctx)).toBeNull();
    expect(await (await engine()).reapOrphan!(ctx)).toBeUndefined(); // the adopter cleared the record
  });

  it('records its own end when nobody watches: the guest powering off, or a signal', async () => {
    const ctx = context('orphan-vm', 'mode=compute steps=40 iters=20000');
    const rt = await start(ctx);
    rt.detach();
    await until('the process to end by itself', () => !processRunning(rt.pid), 120_000);
    const rec = lastExit(ctx);
    expect(rec).toMatchObject({ reason: 'guest-poweroff', exitCode: null });
    expect(rec.logTail.join('\n')).toMatch(/STEP 40 [0-9a-f]{16}\nDONE/);
    expect(await (await engine()).adopt(ctx)).toBeNull();
    expect(await (await engine()).reapOrphan!(ctx)).toEqual(rec);
    expect(await (await engine()).reapOrphan!(ctx)).toBeUndefined();

    const sig = context('signal-vm', 'mode=echo');
    const rt2 = await start(sig);
    rt2.detach();
    process.kill(rt2.pid, 'SIGTERM');
    await until('the process to end on SIGTERM', () => !processRunning(rt2.pid), 30_000);
    expect(lastExit(sig)).toMatchObject({ reason: 'host-signal', detail: 'the micro-VM process received SIGTERM' });
    expect((await (await engine()).reapOrphan!(sig))?.reason).toBe('host-signal');
  });

  it('answers hostile control lines from a second client with EINVAL and keeps serving', async () => {
    const ctx = context('hostile-vm', 'mode=echo');
    const rt = await start(ctx);
    const sock = createConnection(join(ctx.runtimeDir, 'microvm-control.sock'));
    let text = '';
    sock.on('data', (d) => (text += d.toString('utf8')));
    await new Promise((r) => sock.once('connect', r));
    sock.write(Buffer.concat([
      Buffer.from('garbage\n0 state\n1 state extra\n2 nope\n3 shutdown -5\n4 snapshot-load relative\n'),
      Buffer.from([0x35, 0x20, 0xff, 0x0a]),
      Buffer.from(`${'x'.repeat(10_000)}\n6 state\r\n7 state\n`),
    ]));
    await until('the last reply', () => text.includes('"id":7'));
    const lines = text.trim().split('\n').map((l) => JSON.parse(l) as { event?: string; id?: number | null; ok?: boolean; error?: { code: string }; result?: { state: string } });
    expect(lines[0]).toMatchObject({ event: 'hello', data: { pid: rt.pid, state: 'running' } });
    const replies = lines.slice(1);
    expect(replies.map((r) => [r.id, r.ok, r.error?.code])).toEqual([
      [null, false, 'EINVAL'], [null, false, 'EINVAL'], [1, false, 'EINVAL'], [2, false, 'EINVAL'], [3, false, 'EINVAL'],
      [4, false, 'EINVAL'], [5, false, 'EINVAL'], [null, false, 'EINVAL'], [6, false, 'EINVAL'], [7, true, undefined],
    ]);
    expect(replies.at(-1)!.result).toEqual({ state: 'running' });
    sock.destroy();
    await rt.pause(); // the daemon's own connection is unaffected
    await rt.kill();
  });

  it('locks its disks: a second writer is refused (EBUSY), checkFree says busy while it runs', async () => {
    const { microvmDisks } = await import('../../main/engines/microvm/disks.js');
    const disk = join(work, 'shared.img');
    await microvmDisks.create(disk, 8 * 1024 * 1024);
    const attach = { id: 'data', path: disk, format: 'raw' as const, owned: false, readOnly: false };
    const a = context('disk-a', 'mode=echo', { disks: [attach] });
    const rt = await start(a);
    await expect(microvmDisks.checkFree(disk, 'raw')).rejects.toMatchObject({ code: 'EBUSY' });
    const b = context('disk-b', 'mode=echo', { disks: [attach] });
    await expect(start(b)).rejects.toMatchObject({ code: 'EBUSY', message: expect.stringMatching(/disk image .*shared\.img is in use by another process/) });
    await rt.kill();
    await microvmDisks.checkFree(disk, 'raw');
  });

  it('fails start with the loader\'s EINVAL for a broken kernel', async () => {
    const ctx = context('bad-kernel-vm', '');
    ctx.config.directKernel!.kernel = writeBrokenGuest('bad-magic');
    await expect((await engine()).start(ctx)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/bzImage|HdrS|magic/) });
    expect(existsSync(join(ctx.runtimeDir, 'microvm.json'))).toBe(false);
  });
});
