// Live usage of running VMs for the details pane: this page subscribes (stats.subscribe) only to the VMs it
// shows, keeps the last ten minutes of 1 Hz samples in memory for the charts, and subscribes again after a
// reconnect (subscriptions belong to a connection and end with it).
import { defineStore } from 'pinia';
import { shallowRef, triggerRef } from 'vue';
import type { VmStats } from '../../../main/api/schema';
import { rpc } from '../api/client';

/** Ten minutes of 1 Hz samples. */
export const STATS_HISTORY_MAX = 600;

/** Appends a sample, dropping the oldest past `max` and any sample not newer than the last (a replay). */
export function pushSample(history: VmStats[], sample: VmStats, max = STATS_HISTORY_MAX): VmStats[] {
  const last = history[history.length - 1];
  if (last && Date.parse(sample.at) <= Date.parse(last.at)) return history;
  history.push(sample);
  if (history.length > max) history.splice(0, history.length - max);
  return history;
}

/** One series of a chart: the values of the samples (null where unknown), oldest first. */
export function series(history: readonly VmStats[], pick: (s: VmStats) => number | null): (number | null)[] {
  return history.map(pick);
}

/**
 * An SVG polyline's points for a series in a width×height box, scaled to `max` (or the series' own peak);
 * unknown values break nothing: they are skipped.
 */
export function sparkline(values: readonly (number | null)[], width: number, height: number, max?: number, slots = STATS_HISTORY_MAX): string {
  const known = values.filter((v): v is number => v !== null && Number.isFinite(v));
  const top = Math.max(max ?? 0, ...known, 1e-9);
  const step = width / Math.max(1, Math.min(slots, Math.max(values.length, 2)) - 1);
  const start = width - step * (values.length - 1);
  const pts: string[] = [];
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) return;
    const x = Math.max(0, start + i * step);
    const y = height - (Math.min(v, top) / top) * height;
    pts.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  });
  return pts.join(' ');
}

export const useStatsStore = defineStore('stats', () => {
  /** Samples per VM id, oldest first. Shallow: a new sample triggers the map, not a deep walk. */
  const history = shallowRef(new Map<string, VmStats[]>());
  /** Why the last subscription failed (shown beside the figures). */
  const error = shallowRef<string | null>(null);
  /** How many views watch each VM; the daemon is asked only once per VM. */
  const watchers = new Map<string, number>();
  let hooked = false;

  function hook(): void {
    if (hooked) return;
    hooked = true;
    const client = rpc();
    client.onEvent((ev) => {
      if (ev.type !== 'vm-stats' || !watchers.has(ev.id)) return;
      record(ev.id, ev.stats);
    });
    // A new connection has no subscriptions: ask again for what is watched.
    client.onState((s) => {
      if (s === 'open' && watchers.size) void subscribe([...watchers.keys()]);
    });
  }

  function record(id: string, sample: VmStats): void {
    // A new array per sample: views computed from the old one see a new value (600 pointers copy in microseconds).
    const h = (history.value.get(id) ?? []).slice();
    pushSample(h, sample);
    history.value.set(id, h);
    triggerRef(history);
  }

  async function subscribe(ids: string[]): Promise<void> {
    try {
      await rpc().call('stats.subscribe', { ids });
      error.value = null;
    } catch (e) {
      error.value = e instanceof Error ? e.message : String(e);
    }
  }

  /** Starts following a VM's usage; the returned function stops (the last watcher unsubscribes). */
  function watch(id: string): () => void {
    hook();
    const n = watchers.get(id) ?? 0;
    watchers.set(id, n + 1);
    if (n === 0) {
      void subscribe([id]);
      // A first figure at once rather than after a second.
      void rpc()
        .call('vm.stats', { id })
        .then((s) => record(id, s))
        .catch(() => {});
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const left = (watchers.get(id) ?? 1) - 1;
      if (left > 0) return void watchers.set(id, left);
      watchers.delete(id);
      void rpc()
        .call('stats.unsubscribe', { ids: [id] })
        .catch(() => {});
    };
  }

  /** Forgets a VM's samples (it stopped: the next run starts a new chart). */
  function clear(id: string): void {
    if (history.value.delete(id)) triggerRef(history);
  }

  function watched(): string[] {
    return [...watchers.keys()];
  }

  return { history, error, watch, clear, record, watched };
});
