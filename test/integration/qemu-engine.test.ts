// Boots the real test guest through the QEMU engine module: QEMU as this process's own detached child, serial
// fanned out, console, disk, NAT forward, pause, adoption by a "new daemon", every way a guest ends.
import { randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VmConfig, ExitRecord } from '../../main/api/schema.js';
import { VmdeskError } from '../../main/api/errors.js';
import type { EngineContext, VmRuntime } from '../../main/engines/engine.js';
import { checkFree, createImage } from '../../main/platform/qemu-img.js';
import { qemuEngine } from '../../main/engines/qemu/module.js';
import { QemuRuntime } from '../../main/engines/qemu/runtime.js';
import { runtimeFiles } from '../../main/engines/qemu/layout.js';
import { SerialHub, type SerialSession } from '../../main/core/serial.js';
import { freePort } from '../helpers/ports.js';
import { GUEST_HTTP_PORT, GUEST_HTTP_TEXT, GUEST_READY_MARKER, guestPaths } from '../guest/guest.js';

const MiB = 1024 * 1024;
const root = mkdtempSync(join(tmpdir(), 'vmdesk-qe-'));
const bundleDir = join(root, 'bundle');
// Short: unix socket paths must stay under 100 bytes.
const runtimeDir = join(root, 'rt');
const runtimes: VmRuntime[] = [];
let hostPort = 0;
let ctx: EngineContext;

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

/** Whether a listener can bind 127.0.0.1:port right now. */
function checkHostPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** Collects console output and waits for patterns in what arrives after a given point. */
class Console {
  text = '';
  constructor(readonly session: SerialSession) {
    this.text = session.history.toString('utf8');
    session.onData((d: Buffer) => (this.text += d.toString('utf8')));
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
    this.session.write(Buffer.from(`echo ${tag}''BEGIN; ${command}; echo ${tag}''END\n`));
    const m = await this.waitFor(new RegExp(`${tag}BEGIN\\r?\\n([\\s\\S]*?)${tag}END`), from, timeoutMs);
    return m[1]!.replace(/\r/g, '').trim();
  }
  send(text: string): void {
    this.session.write(Buffer.from(text));
  }
  close(): void {
    this.session.close();
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

async function startGuest(): Promise<{ rt: VmRuntime; console: Console }> {
  const rt = await qemuEngine.start(ctx);
  runtimes.push(rt);
  const console = new Console(new SerialHub(rt.serial).open());
  await console.waitFor(new RegExp(GUEST_READY_MARKER), 0, 90_000);
  return { rt, console };
}

async function engineStart(opts: { paused?: boolean } = {}): Promise<{ rt: VmRuntime }> {
  const rt = await qemuEngine.start(ctx, opts);
  runtimes.push(rt);
  return { rt };
}

function lastExit(): ExitRecord {
  return ExitRecord.parse(JSON.parse(readFileSync(join(bundleDir, 'logs', 'last-exit.json'), 'utf8')));
}

beforeAll(async () => {
  guestPaths();
  hostPort = await freePort();
  mkdirSync(join(bundleDir, 'disks'), { recursive: true });
  await createImage(join(bundleDir, 'disks', 'disk0.qcow2'), 64 * MiB, 'qcow2');
  ctx = { config: makeConfig(), bundleDir, runtimeDir };
});

afterAll(async () => {
  for (const r of runtimes) await r.kill().catch(() => undefined);
  // Belt and braces: anything a failed test left behind.
  const rec = runtimeFiles(runtimeDir).record;
  if (existsSync(rec)) {
    const { pid } = JSON.parse(readFileSync(rec, 'utf8')) as { pid: number };
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (!process.env.VMDESK_KEEP_TEST_DIRS) rmSync(root, { recursive: true, force: true });
});

describe('QEMU engine with the test guest', () => {
  let rt: VmRuntime;
  let con: Console;

  it('starts, boots to the marker and runs shell commands on the serial console', async () => {
    const { accel } = await qemuEngine.check(ctx);
    if (existsSync('/sys/module/kvm_pvm')) expect(accel.used).toBe('tcg');
    ({ rt, console: con } = await startGuest());
    expect(rt.state).toBe('running');
    expect(rt.pid).toBeGreaterThan(0);
    expect(rt.vncSocket).toBe(runtimeFiles(runtimeDir).vnc);
    // No Node process in between: QEMU is our own child, recorded for a later daemon to adopt.
    const rec = JSON.parse(readFileSync(runtimeFiles(runtimeDir).record, 'utf8'));
    expect(rec.pid).toBe(rt.pid);
    expect(readFileSync(`/proc/${rt.pid}/stat`, 'utf8').split(' ')[3]).toBe(String(process.pid));
    expect(await con.run('echo $((6*7))')).toBe('42');
  }, 120_000);

  it('serves VNC on a unix socket and takes screenshots', async () => {
    expect(existsSync(rt.vncSocket!)).toBe(true);
    const png = await rt.screenshot!();
    expect(png.subarray(1, 4).toString()).toBe('PNG');
  });

  it('sees the virtio disk at its size and the disk is locked while running', { timeout: 90_000 }, async () => {
    expect(await con.run('cat /sys/block/vda/size')).toBe(String((64 * MiB) / 512));
    await expect(checkFree(join(bundleDir, 'disks', 'disk0.qcow2'), 'qcow2')).rejects.toMatchObject({ code: 'EBUSY' });
  });

  it('forwards a host port on 127.0.0.1 to the guest service', async () => {
    let body = '';
    for (let i = 0; i < 20 && !body.includes(GUEST_HTTP_TEXT); i++) {
      body = await httpGet(hostPort).catch(() => '');
      if (!body.includes(GUEST_HTTP_TEXT)) await new Promise((r) => setTimeout(r, 500));
    }
    expect(body).toContain(GUEST_HTTP_TEXT);
  }, 30_000);

  it('pauses and resumes, reporting each state', async () => {
    const states: string[] = [];
    const off = rt.onState((s) => states.push(s));
    await rt.pause();
    expect(rt.state).toBe('paused');
    await rt.resume();
    expect(rt.state).toBe('running');
    off();
    expect(states).toEqual(['paused', 'running']);
    expect(await con.run('echo alive')).toBe('alive');
  });

  it('is adopted by a new daemon after the old one lets go, console history included', async () => {
    rt.detach();
    con.close();
    const again = await qemuEngine.adopt(ctx);
    expect(again).not.toBeNull();
    runtimes.push(again!);
    expect(again!.adopted).toBe(true);
    expect(again!.pid).toBe(rt.pid);
    expect(again!.state).toBe('running');
    // The replay comes from QEMU's own serial log: what was printed before the adoption is there.
    const second = new Console(new SerialHub(again!.serial).open());
    expect(second.text).toContain('alive');
    expect(await second.run('echo fan$((1+1))out')).toBe('fan2out');
    await expect(qemuEngine.start(ctx)).rejects.toMatchObject({ code: 'ESTATE' });
    rt = again!;
    con = second;
  });

  it('resets the guest, which boots again', async () => {
    const from = con.text.length;
    await rt.reset();
    await con.waitFor(new RegExp(GUEST_READY_MARKER), from, 90_000);
    expect(rt.state).toBe('running');
  }, 120_000);

  it('shuts an adopted guest down gracefully through ACPI and records it from QMP events', async () => {
    const record = await rt.shutdown(60_000);
    expect(['shutdown', 'guest-poweroff']).toContain(record.reason);
    expect(lastExit().reason).toBe(record.reason);
    expect(con.text).toContain('power button pressed');
    expect(existsSync(runtimeFiles(runtimeDir).record)).toBe(false);
    expect(await qemuEngine.adopt(ctx)).toBeNull();
  }, 90_000);

  it('records a guest powering itself off', async () => {
    const { rt: r, console: c } = await startGuest();
    c.send('poweroff -f\n');
    const record = await r.exited;
    expect(record.reason).toBe('guest-poweroff');
  }, 120_000);

  it('starts paused when asked, then kills', async () => {
    const { rt: r } = await engineStart({ paused: true });
    expect(r.state).toBe('paused');
    const record = await r.kill();
    expect(record.reason).toBe('killed');
    expect(lastExit().reason).toBe('killed');
  }, 120_000);

  it('records a QEMU crash with the log tail and the signal (it is our child)', async () => {
    const { rt: r } = await engineStart();
    process.kill(r.pid, 'SIGSEGV');
    const record = await r.exited;
    expect(record.reason).toBe('crashed');
    expect(record.signal).toBe('SIGSEGV');
    expect(record.logTail.at(-1)).toMatch(/QEMU exited \(signal SIGSEGV\): crashed/);
    expect(lastExit()).toMatchObject({ reason: 'crashed', signal: 'SIGSEGV' });
  }, 120_000);

  it('forces the guest off when it ignores the power button past the timeout', async () => {
    const { rt: r } = await engineStart();
    // Just started: the kernel has not even loaded its ACPI button driver.
    const record = await r.shutdown(300);
    expect(record.reason).toBe('killed');
    expect(record.detail).toMatch(/did not power off within 300 ms/);
  }, 120_000);

  it('records QEMU stopped by a host signal', async () => {
    const { rt: r } = await engineStart();
    process.kill(r.pid, 'SIGTERM');
    const record = await r.exited;
    expect(record.reason).toBe('host-signal');
  }, 120_000);

  it('keeps the guest running after the process that started it has exited, and a new one adopts it', async () => {
    // A separate Node process (a daemon) starts the VM and exits at once: QEMU must not die with it.
    const script = join(root, 'start-and-exit.mjs');
    const moduleUrl = new URL('../../main/engines/qemu/module.ts', import.meta.url).href;
    writeFileSync(
      script,
      `const mod = await import(${JSON.stringify(moduleUrl)});\n` +
        `const engine = mod.qemuEngine ?? mod.default.qemuEngine;\n` +
        `const ctx = JSON.parse(process.argv[2]);\n` +
        `const rt = await engine.start(ctx);\n` +
        `console.log(JSON.stringify({ pid: rt.pid }));\n` +
        `rt.detach();\n` +
        `process.exit(0);\n`,
    );
    const tsx = new URL('../../node_modules/tsx/dist/loader.mjs', import.meta.url).href;
    const out = execFileSync(process.execPath, ['--import', tsx, script, JSON.stringify(ctx)], { encoding: 'utf8', timeout: 60_000 });
    const { pid } = JSON.parse(out.trim().split('\n').at(-1)!) as { pid: number };
    const r = await qemuEngine.adopt(ctx);
    expect(r).not.toBeNull();
    runtimes.push(r!);
    expect(r!.pid).toBe(pid);
    const c = new Console(new SerialHub(r!.serial).open());
    await c.waitFor(new RegExp(GUEST_READY_MARKER), 0, 90_000);
    expect(await c.run('echo $((7*6))')).toBe('42');
    // Not our child: its end is told by QMP (the guest powers off) rather than an exit status.
    c.send('poweroff -f\n');
    const record = await r!.exited;
    expect(record.reason).toBe('guest-poweroff');
  }, 150_000);

  it('reports, once, a guest that ended while no daemon watched it', async () => {
    const { rt: r } = await engineStart();
    r.detach();
    process.kill(r.pid, 'SIGKILL');
    for (let i = 0; i < 50 && existsSync(`/proc/${r.pid}`) && !readFileSync(`/proc/${r.pid}/stat`, 'utf8').includes(') Z'); i++) await new Promise((res) => setTimeout(res, 50));
    expect(await qemuEngine.adopt(ctx)).toBeNull();
    const exit = await qemuEngine.reapOrphan!(ctx);
    expect(exit?.reason).toBe('unknown');
    expect(exit?.detail).toMatch(/while no VMDesk daemon was watching/);
    // Its passt, which outlives a killed QEMU for a moment, is gone too: the forwarded port is free again.
    await expect(checkHostPortFree(hostPort)).resolves.toBe(true);
    expect(await qemuEngine.reapOrphan!(ctx)).toBeUndefined();
  }, 120_000);

  it("fails to start with EENGINE carrying QEMU's complaint", async () => {
    const bad = makeConfig({ directKernel: { kernel: join(root, 'no-such-kernel'), cmdline: 'console=ttyS0' } });
    const err = await qemuEngine.start({ config: bad, bundleDir, runtimeDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmdeskError);
    expect((err as VmdeskError).code).toBe('EENGINE');
    expect([(err as VmdeskError).message, ...(err as VmdeskError).details].join('\n')).toMatch(/could not open kernel file/);
  }, 60_000);

  it('reports a missing QEMU binary as EHOST with the install hint', async () => {
    const saved = process.env.VMDESK_QEMU;
    process.env.VMDESK_QEMU = join(root, 'no-qemu-here');
    try {
      await expect(qemuEngine.check(ctx)).rejects.toMatchObject({ code: 'EHOST' });
    } finally {
      if (saved === undefined) delete process.env.VMDESK_QEMU;
      else process.env.VMDESK_QEMU = saved;
    }
    const savedPath = process.env.PATH;
    process.env.PATH = root;
    try {
      await expect(qemuEngine.check(ctx)).rejects.toThrow(/sudo apt install qemu-system-x86 qemu-utils/);
    } finally {
      process.env.PATH = savedPath;
    }
  });
});

