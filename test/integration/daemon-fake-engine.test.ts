// "A third engine is cheap": fakevm (test/engines/fake-engine.ts), registered through the registry and nothing
// else, driven through a real daemon's socket with the same FrameClient every front door uses. Its guest is a
// real detached child process, so start, console, pause, snapshots, graceful stop, exits nobody watched and
// adoption by a second daemon are all the daemon's real code paths.
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameClient, RpcCallError, type SerialStream } from '../../main/api/frame-client.js';
import type { VmEvent } from '../../main/api/events.js';
import type { VmInfo } from '../../main/api/schema.js';
import { socketTransport } from '../../main/client/daemon-client.js';
import { startDaemon, type RunningDaemon } from '../../main/daemon/daemon.js';
import { engineKinds, registerEngine, unregisterEngine } from '../../main/engines/registry.js';
import { connectUnixSocket } from '../../main/platform/process.js';
import { FAKEVM_KIND, FAKEVM_READY, GUEST_SCRIPT, fakeVmEngine } from '../engines/fake-engine.js';

const MiB = 1024 * 1024;

/** The guest's console through the daemon: everything received (replay first), and waits on it. */
class Console {
  text = '';
  closed = false;
  private readonly stream: SerialStream;
  constructor(client: FrameClient, vm: string) {
    this.stream = client.openSerial(vm, {
      onData: (b64) => (this.text += Buffer.from(b64, 'base64').toString('utf8')),
      onClose: () => (this.closed = true),
    });
  }
  async waitFor(re: RegExp, from = 0, timeoutMs = 10_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.text.slice(from));
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}; console:\n${this.text.slice(-1500)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  /** Types a command and returns the first output line matching `answer` after it. */
  async run(command: string, answer: RegExp): Promise<string> {
    const from = this.text.length;
    this.stream.write(Buffer.from(`${command}\n`).toString('base64'));
    return (await this.waitFor(answer, from))[0];
  }
  send(text: string): void {
    this.stream.write(Buffer.from(text).toString('base64'));
  }
  close(): void {
    this.stream.close();
  }
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !['Z', 'X'].includes(stat.slice(stat.lastIndexOf(')') + 2)[0]!);
  } catch {
    return false;
  }
}

async function until(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function refusal(p: Promise<unknown>): Promise<RpcCallError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof RpcCallError)) throw new Error(`expected a refusal, got ${e === undefined ? 'success' : String(e)}`);
  return e;
}

describe('a third engine (fakevm) through the daemon', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-fk-'));
  const home = path.join(tmp, 'h');
  let daemon: RunningDaemon;
  let client: FrameClient;
  const events: VmEvent[] = [];
  /** Every guest pid seen, killed in afterAll whatever happened. */
  const pids = new Set<number>();
  let id = '';
  let bundle = '';

  async function connect(d: RunningDaemon): Promise<FrameClient> {
    const c = new FrameClient(socketTransport(await connectUnixSocket(d.socketPath)));
    await c.waitHello();
    c.onEvent((ev) => events.push(ev));
    return c;
  }

  /** Lets the daemon go, as `vmdesk daemon stop` does (guests keep running), and starts a new one on the home. */
  async function restartDaemon(): Promise<void> {
    client.close();
    await daemon.close();
    daemon = await startDaemon({ home, idleExitMs: 0 });
    client = await connect(daemon);
  }

  async function get(): Promise<VmInfo> {
    const info = await client.call('vm.get', { id });
    if (info.pid) pids.add(info.pid);
    return info;
  }

  beforeAll(async () => {
    // The only line a new engine needs outside its own file.
    registerEngine(fakeVmEngine);
    daemon = await startDaemon({ home, idleExitMs: 0 });
    client = await connect(daemon);
  });

  afterAll(async () => {
    client?.close();
    await daemon?.close();
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    unregisterEngine(FAKEVM_KIND);
    if (!process.env.VMDESK_KEEP_TEST_DIRS) rmSync(tmp, { recursive: true, force: true });
  });

  it('creates a VM on it, with a raw disk of its own, and refuses what it cannot run', async () => {
    expect(engineKinds()).toContain(FAKEVM_KIND);
    const info = await client.call('vm.create', { name: 'fk', engine: FAKEVM_KIND, cpus: 1, memoryMiB: 64, diskBytes: MiB, network: [{ mode: 'none', forwards: [] }] });
    id = info.id;
    bundle = info.bundle;
    expect(info).toMatchObject({ name: 'fk', state: 'stopped', config: { engine: FAKEVM_KIND, disks: [{ id: 'disk0', format: 'raw', path: 'disks/disk0.img', owned: true }] } });
    expect(readFileSync(path.join(bundle, 'disks', 'disk0.img')).length).toBe(MiB);
    expect(events.some((e) => e.type === 'vm-created' && e.id === id)).toBe(true);
    // What the engine cannot run is refused before anything is written (by the core from the engine's
    // capabilities, or by the engine's own validate); an unknown kind is refused by the core.
    const nat = await refusal(client.call('vm.create', { name: 'fk-nat', engine: FAKEVM_KIND, cpus: 1, memoryMiB: 64, network: [{ mode: 'nat', forwards: [] }] }));
    expect(nat.code).toBe('EINVAL');
    expect(nat.message).toMatch(/fakevm/);
    expect(nat.message).toMatch(/\bnat\b|network/);
    const unknown = await refusal(client.call('vm.create', { name: 'fk-x', engine: 'nosuchengine', cpus: 1, memoryMiB: 64 }));
    expect(unknown).toMatchObject({ code: 'EINVAL' });
    expect(unknown.message).toMatch(/unknown engine "nosuchengine"/);
    expect((await client.call('vm.list', {})).map((v) => v.name)).toEqual(['fk']);
  });

  it('starts the guest as a real detached process, reporting each state', async () => {
    const from = events.length;
    const info = await client.call('vm.start', { id });
    expect(info.state).toBe('running');
    expect(info.pid).toBeGreaterThan(0);
    pids.add(info.pid!);
    expect(readFileSync(`/proc/${info.pid}/cmdline`, 'utf8')).toContain(GUEST_SCRIPT);
    // Its own session: no terminal signal aimed at the daemon reaches it.
    expect(readFileSync(`/proc/${info.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[3]).toBe(String(info.pid));
    const states = events.slice(from).flatMap((e) => (e.type === 'vm-state' && e.id === id ? [e.state] : []));
    expect(states).toEqual(['starting', 'running']);
    expect((await client.call('daemon.status', {})).running).toBe(1);
    // Its disk is held: what the engine tells the core (EBUSY) guards against a second user.
    await expect(fakeVmEngine.disks.checkFree(path.join(bundle, 'disks', 'disk0.img'), 'raw')).rejects.toMatchObject({ code: 'EBUSY' });
    const again = await refusal(client.call('vm.start', { id }));
    expect(again.code).toBe('ESTATE');
    expect(again.message).toBe('cannot start "fk" while it is running');
    // What needs it stopped says how to get there.
    const hw = await refusal(client.call('disk.create', { id, bytes: 16 * 1024 * 1024 }));
    expect(hw).toMatchObject({ code: 'ESTATE', message: 'cannot change the disks of "fk" while it is running; shut it down first' });
  });

  it('serves its console through the daemon: boot output replayed, commands answered', async () => {
    const con = new Console(client, id);
    await con.waitFor(new RegExp(FAKEVM_READY));
    expect(await con.run('echo hello-fake', /\nhello-fake\r\n/)).toBeTruthy();
    expect(await con.run('count', /count=\d+/)).toBe('count=1');
    // A second client sees the same console, history first.
    const other = await connect(daemon);
    const con2 = new Console(other, id);
    await con2.waitFor(/hello-fake/);
    con2.close();
    other.close();
    con.close();
  });

  it('pauses (the guest reads no input) and resumes (it answers what was typed meanwhile)', async () => {
    const con = new Console(client, id);
    await con.waitFor(new RegExp(FAKEVM_READY));
    expect((await client.call('vm.pause', { id })).state).toBe('paused');
    const from = con.text.length;
    con.send('echo typed-while-paused\n');
    await new Promise((r) => setTimeout(r, 300));
    expect(con.text.slice(from)).not.toMatch(/typed-while-paused/);
    const e = await refusal(client.call('vm.pause', { id }));
    expect(e).toMatchObject({ code: 'ESTATE', message: 'cannot pause "fk" while it is paused' });
    expect((await client.call('vm.resume', { id })).state).toBe('running');
    await con.waitFor(/\ntyped-while-paused\r\n/, from);
    con.close();
  });

  it('takes a live snapshot (memory and disk as files) and restores it in place, the current state saved first', async () => {
    const con = new Console(client, id);
    await con.waitFor(new RegExp(FAKEVM_READY));
    await con.run('set color blue', /\nok\r\n/);
    await con.run('disk write 0 AAA-at-snapshot', /\nok\r\n/);
    const pid = (await get()).pid;
    const snap = await client.call('snapshot.take', { id, name: 's1', description: 'blue' });
    expect(snap).toMatchObject({ name: 's1', kind: 'live', disks: ['disk0'] });
    expect(snap.vmStateBytes).toBeGreaterThan(0);
    expect(existsSync(path.join(bundle, 'fakevm-snapshots', snap.tag, 'vmstate.json'))).toBe(true);
    expect(existsSync(path.join(bundle, 'fakevm-snapshots', snap.tag, 'disk0.img'))).toBe(true);
    expect((await get()).state).toBe('running');

    await con.run('set color red', /\nok\r\n/);
    await con.run('disk write 0 BBB-after', /\nok\r\n/);
    const list = await client.call('snapshot.list', { id });
    expect(list.snapshots.map((s) => [s.name, s.kind, s.isCurrent, s.missingOn])).toEqual([['s1', 'live', true, []]]);
    expect(list.notes).toEqual([]);
    expect(list.unsupported).toEqual([]);

    const r = await client.call('snapshot.restore', { id, snapshot: 's1', saveCurrent: true });
    expect(r.restored.name).toBe('s1');
    expect(r.safety?.name).toBe('Before restoring s1');
    expect(r.info.state).toBe('running');
    // In place: the same guest process, its memory and disk back at the snapshot.
    expect((await get()).pid).toBe(pid);
    expect(await con.run('get color', /color=\w*/)).toBe('color=blue');
    expect(await con.run('disk read 0', /disk0=\S*/)).toBe('disk0=AAA-at-snapshot');
    // And the safety snapshot holds what was replaced.
    await client.call('snapshot.restore', { id, snapshot: 'Before restoring s1', saveCurrent: false });
    expect(await con.run('get color', /color=\w*/)).toBe('color=red');
    expect(await con.run('disk read 0', /disk0=\S*/)).toBe('disk0=BBB-after');
    con.close();
  });

  it('stops gracefully through the power button and records it', async () => {
    const pid = (await get()).pid!;
    const from = events.length;
    const info = await client.call('vm.stop', { id, timeoutMs: 10_000 });
    expect(info.state).toBe('stopped');
    expect(info.pid).toBeUndefined();
    expect(info.lastExit).toMatchObject({ reason: 'shutdown', detail: 'power button; the guest shut down' });
    expect(JSON.parse(readFileSync(path.join(bundle, 'logs', 'last-exit.json'), 'utf8')).reason).toBe('shutdown');
    await until('the guest process to end', () => !alive(pid));
    const changes = events.slice(from).flatMap((e) => (e.type === 'vm-state' && e.id === id ? [e] : []));
    // The core may announce "stopped" twice (the runtime's state, then its exit record): the last one says how.
    expect(changes.map((e) => e.state).filter((s, i, all) => s !== all[i - 1])).toEqual(['stopping', 'stopped']);
    expect(changes.at(-1)!.info.lastExit?.reason).toBe('shutdown');
    expect(Buffer.from((await client.call('vm.serialLog', { id })).data, 'base64').toString()).toMatch(/power button pressed/);
    await fakeVmEngine.disks.checkFree(path.join(bundle, 'disks', 'disk0.img'), 'raw');
  });

  it('takes and restores disk-only snapshots of the stopped VM', async () => {
    const disk = path.join(bundle, 'disks', 'disk0.img');
    const cold = await client.call('snapshot.take', { id, name: 'cold' });
    expect(cold).toMatchObject({ kind: 'disk-only', disks: ['disk0'], vmStateBytes: 0 });
    const fd = openSync(disk, 'r+');
    writeSync(fd, Buffer.from('scribbled'), 0, 9, 0);
    closeSync(fd);
    const r = await client.call('snapshot.restore', { id, snapshot: 'cold', saveCurrent: false });
    expect(r.info.state).toBe('stopped');
    expect(readFileSync(disk).subarray(0, 9).toString()).not.toBe('scribbled');
    expect(readFileSync(disk).subarray(0, 9).toString()).toBe('BBB-after');
    // A live snapshot restored into the stopped VM boots it paused, loads it and runs on.
    await client.call('snapshot.restore', { id, snapshot: 's1', saveCurrent: false });
    const info = await get();
    expect(info.state).toBe('running');
    const con = new Console(client, id);
    expect(await con.run('get color', /color=\w*/)).toBe('color=blue');
    con.close();
    const names = (await client.call('snapshot.list', { id })).snapshots.map((s) => s.name).sort();
    expect(names).toEqual(['Before restoring s1', 'cold', 's1']);
    await client.call('vm.stop', { id, timeoutMs: 10_000 });
  });

  it('keeps running when the daemon goes, and the next daemon adopts it: console history, control, graceful stop', async () => {
    const started = await client.call('vm.start', { id });
    pids.add(started.pid!);
    const con = new Console(client, id);
    await con.waitFor(new RegExp(FAKEVM_READY));
    await con.run('echo marker-before-restart', /\nmarker-before-restart\r\n/);
    await con.run('set who first-daemon', /\nok\r\n/);
    con.close();

    await restartDaemon();
    expect(alive(started.pid!)).toBe(true);
    const info = await get();
    expect(info.state).toBe('running');
    expect(info.pid).toBe(started.pid);
    expect((await client.call('daemon.status', {})).running).toBe(1);

    const con2 = new Console(client, id);
    await con2.waitFor(/marker-before-restart/);
    expect(await con2.run('get who', /who=\S*/)).toBe('who=first-daemon');
    expect((await client.call('vm.pause', { id })).state).toBe('paused');
    expect((await client.call('vm.resume', { id })).state).toBe('running');
    const warm = await client.call('snapshot.take', { id, name: 'adopted-live' });
    expect(warm.kind).toBe('live');

    // Not its child: the end is told by the guest's note and the control socket closing.
    const stopped = await client.call('vm.stop', { id, timeoutMs: 10_000 });
    expect(stopped.state).toBe('stopped');
    expect(stopped.lastExit?.reason).toBe('shutdown');
    await until('the adopted guest to end', () => !alive(started.pid!));
    con2.close();
  });

  it('reports, once, a guest that ended while no daemon watched it', async () => {
    const started = await client.call('vm.start', { id });
    pids.add(started.pid!);
    client.close();
    await daemon.close();
    process.kill(started.pid!, 'SIGKILL');
    await until('the guest to die', () => !alive(started.pid!));
    daemon = await startDaemon({ home, idleExitMs: 0 });
    client = await connect(daemon);
    const info = await get();
    expect(info.state).toBe('stopped');
    expect(info.lastExit).toMatchObject({ reason: 'unknown', detail: 'the guest ended while no VMDesk daemon was watching it' });
    await restartDaemon();
    // Reaped once: the next daemon reads the same record, it does not invent another exit.
    expect((await get()).lastExit?.at).toBe(info.lastExit!.at);
  });

  it('tells a guest powering itself off from one that crashed, and one forced off past the timeout', async () => {
    let info = await client.call('vm.start', { id });
    pids.add(info.pid!);
    const con = new Console(client, id);
    await con.waitFor(new RegExp(FAKEVM_READY));
    con.send('poweroff\n');
    await until('the guest to power off', async () => (await get()).state === 'stopped');
    expect((await get()).lastExit?.reason).toBe('guest-poweroff');
    con.close();

    info = await client.call('vm.start', { id });
    pids.add(info.pid!);
    const con2 = new Console(client, id);
    await con2.waitFor(new RegExp(FAKEVM_READY));
    con2.send('crash\n');
    await until('the crash to be noticed', async () => (await get()).state === 'crashed');
    expect((await get()).lastExit).toMatchObject({ reason: 'crashed', signal: 'SIGSEGV' });
    con2.close();

    // A guest that takes a minute to boot: nobody hears the power button meanwhile.
    await client.call('vm.update', { id, patch: { directKernel: { kernel: GUEST_SCRIPT, cmdline: 'fakevm.boot_ms=60000' } } });
    info = await client.call('vm.start', { id });
    pids.add(info.pid!);
    const forced = await client.call('vm.stop', { id, timeoutMs: 200 });
    expect(forced.lastExit).toMatchObject({ reason: 'killed', detail: 'the guest did not power off within 200 ms; forced off' });
    await client.call('vm.update', { id, patch: { directKernel: null } });
  });

  it('deletes the VM, its disks and its snapshots', async () => {
    const from = events.length;
    const r = await client.call('vm.delete', { id });
    expect(r.keptDisks).toEqual([]);
    expect(existsSync(bundle)).toBe(false);
    expect(events.slice(from).some((e) => e.type === 'vm-deleted' && e.id === id)).toBe(true);
    expect(await client.call('vm.list', {})).toEqual([]);
    const gone = await refusal(client.call('vm.get', { id }));
    expect(gone.code).toBe('ENOTFOUND');
  });
});
