// The library's daemon seen from the `vmdesk` binary: `events` streams what other clients do, `daemon status`
// and `daemon stop` (guests keep running), the daemon leaves by itself when idle (never while a guest runs or a
// client is connected), and a daemon of another build is replaced when idle and reported, not disturbed, when
// it runs guests. Real processes throughout: the CLI, the daemons it starts, QEMU (TCG).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { daemonSocketPath } from '../../main/platform/paths.js';
import { guestPaths } from '../guest/guest.js';
import { BIN, BUILD, FrozenBuild, stopDaemon, tempHome, vmdesk, vmdeskJson } from '../helpers/cli.js';

const { kernel, initrd } = guestPaths();
/** A guest that only needs to run, not to boot anywhere in particular. */
const guestArgs = ['--memory', '128', '--accel', 'tcg', '--net', 'none', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0 quiet'];

/** True while the process exists and is not a zombie (a detached daemon's parent may never reap it). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '');
  } catch {
    return false;
  }
}

async function until(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `vmdesk events` running in the background, its output collected. */
class Events {
  readonly child: ChildProcessWithoutNullStreams;
  out = '';
  err = '';
  readonly exited: Promise<number | null>;
  constructor(home: string, json: boolean, env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [BIN, '--home', home, 'events', ...(json ? ['--json'] : [])], { env: { ...process.env, ...env } });
    this.child.stdout.on('data', (d) => (this.out += d));
    this.child.stderr.on('data', (d) => (this.err += d));
    this.exited = new Promise((r) => this.child.once('exit', (code) => r(code)));
  }
  /** The JSON events printed so far. */
  events(): { type: string; id?: string; opId?: string; phase?: string; done?: boolean; state?: string; info?: { name: string; state: string; job?: { method: string } } }[] {
    return this.out
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  }
  stop(): Promise<number | null> {
    this.child.kill('SIGINT');
    return this.exited;
  }
}

/** Waits until the daemon counts `n` clients (besides the status call itself). */
async function clients(home: string, n: number, env: NodeJS.ProcessEnv = {}): Promise<void> {
  await until(`${n} client(s) are connected`, async () => {
    const r = await vmdesk(home, ['daemon', 'status', '--json'], { env });
    return r.code === 0 && JSON.parse(r.stdout).clients === n + 1;
  });
}

describe('vmdesk events', () => {
  let home: string;
  beforeAll(async () => {
    home = await tempHome();
  });
  afterAll(async () => {
    await vmdesk(home, ['kill', 'watched']).catch(() => {});
    await stopDaemon(home);
    await rm(home, { recursive: true, force: true });
  });

  it('prints every change other clients make, as JSON lines or one line each, until interrupted', async () => {
    const json = new Events(home, true);
    const text = new Events(home, false);
    try {
      await run();
    } finally {
      json.child.kill('SIGKILL');
      text.child.kill('SIGKILL');
    }
    async function run() {
      await clients(home, 2);

      const created = await vmdeskJson(home, ['create', 'watched', ...guestArgs]);
      expect((await vmdesk(home, ['set', 'watched', '--cpus', '2'])).code).toBe(0);
      expect((await vmdesk(home, ['start', 'watched'])).code).toBe(0);
      expect((await vmdesk(home, ['kill', 'watched'])).code).toBe(0);
      expect((await vmdesk(home, ['delete', 'watched'])).code).toBe(0);

      await until('the deletion is reported', () => json.events().some((e) => e.type === 'vm-deleted') && /deleted /.test(text.out));
      const evs = json.events();
      const mine = evs.filter((e) => e.id === created.id);
      // Created (with the long call's progress under one opId), changed under its job, started, stopped, deleted.
      expect(mine.find((e) => e.type === 'vm-created')).toMatchObject({ info: { name: 'watched', state: 'stopped' } });
      const createOp = evs.find((e) => e.type === 'progress' && !e.id && e.done)?.opId;
      expect(createOp).toBeTruthy();
      expect(mine.some((e) => e.type === 'vm-updated' && e.info?.job?.method === 'vm.update')).toBe(true);
      expect(mine.some((e) => e.type === 'vm-updated' && e.info?.job?.method === 'vm.start')).toBe(true);
      expect(mine.some((e) => e.type === 'vm-state' && e.state === 'running')).toBe(true);
      expect(mine.some((e) => e.type === 'vm-state' && e.state === 'stopped')).toBe(true);
      expect(mine.at(-1)).toEqual({ type: 'vm-deleted', id: created.id });
      // Running comes before stopped, and the deletion is last.
      const order = mine.map((e) => e.type + (e.state ? `:${e.state}` : ''));
      expect(order.indexOf('vm-state:running')).toBeLessThan(order.lastIndexOf('vm-state:stopped'));

      expect(text.out).toMatch(/^created watched stopped$/m);
      expect(text.out).toMatch(/^state watched running \(vm\.start\)$/m);
      expect(text.out).toMatch(/^state watched stopped$/m);
      expect(text.out).toMatch(new RegExp(`^deleted ${created.id}$`, 'm'));

      expect(await json.stop()).toBe(0);
      expect(await text.stop()).toBe(0);
      expect(json.err + text.err).toBe('');
    }
  });

  it('ends, exit code 0, when the daemon stops', async () => {
    const ev = new Events(home, true);
    await clients(home, 1);
    await stopDaemon(home);
    expect(await ev.exited).toBe(0);
  });
});

describe('vmdesk daemon status and stop', () => {
  let home: string;
  beforeAll(async () => {
    home = await tempHome();
  });
  afterAll(async () => {
    await vmdesk(home, ['kill', 'kept']).catch(() => {});
    await stopDaemon(home);
    await rm(home, { recursive: true, force: true });
  });

  it('status says when no daemon runs, and does not start one', async () => {
    expect(await vmdeskJson(home, ['daemon', 'status'])).toEqual({ daemon: false, home });
    const human = await vmdesk(home, ['daemon', 'status']);
    expect(human.stdout).toBe(`no VMDesk daemon runs for ${home} (any vmdesk command starts one)\n`);
    expect(existsSync(daemonSocketPath(home))).toBe(false);
    const stop = await vmdesk(home, ['daemon', 'stop']);
    expect(stop).toMatchObject({ code: 0, stdout: `no VMDesk daemon runs for ${home}\n` });
  });

  it('status reports the daemon: pid, build, protocol, library, clients, guests, jobs, memory', async () => {
    await vmdeskJson(home, ['create', 'kept', ...guestArgs]);
    const s = await vmdeskJson(home, ['daemon', 'status']);
    expect(s).toMatchObject({ daemon: true, version: '0.1.0', build: BUILD, protocol: 2, home, clients: 1, vms: 1, running: 0, jobs: [], idleExitMs: 30_000 });
    expect(alive(s.pid)).toBe(true);
    expect(readFileSync(`/proc/${s.pid}/cmdline`, 'utf8')).toContain(path.join('dist', 'main', 'daemon', 'main.js'));
    expect(s.rssBytes).toBeGreaterThan(10 * 1024 * 1024);
    expect(['flock', 'portable']).toContain(s.locks);
    expect(Date.parse(s.startedAt)).toBeLessThanOrEqual(Date.now());
    const human = await vmdesk(home, ['daemon', 'status']);
    expect(human.stdout).toContain(`daemon:   pid ${s.pid}, VMDesk 0.1.0 (build ${BUILD}, protocol 2)`);
    expect(human.stdout).toContain(`library:  ${home}: 1 VM(s), 0 running`);
    expect(human.stdout).toContain('clients:  1 connected (this one included)');
    expect(human.stdout).toContain('idle exit: after 30 s with no VM running and no client');
  });

  it('stop ends the daemon and leaves its guests running; the next command\'s daemon adopts them', async () => {
    await vmdeskJson(home, ['start', 'kept']);
    const vm = await vmdeskJson(home, ['info', 'kept']);
    const before = await vmdeskJson(home, ['daemon', 'status']);
    expect(before.running).toBe(1);
    const r = await vmdesk(home, ['daemon', 'stop']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`stopped the VMDesk daemon (pid ${before.pid}); 1 VM(s) keep running and are adopted by the next daemon\n`);
    await until('the daemon is gone', () => !alive(before.pid));
    expect(existsSync(daemonSocketPath(home))).toBe(false);
    expect(alive(vm.pid)).toBe(true);
    const after = await vmdeskJson(home, ['info', 'kept']);
    expect(after).toMatchObject({ state: 'running', pid: vm.pid });
    expect((await vmdeskJson(home, ['daemon', 'status'])).pid).not.toBe(before.pid);
    expect((await vmdeskJson(home, ['kill', 'kept'])).state).toBe('stopped');
    await until('QEMU is gone', () => !alive(vm.pid));
  });
});

describe('idle exit (VMDESK_DAEMON_IDLE_MS)', () => {
  let home: string;
  const env = { VMDESK_DAEMON_IDLE_MS: '400' };
  beforeAll(async () => {
    home = await tempHome();
  });
  afterAll(async () => {
    await vmdesk(home, ['kill', 'idler']).catch(() => {});
    await stopDaemon(home);
    await rm(home, { recursive: true, force: true });
  });

  it('exits once no guest runs and no client is connected, and not before', async () => {
    const json = async (args: string[]) => {
      const r = await vmdesk(home, [...args, '--json'], { env });
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout);
    };
    const socket = daemonSocketPath(home);
    // The daemon this command starts goes once the command has gone.
    await json(['create', 'idler', ...guestArgs]);
    await until('the idle daemon exits', () => !existsSync(socket), 10_000);
    expect(readFileSync(path.join(home, 'logs', 'daemon.log'), 'utf8')).toMatch(/idle: no VM running, no client, no job; exiting/);

    // A running guest keeps it, however long nobody is connected.
    await json(['start', 'idler']);
    const s = await json(['daemon', 'status']);
    expect(s).toMatchObject({ idleExitMs: 400, running: 1 });
    await sleep(2500);
    expect(alive(s.pid)).toBe(true);

    // So does a connected client once the guest is gone...
    const ev = new Events(home, true, env);
    await clients(home, 1, env);
    await json(['kill', 'idler']);
    await sleep(2500);
    expect(alive(s.pid)).toBe(true);
    expect(ev.events().some((e) => e.type === 'vm-state' && e.state === 'stopped')).toBe(true);
    // ...and when it leaves, the daemon goes.
    expect(await ev.stop()).toBe(0);
    await until('the daemon exits after its last client', () => !alive(s.pid), 10_000);
    expect(existsSync(socket)).toBe(false);
  });
});

describe('a daemon of another build', () => {
  let home: string;
  let other: FrozenBuild;
  const OTHER = '0ther0build00000';
  beforeAll(async () => {
    home = await tempHome();
    // The same code stamped as another build: what an upgrade of VMDesk leaves running.
    other = new FrozenBuild();
    other.setBuild(OTHER);
  });
  afterAll(async () => {
    await vmdesk(home, ['kill', 'g']).catch(() => {});
    await stopDaemon(home);
    await rm(home, { recursive: true, force: true });
    other.remove();
  });

  it('is replaced when idle, and reported (EBUSY, saying what to do) while it runs a guest', async () => {
    expect((await other.run(home, ['create', 'g', ...guestArgs])).code).toBe(0);
    const o1 = JSON.parse((await other.run(home, ['daemon', 'status', '--json'])).stdout);
    expect(o1).toMatchObject({ daemon: true, build: OTHER });

    // Idle: this build's command restarts it as this build and goes on.
    const list = await vmdesk(home, ['list', '--json']);
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout).map((v: { name: string }) => v.name)).toEqual(['g']);
    const mine = await vmdeskJson(home, ['daemon', 'status']);
    expect(mine.build).toBe(BUILD);
    expect(mine.pid).not.toBe(o1.pid);
    await until('the other build\'s daemon is gone', () => !alive(o1.pid));

    // The other build does the same to this one, and starts a guest on its daemon.
    expect((await other.run(home, ['start', 'g'])).code).toBe(0);
    const o2 = JSON.parse((await other.run(home, ['daemon', 'status', '--json'])).stdout);
    expect(o2).toMatchObject({ build: OTHER, running: 1 });
    const guest = JSON.parse((await other.run(home, ['info', 'g', '--json'])).stdout);

    // Busy: this build's command is refused, saying why and what to do; the daemon and its guest are untouched.
    const refused = await vmdesk(home, ['list']);
    expect(refused.code).toBe(5);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toContain(`vmdesk: a VMDesk daemon of another version (0.1.0, build ${OTHER}, pid ${o2.pid}) serves ${home} and is busy: 1 VM(s) running`);
    expect(refused.stderr).toContain('once its jobs are done, "vmdesk daemon stop" ends it (its running VMs keep running, and this version\'s daemon adopts them; other clients are disconnected), or use that version');
    expect(refused.stdout).toBe('');
    expect(alive(o2.pid)).toBe(true);
    expect(alive(guest.pid)).toBe(true);

    // The advice works: status and stop reach that daemon whatever its build; the guest keeps running and
    // this build's next daemon adopts it.
    expect(await vmdeskJson(home, ['daemon', 'status'])).toMatchObject({ pid: o2.pid, build: OTHER, running: 1 });
    expect((await vmdesk(home, ['daemon', 'stop'])).code).toBe(0);
    await until('the other build\'s daemon is gone', () => !alive(o2.pid));
    expect(await vmdeskJson(home, ['info', 'g'])).toMatchObject({ state: 'running', pid: guest.pid });
    expect(await vmdeskJson(home, ['daemon', 'status'])).toMatchObject({ build: BUILD, running: 1 });
    expect((await vmdeskJson(home, ['kill', 'g'])).state).toBe('stopped');
  });
});
