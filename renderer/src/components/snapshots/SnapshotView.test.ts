// @vitest-environment jsdom
// SnapshotView and its parts on a scripted daemon: the tree (rows, keys, groups), details with settings in words,
// the restore dialog's consequences, delete confirmation, the timeline's keys, take, errors, automatic snapshots.
import { beforeEach, describe, expect, it } from 'vitest';
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils';
import { createPinia, setActivePinia } from 'pinia';
import SnapshotView from './SnapshotView.vue';
import type { Snap } from './layout';
import { FakeRpc, vmInfo } from '../../testing/fake-rpc';
import { RpcCallError } from '../../api/client';

const vm = vmInfo('web', 'stopped', { memoryMiB: 384 });
const T = (m: number) => new Date(Date.UTC(2026, 0, 1, 10, m)).toISOString();
function snap(id: string, name: string, parent: string | null, minute: number, over: Partial<Snap> = {}): Snap {
  return { id, tag: `vmdesk-${id}`, name, description: '', time: T(minute), parent, kind: 'disk-only', config: vm.config, thumbnail: false, vmStateBytes: 0, disks: ['disk0'], adopted: false, linkedClones: [], isCurrent: false, missingOn: [], children: [], ...over };
}
// base ─ updated ─ tweaked (current), base ─ experiment; two safety snapshots under tweaked
const SNAPS = [
  snap('aaaa1', 'base', null, 0),
  snap('bbbb2', 'updated', 'aaaa1', 5, { kind: 'live', thumbnail: true, vmStateBytes: 50 * 1024 * 1024 }),
  snap('cccc3', 'tweaked', 'bbbb2', 9, { isCurrent: true }),
  snap('dddd4', 'experiment', 'aaaa1', 7),
  snap('eeee5', 'Before restoring base', 'cccc3', 11, { auto: 'safety', kind: 'live', vmStateBytes: 256 * 1024 * 1024 }),
  snap('ffff6', 'Before restoring base (2)', 'cccc3', 12, { auto: 'safety', kind: 'live', vmStateBytes: 256 * 1024 * 1024 }),
];
const PNG = 'iVBORw0KGgo=';
const PLAN = {
  snapshot: { id: 'bbbb2', name: 'updated', kind: 'live', time: T(5), memoryOnly: false },
  stateNow: 'stopped',
  stateAfter: 'running',
  inPlace: false,
  starts: true,
  powersOff: false,
  settings: [{ label: 'Memory', from: '384 MiB', to: '512 MiB' }],
  detaches: [],
  disksRevert: true,
  safety: { taken: true, name: 'Before restoring updated', kind: 'disk-only', memoryMiB: 0 },
  prunes: [{ id: 'eeee5', name: 'Before restoring base', vmStateBytes: 256 * 1024 * 1024 }],
  safetyKeep: 2,
  blockers: [],
  steps: ['The current state is saved first as "Before restoring updated" (disks only).', '"web" is stopped now and will be running afterwards: it is started and continues from the moment of "updated".'],
};

let rpc: FakeRpc;
beforeEach(() => {
  setActivePinia(createPinia());
  rpc = new FakeRpc()
    .on('snapshot.list', () => ({ vmId: vm.id, vmName: 'web', state: 'stopped', current: 'cccc3', snapshots: SNAPS, notes: [], unsupported: [], schedule: null, safetyKeep: 2 }))
    .on('snapshot.thumbnail', ({ snapshot }) => ({ png: snapshot === 'bbbb2' ? PNG : null }))
    .on('snapshot.info', ({ snapshot }) => ({ ...SNAPS.find((s) => s.id === snapshot)!, configDiff: [{ field: 'memoryMiB', from: 512, to: 384 }], changes: [{ label: 'Memory', from: '512 MiB', to: '384 MiB' }], thumbnailPath: null }))
    .on('snapshot.restorePlan', ({ saveCurrent }) => (saveCurrent ? PLAN : { ...PLAN, safety: { taken: false, reason: 'you chose not to save the current state' }, prunes: [], steps: ['The current state is not saved.'] }))
    .on('snapshot.restore', ({ snapshot }) => ({ restored: SNAPS.find((s) => s.id === snapshot), info: { ...vm, state: 'running' }, warnings: [], pruned: ['Before restoring base'], safety: { ...SNAPS[4]!, name: 'Before restoring updated' } }))
    .on('snapshot.delete', ({ snapshot }) => {
      if (snapshot === 'aaaa1') throw new RpcCallError({ code: 'EBUSY', message: 'snapshot "base" is the base of linked clone c1; delete it first', details: [] });
      return { deleted: [snapshot] };
    })
    .on('snapshot.preferences', (p) => ({ safetyKeep: p.safetyKeep === undefined ? 2 : p.safetyKeep }))
    .on('snapshot.schedule', ({ schedule }) => ({ ...vm, config: { ...vm.config!, snapshotSchedule: schedule ?? undefined } }))
    .install();
});

const by = (w: VueWrapper, id: string) => w.find(`[data-testid="${id}"]`);
const inBody = (id: string) => document.body.querySelector(`[data-testid="${id}"]`) as HTMLElement | null;

async function mountView(): Promise<VueWrapper> {
  const w = mount(SnapshotView, { props: { vmId: vm.id, vm }, attachTo: document.body });
  await flushPromises();
  return w;
}

describe('SnapshotView: tree', () => {
  it('shows a compact tree with connectors, a closed group of automatic snapshots and "Current State"', async () => {
    const w = await mountView();
    const rows = w.findAll('[role="treeitem"]');
    expect(rows.map((r) => r.attributes('data-testid'))).toEqual(['snap-node-base', 'snap-node-experiment', 'snap-node-updated', 'snap-node-tweaked', 'snap-group', 'snap-node-current']);
    expect(by(w, 'snap-group').text()).toMatch(/2 automatic snapshots before restores/);
    expect(by(w, 'snap-group').attributes('aria-expanded')).toBe('false');
    expect(by(w, 'snap-node-experiment').attributes('aria-level')).toBe('2');
    expect(by(w, 'snap-node-experiment').find('.col.tee').exists()).toBe(true);
    expect(by(w, 'snap-summary').text()).toMatch(/6 snapshots, 562 MiB of saved memory · 2 automatic \(512 MiB\)/);
    w.unmount();
  });

  it('walks with the keys, opens the group with →, selects and shows details with settings in words', async () => {
    const w = await mountView();
    const tree = by(w, 'snap-tree');
    await tree.trigger('keydown', { key: 'Home' });
    await tree.trigger('keydown', { key: 'ArrowDown' });
    await tree.trigger('keydown', { key: 'ArrowDown' });
    await flushPromises();
    expect(tree.attributes('aria-activedescendant')).toBe('snaprow-bbbb2');
    expect(by(w, 'snap-details').text()).toMatch(/Live \(memory and disks\)/);
    expect(by(w, 'snap-details').text()).toMatch(/50 MiB of saved memory/);
    expect(by(w, 'snap-diff').text()).toMatch(/Memory 512 MiB → 384 MiB/);
    expect(by(w, 'snap-thumb').attributes('src')).toBe(`data:image/png;base64,${PNG}`);
    await tree.trigger('keydown', { key: 'End' });
    await tree.trigger('keydown', { key: 'ArrowUp' });
    await tree.trigger('keydown', { key: 'ArrowRight' });
    await flushPromises();
    expect(by(w, 'snap-group').attributes('aria-expanded')).toBe('true');
    expect(by(w, 'snap-node-Before restoring base (2)').exists()).toBe(true);
    await tree.trigger('keydown', { key: 'ArrowLeft' });
    await flushPromises();
    expect(by(w, 'snap-node-Before restoring base (2)').exists()).toBe(false);
    w.unmount();
  });

  it('filters by name and hides automatic snapshots', async () => {
    const w = await mountView();
    await by(w, 'snap-filter').setValue('exper');
    expect(w.findAll('[role="treeitem"]').map((r) => r.attributes('data-testid'))).toEqual(['snap-node-base', 'snap-node-experiment', 'snap-node-current']);
    expect(by(w, 'snap-summary').text()).toMatch(/1 match/);
    await by(w, 'snap-filter').setValue('');
    await by(w, 'snap-hide-auto').setValue(true);
    expect(by(w, 'snap-group').exists()).toBe(false);
    w.unmount();
  });
});

describe('SnapshotView: restore and delete say what they do', () => {
  it('restore: the dialog states the consequences from the plan, then restores with the safety snapshot', async () => {
    const w = await mountView();
    await by(w, 'snap-node-updated').trigger('click');
    await flushPromises();
    await by(w, 'snap-restore').trigger('click');
    await flushPromises();
    expect(inBody('snap-restore-headline')!.textContent).toBe('“web” is stopped now and will be running afterwards: this live snapshot brings back a running guest.');
    expect(inBody('snap-restore-settings')!.textContent).toMatch(/Memory\s*384 MiB\s*512 MiB/);
    expect(inBody('snap-restore-prunes')!.textContent).toMatch(/Frees 256 MiB of saved memory/);
    expect(document.activeElement?.getAttribute('data-testid')).toBe('snap-restore-confirm');
    const box = inBody('snap-save-current') as HTMLInputElement;
    box.click();
    await flushPromises();
    expect(rpc.callsOf('snapshot.restorePlan').at(-1)).toEqual({ id: vm.id, snapshot: 'bbbb2', saveCurrent: false });
    expect(inBody('snap-restore-steps')!.textContent).toMatch(/not saved/);
    box.click();
    await flushPromises();
    inBody('snap-restore-confirm')!.click();
    await flushPromises();
    expect(rpc.callsOf('snapshot.restore')).toEqual([{ id: vm.id, snapshot: 'bbbb2', saveCurrent: true }]);
    expect(by(w, 'snap-notice').text()).toMatch(/Restored “updated”; the VM is running\. The previous state was saved as “Before restoring updated”\. Retention removed “Before restoring base”\./);
    w.unmount();
  });

  it('delete: Delete asks, Escape cancels, the branch choice and what it frees, errors shown', async () => {
    const w = await mountView();
    await by(w, 'snap-node-tweaked').trigger('click');
    await by(w, 'snap-tree').trigger('keydown', { key: 'Delete' });
    await flushPromises();
    const dlg = inBody('snap-delete-dialog')!;
    expect(dlg.textContent).toMatch(/Delete “tweaked”\?/);
    expect(inBody('snap-delete-frees')!.textContent).toMatch(/Frees no saved memory/);
    (inBody('snap-delete-branch') as HTMLInputElement).click();
    await flushPromises();
    expect(inBody('snap-delete-frees')!.textContent).toMatch(/Frees 512 MiB of saved memory/);
    expect(dlg.textContent).toMatch(/“You are here” moves to “updated”/);
    dlg.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }));
    await flushPromises();
    expect(inBody('snap-delete-dialog')).toBeNull();
    expect(rpc.callsOf('snapshot.delete')).toEqual([]);

    await by(w, 'snap-node-base').trigger('click');
    await flushPromises();
    await by(w, 'snap-delete').trigger('click');
    await flushPromises();
    inBody('snap-delete-confirm')!.click();
    await flushPromises();
    expect(rpc.callsOf('snapshot.delete')).toEqual([{ id: vm.id, snapshot: 'aaaa1', branch: false }]);
    expect(by(w, 'snap-error').text()).toMatch(/base of linked clone c1/);
    w.unmount();
  });
});

describe('SnapshotView: timeline, take, automatic snapshots', () => {
  it('walks the timeline with the arrows and marks where you are', async () => {
    const w = await mountView();
    await by(w, 'snap-mode-timeline').trigger('click');
    await flushPromises();
    const tl = by(w, 'snap-timeline');
    expect(w.findAll('[role="option"]').length).toBe(7); // 6 snapshots + "you are here"
    await tl.trigger('keydown', { key: 'End' });
    await flushPromises();
    expect(tl.attributes('aria-activedescendant')).toBe('snaptl-now');
    await tl.trigger('keydown', { key: 'ArrowLeft' });
    await flushPromises();
    expect(tl.attributes('aria-activedescendant')).toBe('snaptl-ffff6');
    expect(w.find('#snaptl-ffff6').attributes('aria-label')).toMatch(/automatic lane/);
    await tl.trigger('keydown', { key: 'Home' });
    await flushPromises();
    expect(tl.attributes('aria-activedescendant')).toBe('snaptl-aaaa1');
    expect(by(w, 'snap-details').find('h3').text()).toBe('base');
    await tl.trigger('keydown', { key: 'Delete' });
    await flushPromises();
    expect(inBody('snap-delete-dialog')!.textContent).toMatch(/Delete “base”\?/);
    w.unmount();
  });

  it('takes a snapshot with a suggested name', async () => {
    rpc.on('snapshot.take', ({ name }) => ({ ...SNAPS[0]!, id: 'gggg7', name }));
    const w = await mountView();
    await by(w, 'snap-take-open').trigger('click');
    await flushPromises();
    expect((inBody('snap-take-name') as HTMLInputElement).value).toBe('Snapshot 7');
    inBody('snap-take-submit')!.click();
    await flushPromises();
    expect(rpc.callsOf('snapshot.take')).toEqual([{ id: vm.id, name: 'Snapshot 7', description: undefined }]);
    w.unmount();
  });

  it('sets a schedule and the retention of "Before restoring" snapshots', async () => {
    const w = await mountView();
    await by(w, 'snap-auto-open').trigger('click');
    await flushPromises();
    (inBody('snap-schedule-on') as HTMLInputElement).click();
    const every = inBody('snap-schedule-every') as HTMLInputElement;
    every.value = '2';
    every.dispatchEvent(new Event('input'));
    const unit = inBody('snap-schedule-unit') as HTMLSelectElement;
    unit.value = 'hours';
    unit.dispatchEvent(new Event('change'));
    const keep = inBody('snap-retention-keep') as HTMLInputElement;
    keep.value = '5';
    keep.dispatchEvent(new Event('input'));
    await flushPromises();
    inBody('snap-auto-save')!.click();
    await flushPromises();
    expect(rpc.callsOf('snapshot.schedule')).toEqual([{ id: vm.id, schedule: { everyMinutes: 120, keep: 5 } }]);
    expect(rpc.callsOf('snapshot.preferences').at(-1)).toEqual({ safetyKeep: 5 });
    expect(inBody('snap-auto-dialog')).toBeNull();
    w.unmount();
  });
});
