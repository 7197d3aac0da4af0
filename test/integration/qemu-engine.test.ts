// Boots the real test guest under QEMU through QemuEngine: console, disk, NAT forward, pause, reattach, stop paths.
import { randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VmConfig, ExitRecord } from '../../main/api/schema.js';
import { VmdeskError } from '../../main/api/errors.js';
import type { Duplex, EngineContext, VmHandle } from '../../main/engines/engine.js';
import { checkInUse, createQcow2 } from '../../main/engines/qemu/disks.js';
import { QemuEngine } from '../../main/engines/qemu/engine.js';
import { runtimeFiles } from '../../main/engines/qemu/layout.js';
import { GUEST_HTTP_PORT, GUEST_HTTP_TEXT, GUEST_READY_MARKER, guestPaths } from '../guest/guest.js';

const MiB = 1024 * 1024;
const root = mkdtempSync(join(tmpdir(), 'vmdesk-qe-'));
const bundleDir = join(root, 'bundle');
// Short: unix socket paths must stay under 100 bytes.
const runtimeDir = join(root, 'rt');
const handles: VmHandle[] = [];
let hostPort = 0;
let ctx: EngineContext;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function makeConfig(extra: Partial<VmConfig> = {}): VmConfig {
  const { kernel, initrd } = guestPaths();
  return VmConfig.parse({
    schemaVersion: 1,
    id: randomUUID(),
    name: 'engine-test',
    cpus: 1,
    memoryMiB: 256,
    directKernel: { kernel, initrd, cmdline: 'console=ttyS0 panic=-1' },
    disks: [{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true }],
    network: [{ mode: 'nat', forwards: [{ protocol: 'tcp', hostPort, guestPort: GUEST_HTTP_PORT }] }],
    createdAt: new Date().toISOString(),
    modifiedAt: new Date().toISOString(),
    ...extra,
  });
}

/** Collects console output and waits for patterns in what arrives after a given point. */
class Console {
  text = '';
  constructor(readonly stream: Duplex) {
    stream.on('data', (d: Buffer) => (this.text += d.toString('utf8')));
  }
  async waitFor(pattern: RegExp, from = 0, timeoutMs = 60_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = pattern.exec(this.text.slice(from));
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; console tail:\n${JSON.stringify(this.text.slice(-1500))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  /** Runs a shell command and returns the output lines between two unique markers. */
  async run(command: string, timeoutMs = 60_000): Promise<string> {
    const tag = `M${Math.random().toString(36).slice(2, 8)}`;
    const from = this.text.length;
    // The markers are built by the shell so the echoed command line itself never matches.
    this.stream.write(`echo ${tag}''BEGIN; ${command}; echo ${tag}''END\n`);
    const m = await this.waitFor(new RegExp(`${tag}BEGIN\\r?\\n([\\s\\S]*?)${tag}END`), from, timeoutMs);
    return m[1]!.replace(/\r/g, '').trim();
  }
  close(): void {
    this.stream.destroy();
  }
}

function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/', timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

async function startGuest(engine = new QemuEngine()): Promise<{ handle: VmHandle; console: Console }> {
  const { handle } = await engine.start(ctx);
  handles.push(handle);
  const console = new Console(await handle.openSerial());
  await console.waitFor(new RegExp(GUEST_READY_MARKER), 0, 90_000);
  return { handle, console };
}

function lastExit(): ExitRecord {
  return ExitRecord.parse(JSON.parse(readFileSync(join(bundleDir, 'logs', 'last-exit.json'), 'utf8')));
}

beforeAll(async () => {
  guestPaths();
  hostPort = await freePort();
  await createQcow2(join(bundleDir, 'disks', 'disk0.qcow2'), 64 * MiB).catch(async (e) => {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(bundleDir, 'disks'), { recursive: true });
    if (e instanceof VmdeskError) await createQcow2(join(bundleDir, 'disks', 'disk0.qcow2'), 64 * MiB);
    else throw e;
  });
  ctx = { config: makeConfig(), bundleDir, runtimeDir };
});

afterAll(async () => {
  for (const h of handles) {
    await h.kill().catch(() => undefined);
    h.close();
  }
  // Belt and braces: anything a failed test left behind.
  const rec = runtimeFiles(runtimeDir).supervisorRecord;
  if (existsSync(rec)) {
    const { pid, qemuPid } = JSON.parse(readFileSync(rec, 'utf8')) as { pid: number; qemuPid: number };
    for (const p of [qemuPid, pid]) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  if (!process.env.VMDESK_KEEP_TEST_DIRS) rmSync(root, { recursive: true, force: true });
});

describe('QemuEngine with the test guest', () => {
  let handle: VmHandle;
  let con: Console;

  it('starts, boots to the marker and runs shell commands on the serial console', async () => {
    const accel = await new QemuEngine().check(ctx);
    if (existsSync('/sys/module/kvm_pvm')) expect(accel.used).toBe('tcg');
    ({ handle, console: con } = await startGuest());
    expect(await handle.state()).toBe('running');
    expect(handle.pid).toBeGreaterThan(0);
    expect(handle.vncSocket).toBe(runtimeFiles(runtimeDir).vnc);
    const rec = JSON.parse(readFileSync(runtimeFiles(runtimeDir).supervisorRecord, 'utf8'));
    expect(rec.qemuPid).toBe(handle.pid);
    expect(await con.run('echo $((6*7))')).toBe('42');
  }, 120_000);

  it('serves VNC on a unix socket and takes screenshots', async () => {
    expect(existsSync(handle.vncSocket!)).toBe(true);
    const png = join(root, 'screen.png');
    await handle.command('screendump', { filename: png, format: 'png' });
    expect(readFileSync(png).subarray(1, 4).toString()).toBe('PNG');
  });

  it('sees the virtio disk at its size and the disk is locked while running', { timeout: 90_000 }, async () => {
    expect(await con.run('cat /sys/block/vda/size')).toBe(String((64 * MiB) / 512));
    await expect(checkInUse(join(bundleDir, 'disks', 'disk0.qcow2'), 'qcow2')).rejects.toMatchObject({ code: 'EBUSY' });
  });

  it('forwards a host port on 127.0.0.1 to the guest service', async () => {
    let body = '';
    for (let i = 0; i < 20 && !body.includes(GUEST_HTTP_TEXT); i++) {
      body = await httpGet(hostPort).catch(() => '');
      if (!body.includes(GUEST_HTTP_TEXT)) await new Promise((r) => setTimeout(r, 500));
    }
    expect(body).toContain(GUEST_HTTP_TEXT);
  }, 30_000);

  it('pauses and resumes', async () => {
    const states: unknown[] = [];
    const off = handle.onEvent((name, data) => states.push([name, data]));
    await handle.pause();
    expect(await handle.state()).toBe('paused');
    await handle.resume();
    expect(await handle.state()).toBe('running');
    off();
    expect(states.some(([n]) => n === 'STOP')).toBe(true);
    expect(states.some(([n]) => n === 'RESUME')).toBe(true);
    expect(await con.run('echo alive')).toBe('alive');
  });

  it('is reattached by a fresh engine (as after an app restart) and fans the console out', async () => {
    const again = await new QemuEngine().attach(ctx);
    expect(again).not.toBeNull();
    handles.push(again!);
    expect(again!.pid).toBe(handle.pid);
    expect(await again!.state()).toBe('running');
    expect(await again!.command('query-status')).toMatchObject({ running: true });
    await again!.pause();
    expect(await handle.state()).toBe('paused');
    await again!.resume();
    const second = new Console(await again!.openSerial({ replay: false } as never));
    const from = con.text.length;
    second.stream.write('echo fan$((1+1))out\n');
    await second.waitFor(/fan2out/);
    await con.waitFor(/fan2out/, from);
    second.close();
    await expect(new QemuEngine().start(ctx)).rejects.toMatchObject({ code: 'ESTATE' });
  });

  it('resets the guest, which boots again', async () => {
    const from = con.text.length;
    await handle.reset();
    await con.waitFor(new RegExp(GUEST_READY_MARKER), from, 90_000);
    expect(await handle.state()).toBe('running');
  }, 120_000);

  it('shuts down gracefully through ACPI and records it', async () => {
    const other = handles[handles.length - 1]!;
    const exited = handle.exited();
    const record = await other.shutdown(60_000);
    expect(['shutdown', 'guest-poweroff']).toContain(record.reason);
    expect((await exited).reason).toBe(record.reason);
    expect(lastExit().reason).toBe(record.reason);
    expect(con.text).toContain('power button pressed');
    await new Promise((r) => setTimeout(r, 500));
    expect(existsSync(runtimeFiles(runtimeDir).control)).toBe(false);
    expect(existsSync(runtimeFiles(runtimeDir).supervisorRecord)).toBe(false);
    expect(await new QemuEngine().attach(ctx)).toBeNull();
  }, 90_000);

  it('records a guest powering itself off', async () => {
    const { handle: h, console: c } = await startGuest();
    c.stream.write('poweroff -f\n');
    const record = await h.exited();
    expect(record.reason).toBe('guest-poweroff');
  }, 120_000);

  it('starts paused when asked, then kills', async () => {
    const { handle: h } = await engineStart({ paused: true });
    expect(await h.state()).toBe('paused');
    const record = await h.kill();
    expect(record.reason).toBe('killed');
    expect(lastExit().reason).toBe('killed');
  }, 120_000);

  it('records a QEMU crash with the log tail', async () => {
    const { handle: h } = await engineStart();
    process.kill(h.pid, 'SIGSEGV');
    const record = await h.exited();
    expect(record.reason).toBe('crashed');
    expect(record.signal).toBe('SIGSEGV');
    expect(record.logTail.at(-1)).toMatch(/QEMU exited \(signal SIGSEGV\): crashed/);
    expect(lastExit()).toMatchObject({ reason: 'crashed', signal: 'SIGSEGV' });
  }, 120_000);

  it('forces the guest off when it ignores the power button past the timeout', async () => {
    const { handle: h } = await engineStart();
    // Just started: the kernel has not even loaded its ACPI button driver.
    const record = await h.shutdown(300);
    expect(record.reason).toBe('killed');
    expect(record.detail).toMatch(/did not power off within 300 ms/);
  }, 120_000);

  it('records QEMU stopped by a host signal', async () => {
    const { handle: h } = await engineStart();
    process.kill(h.pid, 'SIGTERM');
    const record = await h.exited();
    expect(record.reason).toBe('host-signal');
  }, 120_000);

  it('takes QEMU down with a killed supervisor and records it on the next attach', async () => {
    const { handle: h } = await engineStart();
    const sup = JSON.parse(readFileSync(runtimeFiles(runtimeDir).supervisorRecord, 'utf8')) as { pid: number; qemuPid: number };
    process.kill(sup.pid, 'SIGKILL');
    const gone = async (pid: number) => {
      for (let i = 0; i < 50; i++) {
        try {
          process.kill(pid, 0);
        } catch {
          return true;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      return false;
    };
    expect(await gone(sup.qemuPid)).toBe(true);
    expect(await new QemuEngine().attach(ctx)).toBeNull();
    expect(lastExit().reason).toBe('crashed');
    expect(lastExit().detail).toMatch(/supervisor .* died/);
    expect(existsSync(runtimeFiles(runtimeDir).supervisorRecord)).toBe(false);
    expect(await h.state()).toBe('crashed');
  }, 120_000);

  it('keeps the guest running after the process that started it has exited', async () => {
    // A separate Node process (like a CLI invocation) starts the VM and exits at once.
    const script = join(root, 'start-and-exit.mjs');
    const engineUrl = new URL('../../main/engines/qemu/engine.ts', import.meta.url).href;
    writeFileSync(
      script,
      `const mod = await import(${JSON.stringify(engineUrl)});\n` +
        // jiti may hand the TS module back wrapped as a default export.
        `const QemuEngine = mod.QemuEngine ?? mod.default.QemuEngine;\n` +
        `const ctx = JSON.parse(process.argv[2]);\n` +
        `const { handle } = await new QemuEngine().start(ctx);\n` +
        `console.log(JSON.stringify({ pid: handle.pid }));\n` +
        `handle.close();\n`,
    );
    const jiti = new URL('../../node_modules/jiti/lib/jiti-register.mjs', import.meta.url).href;
    const out = execFileSync(process.execPath, ['--import', jiti, script, JSON.stringify(ctx)], { encoding: 'utf8', timeout: 60_000 });
    const { pid } = JSON.parse(out.trim().split('\n').at(-1)!) as { pid: number };
    const h = await new QemuEngine().attach(ctx);
    expect(h).not.toBeNull();
    handles.push(h!);
    expect(h!.pid).toBe(pid);
    const c = new Console(await h!.openSerial());
    await c.waitFor(new RegExp(GUEST_READY_MARKER), 0, 90_000);
    expect(await c.run('echo $((7*6))')).toBe('42');
    c.close();
    expect((await h!.kill()).reason).toBe('killed');
  }, 150_000);

  it('fails to start with EENGINE carrying QEMU\'s complaint', async () => {
    const bad = makeConfig({ directKernel: { kernel: join(root, 'no-such-kernel'), cmdline: 'console=ttyS0' } });
    const err = await new QemuEngine().start({ config: bad, bundleDir, runtimeDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmdeskError);
    expect((err as VmdeskError).code).toBe('EENGINE');
    expect((err as VmdeskError).details.join('\n')).toMatch(/could not open kernel file/);
  }, 60_000);

  it('reports a missing QEMU binary as EHOST with the install hint', async () => {
    const saved = process.env.VMDESK_QEMU;
    process.env.VMDESK_QEMU = join(root, 'no-qemu-here');
    try {
      await expect(new QemuEngine().check(ctx)).rejects.toMatchObject({ code: 'EHOST' });
    } finally {
      if (saved === undefined) delete process.env.VMDESK_QEMU;
      else process.env.VMDESK_QEMU = saved;
    }
    const savedPath = process.env.PATH;
    process.env.PATH = root;
    try {
      await expect(new QemuEngine().check(ctx)).rejects.toThrow(/sudo apt install qemu-system-x86 qemu-utils/);
    } finally {
      process.env.PATH = savedPath;
    }
  });
});

async function engineStart(opts: { paused?: boolean } = {}): Promise<{ handle: VmHandle }> {
  const { handle } = await new QemuEngine().start(ctx, opts);
  handles.push(handle);
  return { handle };
}
