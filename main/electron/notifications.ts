// Desktop notifications for long jobs that finish while the user looks elsewhere: a snapshot taken, an export
// written, an import done, a clone made, or any of them failing. Pure: it decides, main.ts shows.
import type { VmEvent } from '../api/events.js';

export interface JobNotice {
  title: string;
  body: string;
}

/** A job is "long" when it ran at least this long; quick ones the user saw finish. */
export const LONG_JOB_MS = 10_000;

type Progress = Extract<VmEvent, { type: 'progress' }>;

/** Follows progress events by opId and says which finished jobs deserve a notification. */
export class JobWatcher {
  private readonly started = new Map<string, { at: number; phase: string; vm?: string }>();
  constructor(
    private readonly now: () => number = Date.now,
    private readonly longMs = LONG_JOB_MS,
  ) {}

  /** The notice for this event, if it ends a long job. `nameOf` gives a VM's name for its id. */
  onEvent(ev: VmEvent, nameOf: (id: string) => string | undefined): JobNotice | undefined {
    if (ev.type !== 'progress') return undefined;
    const p = ev as Progress;
    const seen = this.started.get(p.opId);
    if (!p.done) {
      if (!seen) {
        // Bounded: an op whose end we never hear about (a daemon restart) is forgotten past 256.
        if (this.started.size >= 256) this.started.delete(this.started.keys().next().value!);
        this.started.set(p.opId, { at: this.now(), phase: p.phase, vm: p.id });
      } else seen.phase = p.phase;
      return undefined;
    }
    this.started.delete(p.opId);
    if (!seen || this.now() - seen.at < this.longMs) return undefined;
    const vm = p.id ?? seen.vm;
    const name = vm ? nameOf(vm) : undefined;
    const what = name ? `“${name}”: ${seen.phase}` : seen.phase;
    return p.error ? { title: 'VMDesk: a job failed', body: `${what} failed: ${p.error}`.slice(0, 300) } : { title: 'VMDesk: job finished', body: `${what} finished`.slice(0, 300) };
  }
}
