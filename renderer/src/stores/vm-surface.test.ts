// The VM surface's store logic (issues 11, 12, 15): save state and its discard, the list grouped by host with
// the local library first, the live-usage feed (subscribe once per VM, history bounded, resubscribe after a
// reconnect, unsubscribe when the last view goes), and which new verbs each state allows.
import { beforeEach, describe, expect, it } from 'vitest';
import { createPinia, setActivePinia } from 'pinia';
import { computed } from 'vue';
import type { VmStats } from '../../../main/api/schema';
import { groupByHost, LOCAL_GROUP, useVmsStore } from './vms';
import { pushSample, sparkline, STATS_HISTORY_MAX, useStatsStore } from './stats';
import { useOperationsStore } from './operations';
import { actionEnabled, extraEnabled } from '../components/vm-actions';
import { FakeRpc, vmInfo } from '../testing/fake-rpc';

let rpc: FakeRpc;

function sample(id: string, secs: number, cpu: number | null = 12.5): VmStats {
  return {
    id,
    at: new Date(Date.UTC(2026, 0, 1, 0, 0, secs)).toISOString(),
    intervalMs: 1000,
    cpuPercent: cpu,
    cpuSeconds: secs,
    memoryRssBytes: 100 << 20,
    memoryGuestBytes: null,
    memoryConfiguredBytes: 256 << 20,
    diskReadBytes: 0,
    diskWriteBytes: 0,
    diskReadOps: 0,
    diskWriteOps: 0,
    netRxBytes: null,
    netTxBytes: null,
    rates: { diskReadBytesPerSec: 0, diskWriteBytesPerSec: 0, diskReadOpsPerSec: 0, diskWriteOpsPerSec: 0, netRxBytesPerSec: null, netTxBytesPerSec: null },
    notes: [],
  };
}

beforeEach(() => {
  setActivePinia(createPinia());
  rpc = new FakeRpc().install();
});

describe('save state in the store', () => {
  it('suspends through vm.suspend and applies the saved VM it answers', async () => {
    const web = vmInfo('web', 'running');
    rpc.on('vm.list', () => [web]).on('vm.suspend', (p: { id: string }) => ({ ...web, id: p.id, state: 'saved', savedState: { at: '2026-01-01T00:00:00.000Z', bytes: 1234 } }));
    const vms = useVmsStore();
    await vms.load();
    const info = await vms.suspend(web.id);
    expect(rpc.callsOf('vm.suspend')).toEqual([{ id: web.id }]);
    expect(info?.state).toBe('saved');
    expect(vms.byId.get(web.id)?.state).toBe('saved');
    expect(vms.byId.get(web.id)?.savedState?.bytes).toBe(1234);
  });

  it('a refused suspend changes nothing and is reported', async () => {
    const web = vmInfo('web', 'running');
    rpc.on('vm.list', () => [web]);
    const vms = useVmsStore();
    await vms.load();
    expect(await vms.suspend(web.id)).toBeUndefined();
    expect(vms.byId.get(web.id)?.state).toBe('running');
    expect(useOperationsStore().errors[0]?.title).toMatch(/Saving the state of “web” failed/);
  });

  it('discards through vm.discardState', async () => {
    const web = { ...vmInfo('web', 'saved'), savedState: { at: '2026-01-01T00:00:00.000Z', bytes: 1 } };
    rpc.on('vm.list', () => [web]).on('vm.discardState', () => ({ ...web, state: 'stopped', savedState: undefined }));
    const vms = useVmsStore();
    await vms.load();
    await vms.discardState(web.id);
    expect(vms.byId.get(web.id)?.state).toBe('stopped');
    expect(vms.byId.get(web.id)?.savedState).toBeUndefined();
  });

  it('a saved VM may start (it resumes) and be deleted or discarded, but not saved again or exported', () => {
    const saved = vmInfo('s', 'saved');
    expect(actionEnabled('start', saved)).toBe(true);
    expect(actionEnabled('delete', saved)).toBe(true);
    expect(actionEnabled('export', saved)).toBe(false);
    expect(actionEnabled('console', saved)).toBe(false);
    expect(extraEnabled('discard-state', saved)).toBe(true);
    expect(extraEnabled('suspend', saved)).toBe(false);
    const running = vmInfo('r', 'running');
    expect(extraEnabled('suspend', running)).toBe(true);
    expect(extraEnabled('suspend', vmInfo('p', 'paused'))).toBe(true);
    expect(extraEnabled('suspend', vmInfo('x', 'stopped'))).toBe(false);
    expect(extraEnabled('discard-state', running)).toBe(false);
    // The micro-VMM and libvirt guests have no save state here; a busy VM takes no new verb.
    expect(extraEnabled('suspend', vmInfo('m', 'running', { engine: 'microvm' }))).toBe(false);
    expect(extraEnabled('suspend', { ...running, job: { id: 'j', op: 'snapshot.take', method: 'snapshot.take', startedAt: '' } })).toBe(false);
    expect(extraEnabled('migrate', vmInfo('x', 'stopped'))).toBe(true);
    expect(extraEnabled('migrate', saved)).toBe(false);
  });

  it('a VM on a libvirt host is neither cloned nor exported here (its disks are volumes there)', () => {
    const remote = { ...vmInfo('r'), host: 'lab' };
    expect(actionEnabled('clone', remote)).toBe(false);
    expect(actionEnabled('export', remote)).toBe(false);
    expect(actionEnabled('start', remote)).toBe(true);
    expect(actionEnabled('clone', vmInfo('l'))).toBe(true);
    expect(actionEnabled('export', { ...vmInfo('l'), host: 'local' })).toBe(true);
  });
});

describe('the list grouped by host', () => {
  it('puts the local library first, then hosts by name, each keeping its order', () => {
    const a = vmInfo('a');
    const b = { ...vmInfo('b'), host: 'zeta' };
    const c = { ...vmInfo('c'), host: 'lab' };
    const d = vmInfo('d');
    const e = { ...vmInfo('e'), host: 'lab' };
    const groups = groupByHost([b, a, c, d, e]);
    expect(groups.map((g) => g.label)).toEqual([LOCAL_GROUP, 'Host lab', 'Host zeta']);
    expect(groups.map((g) => g.vms.map((v) => v.name))).toEqual([['a', 'd'], ['c', 'e'], ['b']]);
    expect(groups[0]!.host).toBeNull();
  });

  it('reads the host from the config when the info has none, and "local" is the library', () => {
    const groups = groupByHost([vmInfo('a', 'stopped', { host: 'lab' }), { ...vmInfo('b'), host: 'local' }]);
    expect(groups.map((g) => [g.label, g.vms.length])).toEqual([
      [LOCAL_GROUP, 1],
      ['Host lab', 1],
    ]);
  });

  it('has no local group when every VM is elsewhere, and one (empty) group for an empty list', () => {
    expect(groupByHost([{ ...vmInfo('b'), host: 'lab' }]).map((g) => g.label)).toEqual(['Host lab']);
    expect(groupByHost([]).map((g) => g.label)).toEqual([LOCAL_GROUP]);
  });
});

describe('live usage', () => {
  it('subscribes once per VM, keeps the feed\'s samples, unsubscribes when the last view goes', async () => {
    const id = vmInfo('web', 'running').id;
    rpc.on('stats.subscribe', () => ({ all: false, ids: [id] })).on('stats.unsubscribe', () => ({ all: false, ids: [] })).on('vm.stats', () => sample(id, 0));
    const stats = useStatsStore();
    const stop1 = stats.watch(id);
    const stop2 = stats.watch(id);
    await Promise.resolve();
    expect(rpc.callsOf('stats.subscribe')).toEqual([{ ids: [id] }]);
    await new Promise((r) => setTimeout(r, 0));
    rpc.push({ type: 'vm-stats', id, stats: sample(id, 1) });
    rpc.push({ type: 'vm-stats', id, stats: sample(id, 2) });
    // Another VM's samples are not this page's business.
    rpc.push({ type: 'vm-stats', id: 'other', stats: sample('other', 3) });
    expect(stats.history.get(id)?.map((s) => s.cpuSeconds)).toEqual([0, 1, 2]);
    expect(stats.history.has('other')).toBe(false);
    stop1();
    stop1();
    expect(rpc.callsOf('stats.unsubscribe')).toEqual([]);
    stop2();
    expect(rpc.callsOf('stats.unsubscribe')).toEqual([{ ids: [id] }]);
    rpc.push({ type: 'vm-stats', id, stats: sample(id, 4) });
    expect(stats.history.get(id)).toHaveLength(3);
  });

  it('a view computed from the history sees each new sample (a new array, not one changed in place)', async () => {
    rpc.on('stats.subscribe', () => ({ all: false, ids: [] })).on('vm.stats', () => sample('a', 0));
    const stats = useStatsStore();
    stats.watch('a');
    await new Promise((r) => setTimeout(r, 0));
    const history = computed(() => stats.history.get('a') ?? []);
    const last = computed(() => history.value[history.value.length - 1]?.cpuSeconds);
    expect(last.value).toBe(0);
    rpc.push({ type: 'vm-stats', id: 'a', stats: sample('a', 1) });
    expect(last.value).toBe(1);
    rpc.push({ type: 'vm-stats', id: 'a', stats: sample('a', 2) });
    expect(last.value).toBe(2);
  });

  it('subscribes again after a reconnect (subscriptions end with a connection)', async () => {
    rpc.on('stats.subscribe', () => ({ all: false, ids: [] })).on('vm.stats', () => sample('a', 0));
    const stats = useStatsStore();
    stats.watch('a');
    stats.watch('b');
    rpc.setState('closed');
    rpc.setState('open');
    expect(rpc.callsOf('stats.subscribe')).toEqual([{ ids: ['a'] }, { ids: ['b'] }, { ids: ['a', 'b'] }]);
  });

  it('says why when the daemon refuses the subscription', async () => {
    const stats = useStatsStore();
    stats.watch('a');
    await new Promise((r) => setTimeout(r, 0));
    expect(stats.error).toMatch(/unknown method "stats.subscribe"/);
  });

  it('keeps ten minutes at most and ignores a sample that is not newer', () => {
    const h: VmStats[] = [];
    for (let i = 0; i < STATS_HISTORY_MAX + 25; i++) pushSample(h, sample('a', i));
    expect(h).toHaveLength(STATS_HISTORY_MAX);
    expect(h[0]!.cpuSeconds).toBe(25);
    pushSample(h, sample('a', 3));
    expect(h[h.length - 1]!.cpuSeconds).toBe(STATS_HISTORY_MAX + 24);
  });

  it('draws a chart inside its box and skips unknown values', () => {
    const pts = sparkline([0, 50, null, 100], 100, 20, 100)
      .split(' ')
      .map((p) => p.split(',').map(Number));
    expect(pts).toHaveLength(3);
    for (const [x, y] of pts) {
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThanOrEqual(100);
      expect(y).toBeGreaterThanOrEqual(0);
      expect(y).toBeLessThanOrEqual(20);
    }
    expect(pts[0]).toEqual([0, 20]);
    expect(pts[2]).toEqual([100, 0]);
    expect(sparkline([], 100, 20)).toBe('');
  });
});
