// One snapshot operation per VM at a time, in this process. The daemon is the only writer of its library and
// runs one job per VM, so no cross-process lock is needed; what remains is in-process: a query (a snapshot
// list) may run while a take is in progress, and must then neither adopt the half-made snapshot nor write
// tree.json under the take's feet. Shared by every SnapshotManager of one core.
import { VmdeskError, ErrorCode } from '../../api/errors.js';

interface VmGate {
  /** The operation holding the VM's snapshots, in words for refusals. */
  op?: string;
  /** Tail of the chain of reconciliations that write (lists), so takes wait for them rather than fail. */
  writes: Promise<unknown>;
  /** The last reconciled listing and the stamp of what it was read from (listing-cache.ts). */
  cached?: { stamp: string; value: unknown };
}

export class SnapshotGate {
  private readonly vms = new Map<string, VmGate>();

  private gate(vmId: string): VmGate {
    let g = this.vms.get(vmId);
    if (!g) this.vms.set(vmId, (g = { writes: Promise.resolve() }));
    return g;
  }

  /** True while an operation (take, restore, delete, edit, clone) holds the VM's snapshots. */
  busy(vmId: string): boolean {
    return this.vms.get(vmId)?.op !== undefined;
  }

  /**
   * Runs `fn` as the VM's one snapshot operation. Another operation already running is refused at once
   * (EBUSY, naming it) rather than queued: the caller decides whether to try again. A reconciliation in
   * progress is waited for (it is short).
   */
  async exclusive<T>(vmId: string, vmName: string, what: string, fn: () => Promise<T>): Promise<T> {
    const g = this.gate(vmId);
    if (g.op !== undefined) {
      throw new VmdeskError(ErrorCode.busy, `snapshots of VM "${vmName}" are busy (another snapshot operation is running: ${g.op}); try again when it has finished`);
    }
    // Claimed before the first await, so two callers in the same tick cannot both get through.
    g.op = what;
    // Whatever the operation changes, the next list reads afresh (the stamps would tell too; this costs nothing).
    g.cached = undefined;
    try {
      await g.writes.catch(() => {});
      return await fn();
    } finally {
      g.op = undefined;
      g.cached = undefined;
    }
  }

  /** The listing remembered for `stamp`, if that is still the one (only while no operation holds the VM). */
  cachedListing<T>(vmId: string, stamp: string): T | undefined {
    const g = this.vms.get(vmId);
    return g && g.op === undefined && g.cached?.stamp === stamp ? (g.cached.value as T) : undefined;
  }

  /** Remembers a listing read from what `stamp` describes (ignored while an operation holds the VM). */
  rememberListing(vmId: string, stamp: string, value: unknown): void {
    const g = this.gate(vmId);
    if (g.op === undefined) g.cached = { stamp, value };
  }

  private readonly timers = new Map<string, ReturnType<typeof setTimeout>>();

  /** Runs `fn` once after `ms`, one per VM (a later call postpones it); it never keeps the process alive, and its failure is ignored. */
  later(vmId: string, ms: number, fn: () => Promise<unknown>): void {
    clearTimeout(this.timers.get(vmId));
    const t = setTimeout(() => {
      this.timers.delete(vmId);
      fn().catch(() => {});
    }, ms);
    t.unref?.();
    this.timers.set(vmId, t);
  }

  /** Forgets the VM's remembered listing. */
  forgetListing(vmId: string): void {
    const g = this.vms.get(vmId);
    if (g) g.cached = undefined;
  }

  /**
   * Runs a reconciliation: `fn(true)` may write tree.json (adopt, finish or drop interrupted takes) when no
   * operation holds the VM; otherwise `fn(false)` only reports. Writing reconciliations run one at a time.
   */
  reconcile<T>(vmId: string, fn: (write: boolean) => Promise<T>): Promise<T> {
    const g = this.gate(vmId);
    if (g.op !== undefined) return fn(false);
    const run = g.writes.catch(() => {}).then(() => fn(g.op === undefined));
    g.writes = run;
    return run;
  }
}

const gates = new WeakMap<object, SnapshotGate>();

/** The gate of one core (every SnapshotManager made for it shares it). */
export function gateOf(core: object): SnapshotGate {
  let g = gates.get(core);
  if (!g) gates.set(core, (g = new SnapshotGate()));
  return g;
}
