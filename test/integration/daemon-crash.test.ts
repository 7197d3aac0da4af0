// The daemon SIGKILLed while three guests run and a live snapshot of one is being saved. The guests do not
// notice (QEMU is no child that dies with its parent); the next `vmdesk` call starts a daemon that adopts all
// three, the snapshot is either recorded (QEMU finished it) or gone without a trace (qemu-img agrees), the
// consoles still replay what was printed before the crash, and a later stop is a graceful ACPI shutdown.
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SnapshotListingWire } from '../../main/api/rpc.js';
import type { VmInfo } from '../../main/api/schema.js';
import { GUEST_READY_MARKER, guestPaths } from '../guest/guest.js';
import { runtimeRoot } from '../../main/platform/paths.js';
import { FrozenCli, alive, cmdline, killMatching, openedBy, processesMatching, qemuProcesses, sleep, waitUntil } from './daemon-helpers.js';

const VMS = [
  { name: 'crash-a', memory: 192 },
  { name: 'crash-b', memory: 192 },
  // The one snapshotted: RAM filled with 200 MB of non-zero pages (QEMU skips zero pages), so the save lasts.
  { name: 'crash-c', memory: 512 },
] as const;
const SNAPPED = 'crash-c';

/** `vmdesk console` with a pipe for stdin: what the guest prints (replay first), and commands typed into it. */
class PipedConsole {
  out = '';
  readonly child: ChildProcessWithoutNullStreams;
  constructor(cli: FrozenCli, home: string, vm: string) {
    this.child = spawn(process.execPath, [cli.bin, '--home', home, 'console', vm]);
    this.child.stdout.on('data', (d: Buffer) => (this.out += d.toString('utf8')));
    this.child.stderr.on('data', (d: Buffer) => (this.out += d.toString('utf8')));
    this.child.stdin.on('error', () => {});
  }
  async waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<void> {
    await waitUntil(`${re} on the console (tail: ${JSON.stringify(this.out.slice(-600))})`, () => re.test(this.out.slice(from)), timeoutMs, 50);
  }
  /**
   * Runs a shell command and waits for `expect` in its output. Input typed while the guest's shell is still
   * starting is lost, so the command is typed again every few seconds until the answer comes.
   */
  async run(command: string, expect: RegExp, timeoutMs = 60_000, retryMs = 4000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const from = this.out.length;
      this.child.stdin.write(`${command}\n`);
      try {
        await this.waitFor(expect, Math.min(retryMs, deadline - Date.now()), from);
        return;
      } catch (e) {
        if (Date.now() >= deadline) throw e;
      }
    }
  }
  close(): Promise<void> {
    this.child.stdin.end();
    return new Promise((r) => (this.child.exitCode !== null ? r() : this.child.once('close', () => r())));
  }
}

/** The snapshot tags qemu-img finds on a disk, read without disturbing a running guest (-U). */
function qemuImgSnapshots(disk: string): { name: string; 'vm-state-size': number }[] {
  const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', '-f', 'qcow2', disk], { encoding: 'utf8' })) as { snapshots?: { name: string; 'vm-state-size': number }[] };
  return info.snapshots ?? [];
}

describe('the daemon killed mid-snapshot with three guests running', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-cr-'));
  const home = path.join(tmp, 'h');
  const cli = new FrozenCli();
  const env = { VMDESK_DAEMON_IDLE_MS: '3000' };
  const info = new Map<string, VmInfo>();
  const markers = new Map<string, string>();
  let firstDaemon = 0;
  /** Set once the test has stopped the guests and the daemon itself. */
  let cleanEnd = false;

  const run = (args: string[], timeoutMs = 120_000) => cli.run(home, args, { env, timeoutMs });
  const json = <T = any>(args: string[]) => cli.json<T>(home, args, { env, timeoutMs: 120_000 });

  beforeAll(async () => {
    const { kernel, initrd } = guestPaths();
    for (const vm of VMS) {
      const created = await json<VmInfo>(['create', vm.name, '--cpus', '1', '--memory', String(vm.memory), '--disk', '32M', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0 panic=-1', '--net', 'none', '--accel', 'tcg']);
      info.set(vm.name, created);
    }
  });

  afterAll(async () => {
    if (!cleanEnd) {
      // Whatever a failure left: this library's QEMUs and daemon only (its home is in their command lines).
      for (const vm of VMS) await run(['kill', vm.name], 30_000).catch(() => undefined);
      await cli.run(home, ['daemon', 'stop'], { timeoutMs: 30_000 }).catch(() => undefined);
      killMatching(home);
    }
    if (!process.env.VMDESK_KEEP_TEST_DIRS) rmSync(tmp, { recursive: true, force: true });
    cli.remove();
  });

  it('adopts all three, settles the snapshot one way or the other, keeps the consoles, and stops them gracefully', async () => {
    // ---- three guests, each with a marker on its console -------------------------------------------------
    for (const vm of VMS) {
      const started = await json<VmInfo>(['start', vm.name]);
      expect(started.state).toBe('running');
      info.set(vm.name, started);
    }
    await Promise.all(
      VMS.map(async (vm) => {
        const con = new PipedConsole(cli, home, vm.name);
        try {
          await con.waitFor(new RegExp(GUEST_READY_MARKER), 120_000);
          const marker = `MARK-${vm.name}-${Math.random().toString(36).slice(2, 8)}`;
          markers.set(vm.name, marker);
          // Built by the shell, so only the command's output (not its echo) matches.
          await con.run(`echo MARK''-${marker.slice(5)}`, new RegExp(`\\n${marker}\\r?\\n`));
          if (vm.name === SNAPPED) await con.run(`i=0; while [ $i -lt 100 ]; do cat /bin/busybox; i=$((i+1)); done > /tmp/fill; echo FILL''ED-$(wc -c < /tmp/fill)`, /FILLED-\d+/, 180_000, 180_000);
        } finally {
          await con.close();
        }
      }),
    );
    const status = await json<{ pid: number; running: number; locks: string }>(['daemon', 'status']);
    firstDaemon = status.pid;
    expect(status.running).toBe(3);
    expect(status.locks).toBe(cli.hasAddon ? 'flock' : 'portable');
    const pids = new Map(VMS.map((vm) => [vm.name, info.get(vm.name)!.pid!]));
    for (const [, pid] of pids) expect(cmdline(pid)).toContain('qemu-system');

    // ---- a snapshot in progress, and the daemon killed ---------------------------------------------------
    const bundle = info.get(SNAPPED)!.bundle;
    const disk = path.join(bundle, 'disks', 'disk0.qcow2');
    const treeFile = path.join(bundle, 'snapshots', 'tree.json');
    let pending: { id: string; tag: string; name: string } | undefined;
    // The window is the save itself: from the intent written to tree.json ("pending") until it is recorded.
    // The kill comes a moment after the intent appears, so that QEMU is most likely saving (it goes on with
    // the job without its daemon); should the take finish first, the next attempt kills sooner. The
    // assertions below hold wherever inside the window the kill lands.
    const delays = [300, 100, 0];
    for (let attempt = 1; !pending && attempt <= delays.length; attempt++) {
      const name = `mid-save-${attempt}`;
      const take = cli.run(home, ['snapshot', 'take', SNAPPED, name], { env, timeoutMs: 120_000 });
      let finished = false;
      void take.then(() => (finished = true));
      while (!finished && !pending) {
        const text = existsSync(treeFile) ? readFileSync(treeFile, 'utf8') : '';
        try {
          pending = (JSON.parse(text || '{"pending":[]}') as { pending: { id: string; tag: string; name: string }[] }).pending.find((p) => p.name === name);
        } catch {
          /* being replaced: look again */
        }
        if (!pending) await sleep(2);
      }
      if (pending) await sleep(delays[attempt - 1]!);
      if (pending && finished) {
        pending = undefined;
        console.log(`daemon-crash: attempt ${attempt}: the take finished within ${delays[attempt - 1]} ms of its intent; trying again`);
        continue;
      }
      if (pending) {
        process.kill(firstDaemon, 'SIGKILL');
        console.log(`daemon-crash: attempt ${attempt}: daemon killed ${delays[attempt - 1]} ms after "${name}" was recorded as pending`);
        const r = await take;
        // The command line lost its daemon mid-call and says so (unless the answer was on its way already).
        if (r.code === 0) console.log('daemon-crash: the take was answered just before the kill');
        else expect(r.stderr).toMatch(/lost the connection to VMDesk \(the daemon stopped/);
      } else {
        const r = await take;
        expect(r.code, r.stderr).toBe(0);
        console.log(`daemon-crash: attempt ${attempt}: the take finished before the kill; trying again`);
      }
    }
    expect(pending, 'no take was caught in progress in three attempts').toBeDefined();
    await waitUntil('the killed daemon to be gone', () => !alive(firstDaemon), 10_000);
    // Nobody watches the guests now, and they run on.
    for (const [name, pid] of pids) expect(alive(pid), `${name}'s QEMU died with the daemon`).toBe(true);
    expect(processesMatching(`--home ${home}`).filter((p) => p.cmdline.includes('daemon/main.js'))).toEqual([]);
    // The daemon's single-instance lock went with it (the kernel releases a flock when its holder dies): no
    // process it started may hold the lock's open file.
    expect(openedBy(path.join(runtimeRoot(home), '.lock'))).toEqual([]);

    // ---- the next call starts a daemon, which adopts all three -------------------------------------------
    const t0 = Date.now();
    const listed = await json<VmInfo[]>(['list']);
    console.log(`daemon-crash: the next daemon answered its first call ${Date.now() - t0} ms after it was asked`);
    expect(listed.map((v) => [v.name, v.state, v.pid])).toEqual(VMS.map((vm) => [vm.name, 'running', pids.get(vm.name)]));
    const second = await json<{ pid: number; running: number; build: string }>(['daemon', 'status']);
    expect(second.pid).not.toBe(firstDaemon);
    expect(second.running).toBe(3);
    expect(second.build).toBe(cli.build());
    expect(qemuProcesses(home).map((p) => p.pid).sort()).toEqual([...pids.values()].sort());

    // ---- the snapshot: recorded or rolled back, and qemu-img agrees -----------------------------------------
    // A save QEMU was still running when the new daemon looked is kept pending until it ends: ask until settled.
    let listing!: SnapshotListingWire;
    await waitUntil(
      'the interrupted take to be settled',
      async () => {
        listing = await json<SnapshotListingWire>(['snapshot', 'list', SNAPPED]);
        return (JSON.parse(readFileSync(treeFile, 'utf8')) as { pending: unknown[] }).pending.length === 0;
      },
      60_000,
      500,
    );
    const tags = qemuImgSnapshots(disk);
    const recorded = listing.snapshots.find((s) => s.id === pending!.id);
    if (recorded) {
      console.log(`daemon-crash: QEMU finished "${pending!.name}" without its daemon; the next daemon recorded it`);
      expect(recorded).toMatchObject({ name: pending!.name, tag: pending!.tag, kind: 'live', missingOn: [] });
      const onDisk = tags.find((t) => t.name === pending!.tag);
      expect(onDisk, `qemu-img lists ${tags.map((t) => t.name).join(', ') || 'nothing'}`).toBeDefined();
      expect(onDisk!['vm-state-size']).toBeGreaterThan(100 * 1024 * 1024);
      expect(recorded.vmStateBytes).toBe(onDisk!['vm-state-size']);
      expect(listing.current).toBe(recorded.id);
    } else {
      console.log(`daemon-crash: "${pending!.name}" was rolled back`);
      expect(tags.map((t) => t.name)).not.toContain(pending!.tag);
    }
    // Whatever the outcome, the metadata and the disk hold the same snapshots.
    expect(listing.snapshots.map((s) => s.tag).sort()).toEqual(tags.map((t) => t.name).sort());
    expect(listing.snapshots.every((s) => s.missingOn.length === 0)).toBe(true);
    // And QEMU holds no job the dead daemon left: the next snapshot goes through.
    const after = await json<{ name: string; kind: string; tag: string }>(['snapshot', 'take', SNAPPED, 'after-crash']);
    expect(after).toMatchObject({ name: 'after-crash', kind: 'live' });
    expect(qemuImgSnapshots(disk).map((t) => t.name)).toContain(after.tag);

    // ---- the consoles: history from before the crash, and live ----------------------------------------------
    for (const vm of VMS) {
      const replay = await run(['console', vm.name, '--linger-ms', '300']);
      expect(replay.code, replay.stderr).toBe(0);
      expect(replay.stdout, `${vm.name}'s console lost what was printed before the crash`).toContain(`\n${markers.get(vm.name)}`);
      const con = new PipedConsole(cli, home, vm.name);
      try {
        await con.run(`echo AFTER''-CRASH-$((6*7))`, /\nAFTER-CRASH-42\r?\n/, 30_000);
      } finally {
        await con.close();
      }
    }

    // ---- a graceful stop of adopted guests: ACPI, told from QMP events --------------------------------------
    for (const vm of VMS) {
      const stopped = await json<VmInfo>(['stop', vm.name, '--timeout', '60']);
      expect(stopped.state).toBe('stopped');
      expect(stopped.lastExit?.reason, JSON.stringify(stopped.lastExit)).toBe('shutdown');
      expect(stopped.lastExit?.detail).toMatch(/ACPI power-down/);
      await waitUntil(`${vm.name}'s QEMU to exit`, () => !alive(pids.get(vm.name)!), 20_000);
      const log = await run(['console', vm.name, '--linger-ms', '0']);
      // A stopped VM has no console; its history is in the bundle's serial log.
      expect(log.code).not.toBe(0);
      expect(readFileSync(path.join(info.get(vm.name)!.bundle, 'logs', 'serial.log'), 'utf8')).toMatch(/power button pressed/);
    }
    const stopped = await run(['daemon', 'stop'], 30_000);
    expect(stopped.code, stopped.stderr).toBe(0);
    await waitUntil('the second daemon to exit', () => !alive(second.pid), 10_000);
    expect(qemuProcesses(home)).toEqual([]);
    expect(processesMatching(home)).toEqual([]);
    cleanEnd = true;
  }, 420_000);
});
