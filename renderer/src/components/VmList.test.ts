// @vitest-environment jsdom
// The VM list with thousands of VMs: only a window of rows in the DOM, one Tab stop, keyboard moves selection and
// focus (scrolling the row into view), a labelled filter box, and previews asked for by rows on screen only.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils';
import VmList from './VmList.vue';
import { createPinia, setActivePinia } from 'pinia';
import { FakeRpc, vmInfo } from '../testing/fake-rpc';
import type { VmInfo } from '../../../main/api/schema';

const names = (n: number) => Array.from({ length: n }, (_, i) => `vm-${String(i).padStart(4, '0')}`);

let rpc: FakeRpc;
let wrapper: VueWrapper | undefined;

beforeEach(() => {
  setActivePinia(createPinia());
  rpc = new FakeRpc().on('vm.screenshot', () => ({ png: btoa('png') })).install();
  // jsdom has no object URLs.
  URL.createObjectURL ??= () => 'blob:preview';
  URL.revokeObjectURL ??= () => {};
});
afterEach(() => {
  wrapper?.unmount();
  wrapper = undefined;
  vi.useRealTimers();
});

/** jsdom does no layout: give the viewport a height and a working scrollTop. */
function layOut(w: VueWrapper, height = 600): HTMLElement {
  const el = w.find('.viewport').element as HTMLElement;
  let top = 0;
  Object.defineProperty(el, 'clientHeight', { configurable: true, get: () => height });
  Object.defineProperty(el, 'scrollTop', {
    configurable: true,
    get: () => top,
    set: (v: number) => {
      top = Math.max(0, v);
    },
  });
  return el;
}

function mountList(vms: VmInfo[], selectedId: string | null = vms[0]?.id ?? null) {
  const w = mount(VmList, {
    props: { vms, selectedId, onSelect: (id: string) => void w.setProps({ selectedId: id }) },
    attachTo: document.body,
  });
  wrapper = w;
  return w;
}

const rows = (w: VueWrapper) => w.findAll('[role="option"]');
const rowNamed = (w: VueWrapper, name: string) => w.find(`[role="option"][data-vm-name="${name}"]`);

describe('VmList', () => {
  it('puts only a window of 2,000 rows in the DOM, each telling its place in the whole list', () => {
    const vms = names(2000).map((n) => vmInfo(n));
    const w = mountList(vms);
    const listbox = w.get('[role="listbox"]');
    expect(listbox.attributes('aria-label')).toBe('Virtual machines');
    expect(rows(w).length).toBeGreaterThan(5);
    expect(rows(w).length).toBeLessThan(60);
    const first = rows(w)[0]!;
    expect(first.attributes()).toMatchObject({ 'aria-setsize': '2000', 'aria-posinset': '1', 'aria-selected': 'true', tabindex: '0' });
    // One Tab stop: every other row is reachable with the arrows only.
    expect(w.findAll('[role="option"][tabindex="0"]')).toHaveLength(1);
  });

  it('moves selection and focus with the arrows, Page keys, Home and End, scrolling the row into view', async () => {
    const vms = names(2000).map((n) => vmInfo(n));
    const w = mountList(vms);
    const viewport = layOut(w);
    (rows(w)[0]!.element as HTMLElement).focus();

    await rows(w)[0]!.trigger('keydown', { key: 'ArrowDown' });
    await flushPromises();
    expect(w.props('selectedId')).toBe(vms[1]!.id);
    expect(document.activeElement).toBe(rowNamed(w, 'vm-0001').element);
    expect(rowNamed(w, 'vm-0001').attributes('tabindex')).toBe('0');
    expect(rowNamed(w, 'vm-0000').attributes('tabindex')).toBe('-1');

    await rowNamed(w, 'vm-0001').trigger('keydown', { key: 'End' });
    await flushPromises();
    expect(w.props('selectedId')).toBe(vms[1999]!.id);
    const last = rowNamed(w, 'vm-1999');
    expect(last.attributes('aria-posinset')).toBe('2000');
    expect(document.activeElement).toBe(last.element);
    // Scrolled so the last row is in view, and the rows around it rendered.
    expect(viewport.scrollTop).toBeGreaterThan(1990 * 60 - 600);
    expect(rowNamed(w, 'vm-1990').exists()).toBe(true);
    expect(rowNamed(w, 'vm-0001').exists()).toBe(false);

    await last.trigger('keydown', { key: 'PageUp' });
    await flushPromises();
    const afterPage = vms.findIndex((v) => v.id === w.props('selectedId'));
    expect(afterPage).toBeLessThan(1999);
    expect(afterPage).toBeGreaterThan(1980);

    await rowNamed(w, vms[afterPage]!.name).trigger('keydown', { key: 'Home' });
    await flushPromises();
    expect(w.props('selectedId')).toBe(vms[0]!.id);
    expect(document.activeElement).toBe(rowNamed(w, 'vm-0000').element);
    expect(viewport.scrollTop).toBe(0);
  });

  it('keeps the selected row (the Tab stop) in the DOM when scrolled away, without asking for its preview', async () => {
    vi.useFakeTimers();
    const vms = names(2000).map((n) => vmInfo(n, 'running'));
    const w = mountList(vms);
    const viewport = layOut(w);
    viewport.scrollTop = 1000 * 60;
    await w.get('.viewport').trigger('scroll');
    expect(rowNamed(w, 'vm-1000').exists()).toBe(true);
    const kept = rowNamed(w, 'vm-0000');
    expect(kept.exists()).toBe(true);
    expect(kept.attributes('tabindex')).toBe('0');
    // Rows stay in list order in the DOM (the kept row first), so screen readers and Tab see a sane order.
    expect(rows(w)[0]!.attributes('data-vm-name')).toBe('vm-0000');

    // Previews: only rows on screen poll, never all 2,000 running VMs.
    await vi.advanceTimersByTimeAsync(400);
    const asked = new Set(rpc.callsOf('vm.screenshot').map((p) => p.id));
    expect(asked.size).toBeGreaterThan(0);
    expect(asked.size).toBeLessThanOrEqual(rows(w).length - 1);
    expect(asked.has(vms[0]!.id)).toBe(false);
    expect(asked.has(vms[1000]!.id)).toBe(true);
  });

  it('filters by name from a labelled search box and announces the count', async () => {
    const vms = names(2000).map((n) => vmInfo(n));
    const w = mountList(vms);
    const box = w.get('input[type="search"]');
    const label = w.get(`label[for="${box.attributes('id')}"]`);
    expect(label.text()).toMatch(/filter virtual machines/i);

    await box.setValue('1999');
    expect(rows(w).map((r) => r.attributes('data-vm-name'))).toEqual(['vm-1999']);
    expect(w.get('[role="status"]').text()).toBe('1 of 2000 virtual machines match');
    expect(rowNamed(w, 'vm-1999').attributes('aria-setsize')).toBe('1');

    // Enter (or ↓) in the box goes to the first match: selected and focused.
    await box.trigger('keydown', { key: 'Enter' });
    await flushPromises();
    expect(w.props('selectedId')).toBe(vms[1999]!.id);
    expect(document.activeElement).toBe(rowNamed(w, 'vm-1999').element);

    await box.setValue('no such vm');
    expect(rows(w)).toHaveLength(0);
    expect(w.get('[data-testid="vm-filter-none"]').text()).toContain('no such vm');

    await box.trigger('keydown', { key: 'Escape' });
    expect((box.element as HTMLInputElement).value).toBe('');
    expect(rows(w).length).toBeGreaterThan(5);
    // The selection survived the filter and is back in view.
    expect(rowNamed(w, 'vm-1999').attributes('aria-selected')).toBe('true');
  });

  it('jumps to a name by typing its first letters', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const pause = () => vi.setSystemTime(Date.now() + 600);
    const vms = ['alpha', 'bravo', 'beta', 'charlie'].sort().map((n) => vmInfo(n));
    const w = mountList(vms);
    const first = rowNamed(w, 'alpha');
    (first.element as HTMLElement).focus();
    await first.trigger('keydown', { key: 'c' });
    await flushPromises();
    expect(document.activeElement).toBe(rowNamed(w, 'charlie').element);
    pause();
    await rowNamed(w, 'charlie').trigger('keydown', { key: 'b' });
    await flushPromises();
    expect(document.activeElement).toBe(rowNamed(w, 'beta').element);
    // Pressing the same letter again, later, goes to the next name with it.
    pause();
    await rowNamed(w, 'beta').trigger('keydown', { key: 'b' });
    await flushPromises();
    expect(document.activeElement).toBe(rowNamed(w, 'bravo').element);
    expect(w.props('selectedId')).toBe(vms.find((v) => v.name === 'bravo')!.id);
    // Letters typed quickly make a prefix: "b" lands on beta, "br" on bravo.
    pause();
    await rowNamed(w, 'bravo').trigger('keydown', { key: 'a' });
    await flushPromises();
    pause();
    await rowNamed(w, 'alpha').trigger('keydown', { key: 'b' });
    await flushPromises();
    expect(document.activeElement).toBe(rowNamed(w, 'beta').element);
    await rowNamed(w, 'beta').trigger('keydown', { key: 'r' });
    await flushPromises();
    expect(document.activeElement).toBe(rowNamed(w, 'bravo').element);
  });

  it('keeps the focus in the list when the focused row goes away', async () => {
    const vms = names(5).map((n) => vmInfo(n));
    const w = mountList(vms, vms[2]!.id);
    (rowNamed(w, 'vm-0002').element as HTMLElement).focus();
    // The VM is deleted elsewhere; the store selects another one.
    await w.setProps({ vms: vms.filter((_, i) => i !== 2), selectedId: vms[0]!.id });
    expect(document.activeElement).toBe(rowNamed(w, 'vm-0000').element);
    // Focus elsewhere is left alone.
    const outside = document.createElement('button');
    document.body.append(outside);
    outside.focus();
    await w.setProps({ vms: vms.slice(1, 3), selectedId: vms[1]!.id });
    expect(document.activeElement).toBe(outside);
    outside.remove();
  });

  it('opens a VM with Enter or a double click, and selects it with a click', async () => {
    const vms = names(3).map((n) => vmInfo(n));
    const w = mountList(vms);
    await rowNamed(w, 'vm-0002').trigger('click');
    expect(w.props('selectedId')).toBe(vms[2]!.id);
    await rowNamed(w, 'vm-0002').trigger('keydown', { key: 'Enter' });
    await rowNamed(w, 'vm-0001').trigger('dblclick');
    expect(w.emitted('open')).toEqual([[vms[2]!.id], [vms[1]!.id]]);
  });
});
