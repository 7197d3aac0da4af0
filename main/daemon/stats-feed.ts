// Usage events for the connections that asked for them (stats.subscribe): one timer for the daemon, running
// only while some connection is subscribed, sampling only the running VMs someone wants, once a second. A
// connection that is behind in reading skips samples (they are of no use late) instead of having them
// queued; its subscriptions end when it closes.
import type { Core } from '../core/core.js';
import { isAlive } from '../api/states.js';
import type { VmEvent } from '../api/events.js';

/** What a connection is for the feed: where its events go and how much of its output is still unread. */
export interface StatsSink {
  pushEvent(ev: VmEvent): void;
  usage(): { bufferedBytes: number };
}

export interface StatsClient {
  subscribe(ids: string[] | undefined): Promise<{ all: boolean; ids: string[] }>;
  unsubscribe(ids: string[] | undefined): Promise<{ all: boolean; ids: string[] }>;
}

/** Named VMs one connection may hold subscriptions to (beyond that: subscribe to all). */
const MAX_IDS_PER_CONNECTION = 1024;
/** Unread output past which a connection's samples are skipped. */
const SKIP_ABOVE_BYTES = 256 * 1024;

export class StatsFeed {
  private readonly subs = new Map<StatsSink, { all: boolean; ids: Set<string> }>();
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  /** Samples sent and skipped (tests, diagnostics). */
  readonly counters = { ticks: 0, sent: 0, skipped: 0 };

  constructor(
    private readonly core: Core,
    private readonly intervalMs = 1000,
  ) {}

  clientOf(sink: () => StatsSink): StatsClient {
    return {
      subscribe: async (refs) => {
        const s = sink();
        const cur = this.subs.get(s) ?? { all: false, ids: new Set<string>() };
        if (!refs) cur.all = true;
        else {
          // Names resolve to ids now: a rename later does not end the subscription.
          const ids = await Promise.all(refs.map(async (r) => (await this.core.get(r)).id));
          for (const id of ids) cur.ids.add(id);
          if (cur.ids.size > MAX_IDS_PER_CONNECTION) {
            for (const id of ids) cur.ids.delete(id);
            const { VmdeskError, ErrorCode } = await import('../api/errors.js');
            throw new VmdeskError(ErrorCode.busy, `a connection subscribes to at most ${MAX_IDS_PER_CONNECTION} VMs by name; subscribe without ids for all of them`);
          }
        }
        this.subs.set(s, cur);
        this.schedule();
        return { all: cur.all, ids: [...cur.ids] };
      },
      unsubscribe: async (refs) => {
        const s = sink();
        const cur = this.subs.get(s);
        if (cur) {
          if (!refs) this.subs.delete(s);
          else for (const r of refs) cur.ids.delete((await this.core.get(r).catch(() => ({ id: r }))).id);
          if (cur && !cur.all && cur.ids.size === 0) this.subs.delete(s);
        }
        this.schedule();
        const left = this.subs.get(s);
        return { all: left?.all ?? false, ids: [...(left?.ids ?? [])] };
      },
    };
  }

  /** The connection has gone. */
  drop(sink: StatsSink): void {
    this.subs.delete(sink);
    this.schedule();
  }

  get subscribers(): number {
    return this.subs.size;
  }

  private schedule(): void {
    if (this.subs.size && !this.timer) {
      this.timer = setInterval(() => void this.tick(), this.intervalMs);
      this.timer.unref();
    } else if (!this.subs.size && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private async tick(): Promise<void> {
    // A tick that has not finished (a monitor that is slow to answer) is not stacked on.
    if (this.ticking) return;
    this.ticking = true;
    try {
      this.counters.ticks++;
      const wantAll = [...this.subs.values()].some((s) => s.all);
      const wanted = new Set([...this.subs.values()].flatMap((s) => [...s.ids]));
      const vms = (await this.core.list()).filter((v) => v.config && isAlive(v.state) && v.state !== 'starting' && v.state !== 'stopping' && (wantAll || wanted.has(v.id)));
      await Promise.all(
        vms.map(async (v) => {
          const rt = this.core.runtime(v.id);
          if (!rt) return;
          let stats;
          try {
            stats = await this.core.usage.sample(v.id, rt, v.config!, this.core.fabric.counters(v.id));
          } catch {
            return;
          }
          const ev: VmEvent = { type: 'vm-stats', id: v.id, stats };
          for (const [sink, sub] of this.subs) {
            if (!sub.all && !sub.ids.has(v.id)) continue;
            if (sink.usage().bufferedBytes > SKIP_ABOVE_BYTES) {
              this.counters.skipped++;
              continue;
            }
            sink.pushEvent(ev);
            this.counters.sent++;
          }
        }),
      );
    } finally {
      this.ticking = false;
    }
  }

  close(): void {
    this.subs.clear();
    this.schedule();
  }
}
