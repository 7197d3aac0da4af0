// @vitest-environment jsdom
// The VM list grouped by host (issue 15): as soon as one VM lives on a libvirt host, the local library comes
// first under its own heading, then each host by name; grouping by tag nests inside each host; keyboard order
// follows the groups; a screen reader hears the host in the row (the headings are decoration).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mount, type VueWrapper } from '@vue/test-utils';
import VmList from './VmList.vue';
import { createPinia, setActivePinia } from 'pinia';
import { FakeRpc, vmInfo } from '../testing/fake-rpc';
import type { VmInfo } from '../../../main/api/schema';

let wrapper: VueWrapper | undefined;
beforeEach(() => {
  setActivePinia(createPinia());
  new FakeRpc().on('vm.screenshot', () => ({ png: btoa('png') })).install();
});
afterEach(() => {
  wrapper?.unmount();
  wrapper = undefined;
});

function mountList(vms: VmInfo[], props: Record<string, unknown> = {}): VueWrapper {
  const w = mount(VmList, { props: { vms, selectedId: null, ...props }, attachTo: document.body });
  wrapper = w;
  return w;
}
const onHost = (name: string, host: string, tags?: string[]) => ({ ...vmInfo(name, 'stopped', tags ? { tags } : {}), host });
const order = (w: VueWrapper) => w.findAll('.canvas > *').map((e) => (e.attributes('role') === 'option' ? e.attributes('data-vm-name') : `[${e.text().replace(/\s+\d+$/, '')}]`));

describe('VM list grouped by host', () => {
  it('has no host headings while every VM is local', () => {
    const w = mountList([vmInfo('b'), vmInfo('a')]);
    expect(w.findAll('[data-testid="vm-host-head"]')).toHaveLength(0);
  });

  it('shows the local library first, then hosts by name, and counts each', () => {
    const w = mountList([onHost('web', 'zeta'), vmInfo('mine'), onHost('db', 'lab'), vmInfo('also mine'), onHost('api', 'lab')]);
    expect(order(w)).toEqual(['[This computer]', 'also mine', 'mine', '[Host lab]', 'api', 'db', '[Host zeta]', 'web']);
    expect(w.findAll('[data-testid="vm-host-head"]').map((h) => h.find('.count').text())).toEqual(['2', '2', '1']);
    // The host is in the row's text for assistive technology.
    expect(w.find('[data-vm-name="api"]').text()).toContain('on host lab');
    expect(w.find('[data-vm-name="mine"]').text()).not.toContain('on host');
  });

  it('nests tag groups inside each host', () => {
    const w = mountList([onHost('x', 'lab', ['prod']), onHost('y', 'lab'), vmInfo('m', 'stopped', { tags: ['prod'] }), vmInfo('n')], { groupByTag: true });
    expect(order(w)).toEqual(['[This computer]', '[prod]', 'm', '[Untagged]', 'n', '[Host lab]', '[prod]', 'x', '[Untagged]', 'y']);
  });

  it('moves through the groups in their order with the arrow keys', async () => {
    const vms = [onHost('db', 'lab'), vmInfo('zz local')];
    const w = mountList(vms, { selectedId: vms[1]!.id, onSelect: (id: string) => void w.setProps({ selectedId: id }) });
    await w.find('[data-vm-name="zz local"]').trigger('keydown', { key: 'ArrowDown' });
    expect(w.emitted('select')?.at(-1)).toEqual([vms[0]!.id]);
  });
});

describe('the host at a glance', () => {
  it('counts what this computer\'s running VMs commit, and says over-commit in words', async () => {
    const { useHostStore } = await import('../stores/host');
    const { HOST } = await import('../testing/fake-rpc');
    const host = useHostStore();
    host.info = { ...HOST, accelerators: { ...HOST.accelerators }, defaultAccel: { ...HOST.defaultAccel }, qemu: { ...HOST.qemu } } as never;
    const vms = [
      vmInfo('a', 'running', { cpus: 2, memoryMiB: 4096 }),
      vmInfo('b', 'paused', { cpus: 1, memoryMiB: 2048, limits: { memoryTargetMiB: 1024 } }),
      vmInfo('c', 'stopped', { cpus: 8, memoryMiB: 8192 }),
      { ...vmInfo('d', 'running', { cpus: 8, memoryMiB: 8192 }), host: 'lab' },
    ];
    const w = mountList(vms);
    expect(w.find('[data-testid="host-usage"]').text()).toMatch(/2 running/);
    expect(w.find('[data-testid="host-usage-cpu"]').text()).toBe('CPUs3 of 4');
    expect(w.find('[data-testid="host-usage-memory"]').text()).toBe('Memory5 GiB of 8 GiB');
    await w.setProps({ vms: [...vms, vmInfo('e', 'running', { cpus: 2, memoryMiB: 4096 })] });
    expect(w.find('[data-testid="host-usage-cpu"]').text()).toBe('CPUs5 of 4 — over-committed');
    expect(w.find('[data-testid="host-usage-memory"]').text()).toMatch(/9 GiB of 8 GiB — over-committed/);
    expect(w.find('[data-testid="host-usage-cpu"] meter').attributes('aria-label')).toBe('Virtual CPUs committed: 5 of 4 host CPUs');
    // What the engines noted about the host's tools (an old passt) folds out under the figures.
    expect(w.find('[data-testid="host-usage-notes"]').exists()).toBe(false);
    host.info = { ...(host.info as object), notes: ['passt (built 2023-03-09) predates 2023_10_04'] } as never;
    await w.vm.$nextTick();
    expect(w.find('[data-testid="host-usage-notes"] summary').text()).toBe('1 note about this computer\'s tools');
    expect(w.find('[data-testid="host-usage-notes"] li').text()).toMatch(/predates 2023_10_04/);
  });
});
