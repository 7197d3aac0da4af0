// @vitest-environment jsdom
// SnapshotView.vue: tree and timeline of a scripted snapshot list, details with config diff, actions and progress.
import { describe, expect, it, beforeEach } from 'vitest';
import { flushPromises, mount } from '@vue/test-utils';
import { createPinia, setActivePinia } from 'pinia';
import SnapshotView from '../../renderer/src/components/snapshots/SnapshotView.vue';
import { timeline, treeRows, type Snap } from '../../renderer/src/components/snapshots/layout';
import { FakeRpc, vmInfo } from '../../renderer/src/testing/fake-rpc';
import { RpcCallError } from '../../renderer/src/api/client';

const vm = vmInfo('web');
function snap(id: string, name: string, parent: string | null, minute: number, over: Partial<Snap> = {}): Snap {
  return {
    id,
    tag: `vmdesk-${id}`,
    name,
    description: '',
    time: new Date(Date.UTC(2026, 0, 1, 10, minute)).toISOString(),
    parent,
    kind: 'disk-only',
    config: vm.config,
    thumbnail: false,
    vmStateBytes: 0,
    disks: ['disk0'],
    adopted: false,
    linkedClones: [],
    isCurrent: false,
    missingOn: [],
    children: [],
    ...over,
  };
}
// base ─ updated ─ tweaked, and base ─ experiment (a branch); current = tweaked
const SNAPS = [
  snap('aaaa1', 'base', null, 0, { children: ['bbbb2', 'dddd4'] }),
  snap('bbbb2', 'updated', 'aaaa1', 5, { kind: 'live', thumbnail: true, vmStateBytes: 50 * 1024 * 1024, children: ['cccc3'] }),
  snap('cccc3', 'tweaked', 'bbbb2', 9, { isCurrent: true }),
  snap('dddd4', 'experiment', 'aaaa1', 7),
];
const PNG = 'iVBORw0KGgo=';

let rpc: FakeRpc;
beforeEach(() => {
  setActivePinia(createPinia());
  rpc = new FakeRpc()
    .on('snapshot.list', () => ({ vmId: vm.id, vmName: 'web', state: 'stopped', current: 'cccc3', snapshots: SNAPS, notes: [], unsupported: [] }))
    .on('snapshot.thumbnail', ({ snapshot }) => ({ png: snapshot === 'bbbb2' ? PNG : null }))
    .on('snapshot.info', ({ snapshot }) => ({ ...SNAPS.find((s) => s.id === snapshot)!, configDiff: [{ field: 'cpus', from: 1, to: 2 }], thumbnailPath: null }))
    .on('snapshot.restore', ({ snapshot }) => ({ restored: SNAPS.find((s) => s.id === snapshot), info: vm, warnings: [] }))
    .on('snapshot.delete', () => {
      throw new RpcCallError({ code: 'EBUSY', message: 'snapshot "base" is the base of linked clone c1; delete it first', details: [] });
    })
    .install();
});

const byTestId = (w: ReturnType<typeof mount>, id: string) => w.find(`[data-testid="${id}"]`);

describe('layout', () => {
  it('puts Current State under the current snapshot, depth-first', () => {
    expect(treeRows(SNAPS, 'cccc3').map((r) => `${'  '.repeat(r.depth)}${r.snap?.name ?? 'NOW'}`)).toEqual(['base', '  updated', '    tweaked', '      NOW', '  experiment']);
  });
  it('gives branches their own lanes and orders x by time', () => {
    const t = timeline(SNAPS, 'cccc3', Date.UTC(2026, 0, 1, 11));
    const lane = Object.fromEntries(t.nodes.map((n) => [n.snap.name, n.lane]));
    expect(lane).toEqual({ base: 0, updated: 0, tweaked: 0, experiment: 1 });
    const x = Object.fromEntries(t.nodes.map((n) => [n.snap.name, n.x]));
    expect(x.base! < x.updated! && x.updated! < x.experiment! && x.experiment! < x.tweaked!).toBe(true);
    expect(t.edges).toHaveLength(3);
    expect(t.now.lane).toBe(0);
  });
});

describe('SnapshotView', () => {
  it('shows the tree, selects a node with details, diff and thumbnail, and restores', async () => {
    const w = mount(SnapshotView, { props: { vmId: vm.id } });
    await flushPromises();
    expect(byTestId(w, 'snap-tree').findAll('li')).toHaveLength(5);
    expect(byTestId(w, 'snap-node-current').exists()).toBe(true);
    await byTestId(w, 'snap-node-updated').trigger('click');
    await flushPromises();
    expect(byTestId(w, 'snap-details').text()).toMatch(/Live \(memory and disks\)/);
    expect(byTestId(w, 'snap-details').text()).toMatch(/50 MiB/);
    expect(byTestId(w, 'snap-diff').text()).toMatch(/cpus\s*1\s*2/);
    expect(byTestId(w, 'snap-thumb').attributes('src')).toBe(`data:image/png;base64,${PNG}`);
    await byTestId(w, 'snap-restore').trigger('click');
    await flushPromises();
    expect(rpc.callsOf('snapshot.restore')).toEqual([{ id: vm.id, snapshot: 'bbbb2', saveCurrent: true }]);
  });

  it('switches to the timeline with nodes on lanes', async () => {
    const w = mount(SnapshotView, { props: { vmId: vm.id } });
    await flushPromises();
    await byTestId(w, 'snap-mode-timeline').trigger('click');
    expect(byTestId(w, 'snap-timeline').exists()).toBe(true);
    expect(w.findAll('[data-testid^="snap-tl-"]:not([data-testid="snap-tl-thumb"])').length).toBe(5); // 4 snapshots + now
    expect(w.findAll('[data-testid="snap-tl-thumb"]').length).toBe(1); // the live snapshot's thumbnail
    await byTestId(w, 'snap-tl-experiment').trigger('click');
    await flushPromises();
    expect(rpc.callsOf('snapshot.info').at(-1)).toEqual({ id: vm.id, snapshot: 'dddd4' });
  });

  it('shows errors from the core and takes snapshots with a name', async () => {
    rpc.on('snapshot.take', ({ name }) => ({ ...SNAPS[0]!, id: 'eeee5', name }));
    const w = mount(SnapshotView, { props: { vmId: vm.id } });
    await flushPromises();
    await byTestId(w, 'snap-node-base').trigger('click');
    await flushPromises();
    await byTestId(w, 'snap-delete').trigger('click');
    await flushPromises();
    expect(byTestId(w, 'snap-error').text()).toMatch(/base of linked clone c1/);
    await byTestId(w, 'snap-take-open').trigger('click');
    expect((byTestId(w, 'snap-take-submit').element as HTMLButtonElement).disabled).toBe(true);
    await byTestId(w, 'snap-take-name').setValue('before upgrade');
    await byTestId(w, 'snap-take-form').trigger('submit');
    await flushPromises();
    expect(rpc.callsOf('snapshot.take')).toEqual([{ id: vm.id, name: 'before upgrade', description: undefined }]);
  });
});
