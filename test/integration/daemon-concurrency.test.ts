// Eight clients drive one real VM at once for a minute: four `vmdesk` command lines (a process per operation)
// and four WebSocket clients through `vmdesk serve`'s relay. Start, stop, pause, resume, snapshots, settings and
// renames come in a random order (seeded; the seed is printed); every few operations everything settles and
// every client must see the same VM, the daemon must agree with /proc, vm.json must parse, and every refusal
// must be a clear EBUSY, ESTATE or EINVAL. At the end no QEMU and no daemon of this library is left.
//
// Replay a run: VMDESK_TEST_SEED=<seed> npx vitest run test/integration/daemon-concurrency.test.ts
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../main/api/errors.js';
import { RpcCallError, type FrameClient } from '../../main/api/frame-client.js';
import type { VmEvent } from '../../main/api/events.js';
import { VmConfig, type VmInfo } from '../../main/api/schema.js';
import { runtimeRoot } from '../../main/platform/paths.js';
import { startServer, type RunningServer } from '../../main/server/server.js';
import { guestPaths } from '../guest/guest.js';
import { FrozenCli, alive, cmdline, killMatching, processesMatching, prng, qemuProcesses, sleep, waitUntil, wsClient } from './daemon-helpers.js';

const DURATION_MS = Number(process.env.VMDESK_CONCURRENCY_MS ?? 60_000);
const SEED = Number(process.env.VMDESK_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
const STATES = ['stopped', 'starting', 'running', 'paused', 'stopping', 'crashed'];
const CODE_OF_EXIT = new Map(Object.entries(EXIT_CODES).map(([code, exit]) => [exit, code]));
/** Refusals a client may get while others hold the VM or have changed its state. */
const EXPECTED_REFUSALS = ['EBUSY', 'ESTATE', 'EINVAL'];
/** Snapshots kept at most (each live one holds the guest's RAM in the qcow2); beyond, the snapshot op deletes. */
const MAX_SNAPSHOTS = 4;

type Op = 'start' | 'stop' | 'pause' | 'resume' | 'snapshot' | 'restore' | 'set-os' | 'set-memory' | 'rename';
const WEIGHTS: [Op, number][] = [
  ['start', 4],
  ['stop', 2],
  ['pause', 2],
  ['resume', 2],
  ['snapshot', 2],
  ['restore', 1],
  ['set-os', 1],
  ['set-memory', 1],
  ['rename', 2],
];

interface Outcome {
  client: string;
  op: Op;
  args: string;
  ok: boolean;
  code?: string;
  message?: string;
  info?: VmInfo;
  ms: number;
}

/** What every client must agree on. */
function view(i: VmInfo) {
  return {
    name: i.name,
    state: i.state,
    pid: i.pid ?? null,
    job: i.job?.method ?? null,
    lastExit: i.lastExit ? `${i.lastExit.reason}@${i.lastExit.at}` : null,
    osType: i.config?.osType,
    memoryMiB: i.config?.memoryMiB,
    modifiedAt: i.config?.modifiedAt,
  };
}

interface Actor {
  name: string;
  kind: 'cli' | 'ws';
  /** Runs one operation; refusals are outcomes, not exceptions. */
  perform(op: Op, args: string[]): Promise<Outcome>;
  read(): Promise<VmInfo>;
}

describe('one VM, eight clients, random operations for a minute', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-cc-'));
  const home = path.join(tmp, 'h');
  const cli = new FrozenCli();
  // Daemons this suite starts leave on their own if anything below fails before `daemon stop`.
  const env = { VMDESK_DAEMON_IDLE_MS: '3000' };
  let server: RunningServer | undefined;
  const ws: { name: string; client: FrameClient; last?: VmInfo; events: number }[] = [];
  let id = '';
  let bundle = '';
  let daemonPid = 0;
  /** Set once the test has stopped the VM and the daemon itself. */
  let cleanEnd = false;
  const idleBefore = process.env.VMDESK_DAEMON_IDLE_MS;

  beforeAll(async () => {
    // A daemon the relay might start itself (should the CLI's have gone) must not linger either.
    process.env.VMDESK_DAEMON_IDLE_MS = env.VMDESK_DAEMON_IDLE_MS;
    const { kernel, initrd } = guestPaths();
    const created = await cli.json<VmInfo>(home, ['create', 'conc-0', '--cpus', '1', '--memory', '128', '--disk', '16M', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0 panic=-1', '--net', 'none', '--accel', 'tcg'], { env });
    id = created.id;
    bundle = created.bundle;
    // The GUI server relays WebSockets to the daemon the CLI just started (same library, same daemon).
    server = await startServer({ home });
    for (let i = 0; i < 4; i++) {
      const client = await wsClient(server.port, server.token);
      const entry = { name: `ws${i}`, client, last: undefined as VmInfo | undefined, events: 0 };
      client.onEvent((ev: VmEvent) => {
        if ((ev.type === 'vm-state' || ev.type === 'vm-updated') && ev.id === id) {
          entry.last = ev.info;
          entry.events++;
        }
      });
      ws.push(entry);
    }
    const status = await ws[0]!.client.call('daemon.status', {});
    daemonPid = status.pid;
    expect(status.build).toBe(cli.build());
    expect(status.clients).toBeGreaterThanOrEqual(4);
  }, 120_000);

  afterAll(async () => {
    for (const w of ws) w.client.close();
    await server?.close().catch(() => {});
    if (!cleanEnd) {
      // Whatever a failure left: this library's QEMU and daemon only (its home is in their command lines).
      if (id) await cli.run(home, ['kill', id], { env, timeoutMs: 30_000 }).catch(() => undefined);
      await cli.run(home, ['daemon', 'stop'], { timeoutMs: 30_000 }).catch(() => undefined);
      killMatching(home);
    }
    if (idleBefore === undefined) delete process.env.VMDESK_DAEMON_IDLE_MS;
    else process.env.VMDESK_DAEMON_IDLE_MS = idleBefore;
    if (!process.env.VMDESK_KEEP_TEST_DIRS) rmSync(tmp, { recursive: true, force: true });
    cli.remove();
  });

  it('agrees everywhere after every round, refuses clearly, and leaves nothing behind', async () => {
    console.log(`daemon-concurrency: seed ${SEED} (replay with VMDESK_TEST_SEED=${SEED}), ${DURATION_MS} ms of operations`);
    const names = new Set<string>(['conc-0']);
    const snapshots: string[] = [];
    const claimed = new Set<string>();
    const outcomes: Outcome[] = [];
    let counter = 0;
    let expectedName = 'conc-0';
    let expectedNameAt = '';

    // ---- the clients ---------------------------------------------------------------------------------------
    const cliActor = (n: number): Actor => ({
      name: `cli${n}`,
      kind: 'cli',
      async perform(op, args) {
        const argv: Record<Op, string[]> = {
          start: ['start', id],
          stop: ['stop', id, '--timeout', '3'],
          pause: ['pause', id],
          resume: ['resume', id],
          snapshot: args[0] === 'delete' ? ['snapshot', 'delete', id, args[1]!] : ['snapshot', 'take', id, args[1]!],
          restore: ['snapshot', 'restore', id, args[0]!, '--no-save-current'],
          'set-os': ['set', id, '--os', args[0]!],
          'set-memory': ['set', id, '--memory', args[0]!],
          rename: ['rename', id, args[0]!],
        };
        const r = await cli.run(home, [...argv[op], '--json'], { env, timeoutMs: 90_000 });
        const base = { client: this.name, op, args: args.join(' '), ms: r.ms };
        if (r.code === 0) {
          const out = JSON.parse(r.stdout) as VmInfo | { info?: VmInfo };
          return { ...base, ok: true, info: 'state' in out ? (out as VmInfo) : (out as { info?: VmInfo }).info };
        }
        const message = r.stderr.trim().split('\n').at(-1)?.replace(/^vmdesk: /, '') ?? '';
        return { ...base, ok: false, code: CODE_OF_EXIT.get(r.code) ?? `exit ${r.code}`, message };
      },
      async read() {
        return cli.json<VmInfo>(home, ['info', id], { env });
      },
    });
    const wsActor = (w: (typeof ws)[number]): Actor => ({
      name: w.name,
      kind: 'ws',
      async perform(op, args) {
        const t0 = Date.now();
        const base = { client: this.name, op, args: args.join(' ') };
        try {
          const c = w.client;
          let info: VmInfo | undefined;
          switch (op) {
            case 'start':
              info = await c.call('vm.start', { id });
              break;
            case 'stop':
              info = await c.call('vm.stop', { id, timeoutMs: 3000 });
              break;
            case 'pause':
              info = await c.call('vm.pause', { id });
              break;
            case 'resume':
              info = await c.call('vm.resume', { id });
              break;
            case 'snapshot':
              if (args[0] === 'delete') await c.call('snapshot.delete', { id, snapshot: args[1]! });
              else await c.call('snapshot.take', { id, name: args[1]! });
              break;
            case 'restore':
              info = (await c.call('snapshot.restore', { id, snapshot: args[0]!, saveCurrent: false })).info;
              break;
            case 'set-os':
              info = await c.call('vm.update', { id, patch: { osType: args[0] as 'linux' | 'other' } });
              break;
            case 'set-memory':
              info = await c.call('vm.update', { id, patch: { memoryMiB: Number(args[0]) } });
              break;
            case 'rename':
              info = await c.call('vm.rename', { id, name: args[0]! });
              break;
          }
          return { ...base, ok: true, info, ms: Date.now() - t0 };
        } catch (e) {
          if (!(e instanceof RpcCallError)) throw e;
          return { ...base, ok: false, code: e.code, message: e.message, ms: Date.now() - t0 };
        }
      },
      read: () => w.client.call('vm.get', { id }),
    });
    const actors: Actor[] = [...[0, 1, 2, 3].map(cliActor), ...ws.map(wsActor)];
    const rngs = actors.map((_, i) => prng(SEED + i * 7919));

    // ---- watching the files and /proc while it all runs -------------------------------------------------
    const fileProblems: string[] = [];
    const procProblems: string[] = [];
    let watching = true;
    const treeFile = path.join(bundle, 'snapshots', 'tree.json');
    const watcher = (async () => {
      let tick = 0;
      while (watching) {
        try {
          VmConfig.parse(JSON.parse(readFileSync(path.join(bundle, 'vm.json'), 'utf8')));
        } catch (e) {
          fileProblems.push(`vm.json: ${(e as Error).message}`);
        }
        if (existsSync(treeFile)) {
          try {
            JSON.parse(readFileSync(treeFile, 'utf8'));
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'ENOENT') fileProblems.push(`tree.json: ${(e as Error).message}`);
          }
        }
        if (tick++ % 10 === 0) {
          const q = qemuProcesses(bundle);
          if (q.length > 1) procProblems.push(`${q.length} QEMUs run for the VM at once: ${q.map((p) => p.pid).join(', ')}`);
        }
        await sleep(25);
      }
    })();

    // ---- choosing operations ------------------------------------------------------------------------------
    function choose(rand: () => number, who: string): { op: Op; args: string[]; release?: () => void } {
      const total = WEIGHTS.reduce((a, [, w]) => a + w, 0);
      let x = rand() * total;
      let op: Op = 'start';
      for (const [o, w] of WEIGHTS) {
        if ((x -= w) < 0) {
          op = o;
          break;
        }
      }
      const free = snapshots.filter((s) => !claimed.has(s));
      const claim = (s: string) => {
        claimed.add(s);
        return () => claimed.delete(s);
      };
      switch (op) {
        case 'snapshot': {
          if (snapshots.length >= MAX_SNAPSHOTS && free.length) {
            const victim = free[Math.floor(rand() * free.length)]!;
            return { op, args: ['delete', victim], release: claim(victim) };
          }
          return { op, args: ['take', `s-${who}-${++counter}`] };
        }
        case 'restore': {
          if (!free.length) return { op: 'pause', args: [] };
          const s = free[Math.floor(rand() * free.length)]!;
          return { op, args: [s], release: claim(s) };
        }
        case 'set-os':
          return { op, args: [rand() < 0.5 ? 'linux' : 'other'] };
        case 'set-memory':
          return { op, args: [rand() < 0.5 ? '128' : '160'] };
        case 'rename': {
          const name = `conc-${who}-${++counter}`;
          names.add(name);
          return { op, args: [name] };
        }
        default:
          return { op, args: [] };
      }
    }

    function record(o: Outcome): void {
      outcomes.push(o);
      if (process.env.VMDESK_TEST_VERBOSE) console.log(`${((Date.now() - t0) / 1000).toFixed(1)}s ${o.client} ${o.op} ${o.args} -> ${o.ok ? 'ok' : `${o.code} ${o.message}`} (${o.ms} ms)`);
      if (!o.ok) return;
      if (o.op === 'snapshot') {
        if (o.args.startsWith('take ')) snapshots.push(o.args.slice(5));
        else snapshots.splice(snapshots.indexOf(o.args.slice(7)), 1);
      }
      // Renames run one at a time (the VM's job): the latest by the daemon's clock names the VM.
      if (o.op === 'rename' && o.info && o.info.config!.modifiedAt > expectedNameAt) {
        expectedName = o.info.name;
        expectedNameAt = o.info.config!.modifiedAt;
      }
    }

    // ---- settling and checking ------------------------------------------------------------------------------
    const checks: { round: number; state: string }[] = [];
    let t0 = Date.now();
    async function settleAndCheck(round: number): Promise<void> {
      const truth = await ws[0]!.client.call('vm.get', { id });
      const where = `round ${round} (seed ${SEED})`;
      // Settled: no job holds the VM, and it is neither coming nor going.
      expect(truth.job, where).toBeUndefined();
      expect(['running', 'paused', 'stopped'], `${where}: state ${truth.state}, last exit ${JSON.stringify(truth.lastExit)}`).toContain(truth.state);
      expect(truth.name, where).toBe(expectedName);
      // Every client sees the same VM: the WebSocket ones by a call and by the events they were sent, the
      // command lines by `vmdesk info`.
      const reads = await Promise.all(actors.map(async (a) => ({ a: a.name, v: view(await a.read()) })));
      for (const r of reads) expect(r.v, `${where}: ${r.a} disagrees with the daemon`).toEqual(view(truth));
      for (const w of ws) {
        if (w.last) expect(view(w.last), `${where}: the last event ${w.name} received disagrees`).toEqual(view(truth));
      }
      // The daemon agrees with reality.
      const q = qemuProcesses(bundle);
      if (truth.state === 'stopped') {
        expect(truth.pid, where).toBeUndefined();
        expect(q, `${where}: QEMU runs for a stopped VM`).toEqual([]);
      } else {
        expect(truth.pid, where).toBeGreaterThan(0);
        expect(q.map((p) => p.pid), `${where}: the QEMU the daemon names is not the one that runs`).toEqual([truth.pid]);
        expect(cmdline(truth.pid!), where).toContain(path.join(bundle, 'disks', 'disk0.qcow2'));
        const rec = JSON.parse(readFileSync(path.join(runtimeRoot(home), id.slice(0, 13), 'qemu.json'), 'utf8')) as { pid: number };
        expect(rec.pid, where).toBe(truth.pid);
      }
      // The files say what the daemon says.
      const cfg = VmConfig.parse(JSON.parse(readFileSync(path.join(bundle, 'vm.json'), 'utf8')));
      expect({ name: cfg.name, osType: cfg.osType, memoryMiB: cfg.memoryMiB }, where).toEqual({ name: truth.name, osType: truth.config!.osType, memoryMiB: truth.config!.memoryMiB });
      if (existsSync(treeFile)) {
        const tree = JSON.parse(readFileSync(treeFile, 'utf8')) as { nodes: { name: string }[]; pending: unknown[] };
        expect(tree.pending, `${where}: a take left pending`).toEqual([]);
        expect(tree.nodes.map((n) => n.name).sort(), where).toEqual([...snapshots].sort());
      }
      checks.push({ round, state: truth.state });
    }

    // ---- the run --------------------------------------------------------------------------------------------
    t0 = Date.now();
    let round = 0;
    while (Date.now() - t0 < DURATION_MS) {
      round++;
      await Promise.all(
        actors.map(async (a, i) => {
          const rand = rngs[i]!;
          // An operation or two each (a command line takes longer to start), at random moments so they collide
          // in every order.
          const n = a.kind === 'ws' ? 1 + Math.floor(rand() * 2) : 1;
          for (let k = 0; k < n; k++) {
            await sleep(Math.floor(rand() * 300));
            const { op, args, release } = choose(rand, a.name);
            try {
              record(await a.perform(op, args));
            } finally {
              release?.();
            }
          }
        }),
      );
      const tc = Date.now();
      await settleAndCheck(round);
      if (process.env.VMDESK_TEST_VERBOSE) console.log(`round ${round} checked in ${Date.now() - tc} ms`);
    }
    const elapsed = Date.now() - t0;
    watching = false;
    await watcher;

    // ---- what happened -------------------------------------------------------------------------------------
    const byOp = new Map<string, { ok: number; refused: Map<string, number> }>();
    for (const o of outcomes) {
      const s = byOp.get(o.op) ?? { ok: 0, refused: new Map() };
      if (o.ok) s.ok++;
      else s.refused.set(o.code!, (s.refused.get(o.code!) ?? 0) + 1);
      byOp.set(o.op, s);
    }
    console.log(
      `daemon-concurrency: seed ${SEED}: ${outcomes.length} operations in ${round} rounds over ${elapsed} ms; ` +
        [...byOp].map(([op, s]) => `${op} ${s.ok} ok${[...s.refused].map(([c, n]) => ` ${n} ${c}`).join('')}`).join('; ') +
        `; settled states: ${checks.map((c) => c.state[0]).join('')}`,
    );
    expect(fileProblems).toEqual([]);
    expect(procProblems).toEqual([]);

    // Every refusal is one a user can act on: what holds the VM, or the VM's name and its state.
    const unclear: string[] = [];
    for (const o of outcomes.filter((x) => !x.ok)) {
      const line = `${o.client} ${o.op} ${o.args}: ${o.code} ${o.message}`;
      if (!EXPECTED_REFUSALS.includes(o.code!)) {
        unclear.push(`unexpected ${line}`);
        continue;
      }
      const named = [...names].some((n) => o.message!.includes(`"${n}"`));
      if (o.code === 'EBUSY' && !(named && /is busy: [\w.]+ is running \(for \d+ s\); try again when it has finished$/.test(o.message!))) unclear.push(`unclear ${line}`);
      if (o.code === 'ESTATE' && !(named && STATES.some((s) => new RegExp(`\\b${s}\\b`).test(o.message!)))) unclear.push(`unclear ${line}`);
      if (o.code === 'EINVAL' && !o.message) unclear.push(`unclear ${line}`);
    }
    expect(unclear).toEqual([]);
    // The run did exercise the VM: it ran, was refused for being busy and for its state, and was renamed.
    expect(outcomes.some((o) => o.op === 'start' && o.ok)).toBe(true);
    expect(outcomes.some((o) => o.code === 'EBUSY')).toBe(true);
    expect(outcomes.some((o) => o.code === 'ESTATE')).toBe(true);
    expect(outcomes.some((o) => o.op === 'rename' && o.ok)).toBe(true);
    expect(ws.every((w) => w.events > 0)).toBe(true);

    // ---- the end: the VM stops, the daemon stops, nothing of this library runs ------------------------------
    const final = await cli.run(home, ['stop', id, '--timeout', '20', '--json'], { env, timeoutMs: 60_000 });
    if (final.code !== 0) expect(final.stderr).toMatch(/cannot shut down "[^"]+" while it is stopped/);
    expect((await cli.json<VmInfo>(home, ['info', id], { env })).state).toBe('stopped');
    for (const w of ws) w.client.close();
    await server!.close();
    server = undefined;
    const stopped = await cli.run(home, ['daemon', 'stop'], { timeoutMs: 30_000 });
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stdout).toMatch(new RegExp(`stopped the VMDesk daemon \\(pid ${daemonPid}\\)`));
    await waitUntil('the daemon to exit', () => !alive(daemonPid), 10_000);
    expect(qemuProcesses(home)).toEqual([]);
    expect(processesMatching(home)).toEqual([]);
    cleanEnd = true;
  }, DURATION_MS + 150_000);
});
