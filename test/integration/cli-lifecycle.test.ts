// The whole life of a real VM through the `vmdesk` binary: create, start, console, disk, port forward, stop;
// the daemon that holds it stopped and replaced (as after an upgrade or a reboot of the app) while it runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import http from 'node:http';
import { guestPaths, GUEST_HTTP_PORT, GUEST_HTTP_TEXT, GUEST_READY_MARKER } from '../guest/guest.js';
import { ConsoleSession, freePort, stopDaemon, tempHome, vmdesk, vmdeskJson } from '../helpers/cli.js';

function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

/** The process's command line; undefined once it is gone (or a zombie nobody reaped). */
function cmdline(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '')) return undefined;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return undefined;
  }
}

async function retry<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

describe('a VM through the CLI', () => {
  let home: string;
  let hostPort: number;
  const { kernel, initrd } = guestPaths();

  beforeAll(async () => {
    home = await tempHome();
    hostPort = await freePort();
  });

  afterAll(async () => {
    await vmdesk(home, ['kill', 'web']).catch(() => {});
    await stopDaemon(home);
    await rm(home, { recursive: true, force: true });
  });

  it('creates, boots, runs commands, sees its disk and forwarded port, pauses, outlives its daemon and stops gracefully', async () => {
    const created = await vmdeskJson(home, [
      'create', 'web', '--cpus', '1', '--memory', '256', '--disk', '64M',
      '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0 quiet',
      '--forward', `tcp:${hostPort}:${GUEST_HTTP_PORT}`,
    ]);
    expect(created).toMatchObject({ name: 'web', state: 'stopped' });
    expect(created.config.disks).toHaveLength(1);

    const start = await vmdesk(home, ['start', 'web']);
    expect(start.code, start.stderr).toBe(0);
    // accel auto always says what it chose and why.
    expect(start.stderr + start.stdout).toMatch(/accelerator: (tcg|kvm|hvf) \(.+\)/);

    const info = await vmdeskJson(home, ['info', 'web']);
    expect(['starting', 'running']).toContain(info.state);
    expect(info.accel.reason.length).toBeGreaterThan(5);

    const con = new ConsoleSession(home, 'web');
    try {
      await con.waitFor(new RegExp(GUEST_READY_MARKER), 90_000);
      con.send('echo result=$((6*7))\n');
      await con.waitFor(/result=42/);
      con.send('echo vda-sectors=$(cat /sys/block/vda/size)\n');
      const m = await con.waitFor(/vda-sectors=(\d+)\r?\n/);
      expect(Number(m[1]) * 512, con.output.slice(-3000)).toBe(64 * 1024 * 1024);
    } finally {
      await con.close();
    }

    expect(await retry(() => httpGet(hostPort), 20_000)).toContain(GUEST_HTTP_TEXT);

    expect((await vmdeskJson(home, ['pause', 'web'])).state).toBe('paused');
    expect((await vmdeskJson(home, ['info', 'web'])).state).toBe('paused');
    expect((await vmdeskJson(home, ['resume', 'web'])).state).toBe('running');

    // The daemon goes (vmdesk daemon stop, as an upgrade or a logout would have it) and the guest stays; the
    // next command starts a new daemon, which adopts the running guest and controls it.
    const first = await vmdeskJson(home, ['daemon', 'status']);
    expect(first).toMatchObject({ daemon: true, running: 1 });
    const stopped = await vmdesk(home, ['daemon', 'stop']);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stdout).toContain(`stopped the VMDesk daemon (pid ${first.pid}); 1 VM(s) keep running and are adopted by the next daemon`);
    expect(await vmdeskJson(home, ['daemon', 'status'])).toEqual({ daemon: false, home });
    expect(cmdline(info.pid)).toMatch(/qemu-system/);
    const again = await vmdeskJson(home, ['info', 'web']);
    expect(again.state).toBe('running');
    expect(again.pid).toBe(info.pid);
    const second = await vmdeskJson(home, ['daemon', 'status']);
    expect(second.pid).not.toBe(first.pid);
    expect(second).toMatchObject({ daemon: true, running: 1 });
    // Its console still reaches the guest, and pause and resume still work.
    const con2 = new ConsoleSession(home, 'web');
    try {
      await con2.waitFor(/\r?\n/, 30_000);
      con2.send('echo after-restart=$((40+2))\n');
      await con2.waitFor(/after-restart=42/);
    } finally {
      await con2.close();
    }
    expect((await vmdeskJson(home, ['pause', 'web'])).state).toBe('paused');
    expect((await vmdeskJson(home, ['resume', 'web'])).state).toBe('running');

    const stop = await vmdeskJson(home, ['stop', 'web', '--timeout', '60']);
    expect(stop.state).toBe('stopped');
    // ACPI power button honoured by the guest (acpid runs poweroff), not forced off after the timeout.
    expect(stop.lastExit.reason).toBe('shutdown');
    expect(stop.lastExit.detail).toMatch(/ACPI power-down; guest shut down/);
    const after = await vmdeskJson(home, ['info', 'web']);
    expect(after.state).toBe('stopped');
    expect(after.lastExit.reason).toBe('shutdown');
  });

  it('notices a guest that powers itself off', async () => {
    await vmdeskJson(home, ['start', 'web']);
    const con = new ConsoleSession(home, 'web');
    try {
      await con.waitFor(new RegExp(GUEST_READY_MARKER), 90_000);
      con.send('poweroff -f\n');
    } finally {
      await con.close();
    }
    const off = await retry(async () => {
      const i = await vmdeskJson(home, ['info', 'web']);
      if (i.state !== 'stopped') throw new Error(`state ${i.state}`);
      return i;
    }, 30_000);
    expect(off.lastExit.reason).toBe('guest-poweroff');
  });

  it('records a crashed QEMU with its log tail', async () => {
    await vmdeskJson(home, ['start', 'web']);
    const info = await vmdeskJson(home, ['info', 'web']);
    // QEMU is the daemon's own child, the pid the VM reports: make it crash.
    expect(cmdline(info.pid)).toMatch(/qemu-system/);
    process.kill(info.pid, 'SIGSEGV');
    const crashed = await retry(async () => {
      const i = await vmdeskJson(home, ['info', 'web']);
      if (i.state !== 'crashed') throw new Error(`state ${i.state}`);
      return i;
    }, 20_000);
    expect(crashed.lastExit.reason).toBe('crashed');
    expect(crashed.lastExit.signal ?? crashed.lastExit.detail).toMatch(/SEGV|signal/i);
    expect(Array.isArray(crashed.lastExit.logTail)).toBe(true);
  });
});
