// Scheduled automatic snapshots (VMware's AutoProtect, Parallels' SmartGuard), run by the daemon, which lives as
// long as any guest runs. A VM with a snapshotSchedule in vm.json gets a live snapshot every `everyMinutes`
// while it is running (not while paused or stopped), counted from the later of its newest scheduled snapshot,
// the moment the scheduler saw it running and the moment its schedule last changed; the newest `keep`
// scheduled snapshots stay. Each one runs as the VM's job, so it never races a user's operation: a VM busy
// with a job is tried again at the next tick.
import type { VmInfo, VmState } from '../../api/schema.js';
import type { VmEvent } from '../../api/events.js';
import type { VmOperation } from '../../api/states.js';
import { ErrorCode, isVmdeskError } from '../../api/errors.js';
import { readTree } from './store.js';
import { autoKindOf, type SnapshotNode } from './tree.js';
import type { SnapshotCore } from './vm.js';
import type { SnapshotManager } from './manager.js';

/** What the scheduler needs of the core beyond the snapshot modules: the VM list, jobs and events. */
export interface SchedulerCore extends SnapshotCore {
  list(): Promise<VmInfo[]>;
  job<T>(ref: string, op: VmOperation, method: string, fn: () => Promise<T>): Promise<T>;
  on(event: 'event', fn: (ev: VmEvent) => void): unknown;
  off(event: 'event', fn: (ev: VmEvent) => void): unknown;
}

export interface SchedulerOptions {
  /** How often due schedules are looked for (default 30 s; VMDESK_SNAPSHOT_TICK_MS). */
  tickMs?: number;
  now?: () => number;
  log?: (line: string) => void;
}

export interface ScheduledRun {
  vmId: string;
  vm: string;
  taken?: SnapshotNode;
  pruned: string[];
  error?: string;
}

export interface ScheduleStatus {
  /** When the next scheduled snapshot is due (ISO), null while the VM is not running. */
  nextAt: string | null;
  lastAt?: string;
  lastError?: string;
}

const DEFAULT_TICK_MS = 30_000;
const ALIVE: readonly VmState[] = ['running', 'paused'];

const schedulers = new WeakMap<object, SnapshotScheduler>();

/** The scheduler running for a core (the daemon's), if any. */
export function schedulerOf(core: object): SnapshotScheduler | undefined {
  return schedulers.get(core);
}

function stamp(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function everyWords(minutes: number): string {
  if (minutes % (24 * 60) === 0) return `${minutes / (24 * 60)} day${minutes === 24 * 60 ? '' : 's'}`;
  if (minutes % 60 === 0) return `${minutes / 60} hour${minutes === 60 ? '' : 's'}`;
  return `${minutes} minutes`;
}

export class SnapshotScheduler {
  /** VMs seen alive with a schedule: since when (ms) and under which schedule. */
  private readonly seen = new Map<string, { since: number; key: string }>();
  private readonly results = new Map<string, { lastAt?: number; lastError?: string }>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private inFlight: Promise<unknown> | undefined;
  private readonly tickMs: number;
  private readonly now: () => number;
  private readonly log: (line: string) => void;

  constructor(
    private readonly core: SchedulerCore,
    private readonly snaps: SnapshotManager,
    opts: SchedulerOptions = {},
  ) {
    this.tickMs = opts.tickMs ?? envTick() ?? DEFAULT_TICK_MS;
    this.now = opts.now ?? Date.now;
    this.log = opts.log ?? (() => {});
  }

  private readonly onEvent = (ev: VmEvent): void => {
    if (ev.type === 'vm-state' || ev.type === 'vm-updated' || ev.type === 'vm-created') this.observe(ev.info, this.now());
    else if (ev.type === 'vm-deleted') {
      this.seen.delete(ev.id);
      this.results.delete(ev.id);
    }
  };

  start(): this {
    schedulers.set(this.core, this);
    this.core.on('event', this.onEvent);
    void this.core.list().then((vms) => vms.forEach((v) => this.observe(v, this.now())), () => {});
    this.timer = setInterval(() => void this.tick(), this.tickMs);
    this.timer.unref?.();
    return this;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.core.off('event', this.onEvent);
    if (schedulers.get(this.core) === this) schedulers.delete(this.core);
    await this.inFlight?.catch(() => {});
  }

  private tick(): Promise<unknown> {
    if (!this.inFlight) {
      this.inFlight = this.runDue()
        .catch((e: unknown) => this.log(`snapshot scheduler: ${(e as Error).message}`))
        .finally(() => (this.inFlight = undefined));
    }
    return this.inFlight;
  }

  /** Notes when a VM became alive with its schedule (or the schedule changed); forgets it when it stops. */
  private observe(info: VmInfo, at: number): void {
    const schedule = info.config?.snapshotSchedule;
    if (!schedule || !ALIVE.includes(info.state)) {
      this.seen.delete(info.id);
      return;
    }
    const key = `${schedule.everyMinutes}/${schedule.keep}`;
    const s = this.seen.get(info.id);
    if (!s || s.key !== key) this.seen.set(info.id, { since: at, key });
  }

  /** When the VM's next scheduled snapshot is due (ms), or null when none is (not running, no schedule). */
  async dueAt(info: VmInfo): Promise<number | null> {
    const schedule = info.config?.snapshotSchedule;
    const s = this.seen.get(info.id);
    if (!schedule || !s || !ALIVE.includes(info.state)) return null;
    const tree = await readTree(info.bundle).catch(() => null);
    const last = Math.max(0, ...(tree?.nodes ?? []).filter((n) => autoKindOf(n) === 'scheduled').map((n) => Date.parse(n.time)));
    return Math.max(s.since, last) + schedule.everyMinutes * 60_000;
  }

  async status(info: VmInfo): Promise<ScheduleStatus> {
    const due = info.state === 'running' ? await this.dueAt(info) : null;
    const r = this.results.get(info.id);
    return {
      nextAt: due === null ? null : new Date(Math.max(due, this.now())).toISOString(),
      ...(r?.lastAt ? { lastAt: new Date(r.lastAt).toISOString() } : {}),
      ...(r?.lastError ? { lastError: r.lastError } : {}),
    };
  }

  /**
   * Takes every snapshot due at `at` (default now) and prunes what the schedules no longer keep. Tests pass a
   * later `at` to make time pass.
   */
  async runDue(at = this.now()): Promise<ScheduledRun[]> {
    const out: ScheduledRun[] = [];
    for (const info of await this.core.list()) {
      this.observe(info, at);
      const schedule = info.config?.snapshotSchedule;
      if (!schedule || info.state !== 'running') continue;
      const due = await this.dueAt(info);
      if (due === null || at < due) continue;
      const eng = await this.core.engineOf(info.config!).catch(() => null);
      if (!eng || eng.capabilities.liveSnapshots === false) {
        this.fail(info, at, `the ${info.config!.engine} engine cannot snapshot a running VM`);
        out.push({ vmId: info.id, vm: info.name, pruned: [], error: this.results.get(info.id)?.lastError });
        continue;
      }
      try {
        const name = `Scheduled ${stamp(at)}`;
        const description = `Taken automatically by the schedule (every ${everyWords(schedule.everyMinutes)}, the last ${schedule.keep} kept).`;
        const r = await this.core.job(info.id, 'snapshot.take', 'snapshot.scheduled', () => this.snaps.takeScheduled(info.id, { name, description, keep: schedule.keep }));
        this.results.set(info.id, { lastAt: at });
        this.log(`scheduled snapshot "${r.node.name}" of "${info.name}"${r.pruned.length ? `; removed ${r.pruned.join(', ')}` : ''}`);
        out.push({ vmId: info.id, vm: info.name, taken: r.node, pruned: r.pruned });
      } catch (e) {
        const msg = (e as Error).message;
        // Busy with a user's job: the next tick tries again. Anything else waits a whole interval.
        if (isVmdeskError(e) && e.code === ErrorCode.busy) {
          out.push({ vmId: info.id, vm: info.name, pruned: [], error: msg });
          continue;
        }
        this.fail(info, at, msg);
        out.push({ vmId: info.id, vm: info.name, pruned: [], error: msg });
      }
    }
    return out;
  }

  private fail(info: VmInfo, at: number, message: string): void {
    const s = this.seen.get(info.id);
    if (s) s.since = at;
    this.results.set(info.id, { ...this.results.get(info.id), lastError: message });
    this.log(`scheduled snapshot of "${info.name}" failed: ${message}`);
  }
}

function envTick(): number | undefined {
  const v = Number(process.env.VMDESK_SNAPSHOT_TICK_MS);
  return Number.isFinite(v) && v >= 100 ? v : undefined;
}
