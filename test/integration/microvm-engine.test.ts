// The micro-VM engine end to end: a detached host process per guest, its control socket, serial fan-out,
// pause/resume, snapshots through command(), reattach, and the exit records it leaves in the bundle.
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ExitRecord, VmConfig } from '../../main/api/schema.js';
import type { Duplex, EngineContext, VmHandle } from '../../main/engines/engine.js';
import { ensureTestGuest, kvmSkipReason, repoRoot } from '../native-guests/harness.js';

const skip = kvmSkipReason();
if (skip) console.log(`[microvm-engine] skipped: ${skip}`);
const work = mkdtempSync(join(tmpdir(), 'vmd-'));
const handles: VmHandle[] = [];
afterAll(async () => {
  for (const h of handles) await h.kill().catch(() => {});
  rmSync(work, { recursive: true, force: true });
});

function context(name: string, cmdline: string, extra: Partial<VmConfig> = {}): EngineContext {
  const now = new Date().toISOString();
  const config = VmConfig.parse({
    schemaVersion: 1, id: randomUUID(), name, engine: 'microvm', cpus: 1, memoryMiB: 32, network: [],
    directKernel: { kernel: ensureTestGuest(), cmdline }, createdAt: now, modifiedAt: now, ...extra,
  });
  const bundleDir = join(work, name);
  return { config, bundleDir, runtimeDir: join(work, `${name}.run`) };
}

function readUntil(stream: Duplex, marker: string, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => { stream.off('data', onData); reject(new Error(`no "${marker}" in serial output: ${JSON.stringify(text)}`)); }, timeoutMs);
    const onData = (d: Buffer) => {
      text += d.toString('latin1');
      if (text.includes(marker)) {
        clearTimeout(timer);
        stream.off('data', onData);
        resolve(text);
      }
    };
    stream.on('data', onData);
  });
}

describe.skipIf(!!skip)('MicrovmEngine', () => {
  it('runs a guest in a detached host: serial fan-out, pause/resume, snapshots, reattach, kill', async () => {
    const { MicrovmEngine } = await import('../../main/engines/microvm/engine.js');
    const engine = new MicrovmEngine();
    const ctx = context('echo-vm', 'mode=echo');
    const accel = await engine.check(ctx);
    expect(accel.used).toBe('kvm');

    const { handle } = await engine.start(ctx);
    handles.push(handle);
    expect(handle.pid).toBeGreaterThan(0);
    expect(handle.pid).not.toBe(process.pid);
    expect(await handle.state()).toBe('running');

    const a = await handle.openSerial();
    const b = await handle.openSerial();
    // The guest may have printed its banner before we connected; ask for fresh output and see it on both.
    const seenA = readUntil(a, 'ping-1');
    const seenB = readUntil(b, 'ping-1');
    a.write('ping-1\n');
    await Promise.all([seenA, seenB]);

    await handle.pause();
    expect(await handle.state()).toBe('paused');
    await handle.resume();
    expect(await handle.state()).toBe('running');

    const snap = join(work, 'echo.snap');
    const saved = (await handle.command('snapshot-save', { path: snap })) as { bytes: number; millis: number };
    expect(saved.bytes).toBeGreaterThan(0);
    expect(existsSync(snap)).toBe(true);
    const loaded = (await handle.command('snapshot-load', { path: snap })) as { state: string };
    expect(loaded.state).toBe('running');
    const afterRestore = readUntil(b, 'after-restore');
    a.write('after-restore\n');
    await afterRestore;

    // Another process (here: another engine instance) finds the running guest again.
    const again = await new MicrovmEngine().attach(ctx);
    expect(again).not.toBeNull();
    expect(again!.pid).toBe(handle.pid);
    expect(await again!.state()).toBe('running');
    again!.close();

    const events: string[] = [];
    handle.onEvent((name) => events.push(name));
    const record = await handle.kill();
    expect(record.reason).toBe('killed');
    expect(ExitRecord.parse(record)).toBeTruthy();
    const onDisk = ExitRecord.parse(JSON.parse(readFileSync(join(ctx.bundleDir, 'logs', 'last-exit.json'), 'utf8')));
    expect(onDisk.reason).toBe('killed');
    expect(readFileSync(join(ctx.bundleDir, 'logs', 'serial.log'), 'utf8')).toContain('after-restore');
    expect(events).toContain('exit');
    for (let i = 0; i < 40 && existsSync(join(ctx.runtimeDir, 'microvm-host.json')); i++) await new Promise((r) => setTimeout(r, 50));
    expect(await engine.attach(ctx)).toBeNull();
  });

  it('keeps the guest running after the process that started it exits', async () => {
    const { MicrovmEngine } = await import('../../main/engines/microvm/engine.js');
    const ctx = context('detached-vm', 'mode=echo');
    const script = join(work, 'starter.mjs');
    const engineUrl = pathToFileURL(join(repoRoot, 'main', 'engines', 'microvm', 'engine.ts')).href;
    writeFileSync(script, [
      `const mod = await import(${JSON.stringify(engineUrl)});`,
      'const MicrovmEngine = mod.MicrovmEngine ?? mod.default.MicrovmEngine;',
      'const { handle } = await new MicrovmEngine().start(JSON.parse(process.argv[2]));',
      'console.log(JSON.stringify({ pid: handle.pid }));',
      'handle.close();',
      'process.exit(0);',
    ].join('\n'));
    const loader = pathToFileURL(join(repoRoot, 'node_modules', 'jiti', 'lib', 'jiti-register.mjs')).href;
    const r = spawnSync(process.execPath, ['--import', loader, script, JSON.stringify(ctx)], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const { pid } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { pid: number };
    const handle = await new MicrovmEngine().attach(ctx);
    expect(handle).not.toBeNull();
    handles.push(handle!);
    expect(handle!.pid).toBe(pid);
    expect(await handle!.state()).toBe('running');
    // reset boots the kernel afresh inside the same host process.
    const serial = await handle!.openSerial();
    const banner = readUntil(serial, 'ECHO-READY');
    await handle!.reset();
    await banner;
    expect(handle!.pid).toBe(pid);
    expect((await handle!.kill()).reason).toBe('killed');
  });

  it('records guest-poweroff with the serial tail when the guest powers itself off', async () => {
    const { MicrovmEngine } = await import('../../main/engines/microvm/engine.js');
    const engine = new MicrovmEngine();
    const ctx = context('poweroff-vm', 'mode=compute steps=2 iters=100');
    const { handle } = await engine.start(ctx);
    handles.push(handle);
    const record = await handle.exited();
    expect(record.reason).toBe('guest-poweroff');
    expect(record.logTail.join('\n')).toMatch(/DONE [0-9a-f]{16}/);
    expect(ExitRecord.parse(JSON.parse(readFileSync(join(ctx.bundleDir, 'logs', 'last-exit.json'), 'utf8'))).reason).toBe('guest-poweroff');
  });

  it('shuts down gracefully with Ctrl-Alt-Del, and forces off a guest that ignores it', async () => {
    const { MicrovmEngine } = await import('../../main/engines/microvm/engine.js');
    const engine = new MicrovmEngine();
    // The irq guest handles keyboard interrupts and powers off on Ctrl-Alt-Del, as Linux with reboot=k does.
    const ctx = context('graceful-vm', 'mode=irq');
    const { handle } = await engine.start(ctx);
    handles.push(handle);
    for (let i = 0; i < 200 && !readFileSync(join(ctx.bundleDir, 'logs', 'serial.log'), 'utf8').includes('IRQ-READY'); i++) await new Promise((r) => setTimeout(r, 25));
    const graceful = await handle.shutdown(10_000);
    expect(graceful.reason).toBe('shutdown');
    expect(graceful.detail).toMatch(/powered off after a Ctrl-Alt-Del/);
    expect(graceful.logTail).toContain('CTRL-ALT-DEL');

    // The echo guest never looks at the keyboard.
    const stubborn = context('stubborn-vm', 'mode=echo');
    const h2 = (await engine.start(stubborn)).handle;
    handles.push(h2);
    const forced = await h2.shutdown(300);
    expect(forced.reason).toBe('shutdown');
    expect(forced.detail).toMatch(/did not power off within 300 ms.*forced off/);
  });

  it('starts paused when asked', async () => {
    const { MicrovmEngine } = await import('../../main/engines/microvm/engine.js');
    const ctx = context('paused-vm', 'mode=echo');
    const { handle } = await new MicrovmEngine().start(ctx, { paused: true });
    handles.push(handle);
    expect(await handle.state()).toBe('paused');
    await handle.resume();
    expect(await handle.state()).toBe('running');
    await handle.kill();
  });

  it('fails start with the loader error for a broken kernel and writes a crash record', async () => {
    const { MicrovmEngine } = await import('../../main/engines/microvm/engine.js');
    const bad = join(work, 'bad.bzImage');
    writeFileSync(bad, Buffer.alloc(4096, 0x41));
    const ctx = context('bad-vm', '');
    ctx.config.directKernel!.kernel = bad;
    await expect(new MicrovmEngine().start(ctx)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/not a bzImage/) });
  });

  it('refuses configs it cannot run', async () => {
    const { MicrovmEngine } = await import('../../main/engines/microvm/engine.js');
    const engine = new MicrovmEngine();
    await expect(engine.check(context('tcg-vm', '', { accel: 'tcg' }))).rejects.toMatchObject({ code: 'EINVAL' });
    const qcow = context('qcow-vm', '', { disks: [{ id: 'd0', path: 'disk.qcow2', format: 'qcow2', owned: true, readOnly: false }] });
    await expect(engine.check(qcow)).rejects.toThrow(/raw images only/);
  });
});
