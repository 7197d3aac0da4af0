// The VM store fetches once and then follows pushed events (the lrt-store pattern); no polling.
import { beforeEach, describe, expect, it } from 'vitest';
import { createPinia, setActivePinia } from 'pinia';
import { useVmsStore } from './vms';
import { useOperationsStore } from './operations';
import { FakeRpc, vmInfo } from '../testing/fake-rpc';

let rpc: FakeRpc;

beforeEach(() => {
  setActivePinia(createPinia());
  rpc = new FakeRpc().on('vm.list', () => [vmInfo('beta'), vmInfo('alpha')]).install();
});

describe('vms store', () => {
  it('loads the list once, sorted, and selects the first VM', async () => {
    const vms = useVmsStore();
    await vms.load();
    expect(rpc.callsOf('vm.list')).toHaveLength(1);
    expect(vms.list.map((v) => v.name)).toEqual(['alpha', 'beta']);
    expect(vms.selected?.name).toBe('alpha');
  });

  it('applies created, state, updated and deleted events without refetching', async () => {
    const vms = useVmsStore();
    await vms.load();
    const gamma = vmInfo('gamma');
    rpc.push({ type: 'vm-created', id: gamma.id, info: gamma });
    expect(vms.list.map((v) => v.name)).toEqual(['alpha', 'beta', 'gamma']);
    rpc.push({ type: 'vm-state', id: gamma.id, state: 'running', info: { ...gamma, state: 'running' } });
    expect(vms.byId.get(gamma.id)?.state).toBe('running');
    rpc.push({ type: 'vm-updated', id: gamma.id, info: { ...gamma, name: 'aaa' } });
    expect(vms.list[0]!.name).toBe('aaa');
    const alpha = vms.list.find((v) => v.name === 'alpha')!;
    vms.select(alpha.id);
    rpc.push({ type: 'vm-deleted', id: alpha.id });
    expect(vms.list.map((v) => v.name)).toEqual(['aaa', 'beta']);
    expect(vms.selectedId).not.toBe(alpha.id);
    expect(rpc.callsOf('vm.list')).toHaveLength(1);
  });

  it('refetches after a reconnect, since events may have been missed', async () => {
    const vms = useVmsStore();
    await vms.load();
    rpc.setState('open');
    await new Promise((r) => setTimeout(r, 0));
    expect(rpc.callsOf('vm.list')).toHaveLength(2);
  });

  it('tracks progress events and reports failures as readable errors', async () => {
    const vms = useVmsStore();
    const ops = useOperationsStore();
    await vms.load();
    rpc.push({ type: 'progress', opId: 'o1', phase: 'creating disk', fraction: 0.5 });
    expect(ops.active).toEqual([expect.objectContaining({ opId: 'o1', phase: 'creating disk', fraction: 0.5 })]);
    rpc.push({ type: 'progress', opId: 'o1', phase: 'done', done: true });
    expect(ops.active).toEqual([]);

    const { RpcCallError } = await import('../api/client');
    rpc.on('vm.start', () => {
      throw new RpcCallError({ code: 'EHOST', message: 'QEMU is not installed', details: ['looked in /usr/bin'] });
    });
    const beta = vms.list.find((v) => v.name === 'beta')!;
    expect(await vms.lifecycle('vm.start', beta.id, 'Starting beta')).toBeUndefined();
    expect(ops.errors).toEqual([expect.objectContaining({ title: 'Starting beta failed', code: 'EHOST', message: 'QEMU is not installed', details: ['looked in /usr/bin'] })]);
    expect(ops.active).toEqual([]);
  });

  it('puts the answer of a lifecycle call into the list at once', async () => {
    const vms = useVmsStore();
    await vms.load();
    const beta = vms.list.find((v) => v.name === 'beta')!;
    rpc.on('vm.start', ({ id }) => ({ ...beta, id, state: 'running' }));
    await vms.lifecycle('vm.start', beta.id, 'Starting');
    expect(vms.byId.get(beta.id)?.state).toBe('running');
  });

  it('shares one fetch between early and later load() calls', async () => {
    const vms = useVmsStore();
    await Promise.all([vms.load(), vms.load()]);
    await vms.load();
    expect(rpc.callsOf('vm.list')).toHaveLength(1);
  });

  it('keeps thousands of VMs sorted through events without re-sorting or copying the VMs', async () => {
    const names = Array.from({ length: 2000 }, (_, i) => `vm-${String(i).padStart(4, '0')}`);
    const infos = names.map((n) => vmInfo(n));
    rpc.on('vm.list', () => [...infos].reverse());
    const vms = useVmsStore();
    await vms.load();
    expect(vms.list.map((v) => v.name)).toEqual(names);
    // The very objects from the answer: no reactive proxies over 2,000 configs.
    expect(vms.list[0]).toBe(infos[0]);
    const before = vms.list;

    const running = { ...infos[500]!, state: 'running' as const };
    rpc.push({ type: 'vm-state', id: running.id, state: 'running', info: running });
    expect(vms.list).not.toBe(before); // a new array, so views see the change
    expect(vms.list[500]).toBe(running);
    expect(vms.list[499]).toBe(infos[499]);

    // A rename moves the VM to its new place; a create lands in order; a delete closes the gap.
    rpc.push({ type: 'vm-updated', id: running.id, info: { ...running, name: 'aaa' } });
    expect(vms.list[0]!.name).toBe('aaa');
    expect(vms.list[501]!.name).toBe('vm-0501');
    const extra = vmInfo('vm-0999a');
    rpc.push({ type: 'vm-created', id: extra.id, info: extra });
    expect(vms.list.map((v) => v.name).indexOf('vm-0999a')).toBe(vms.list.map((v) => v.name).indexOf('vm-0999') + 1);
    rpc.push({ type: 'vm-deleted', id: infos[1]!.id });
    rpc.push({ type: 'vm-deleted', id: 'not-a-vm' });
    expect(vms.list).toHaveLength(2000);
    expect(vms.list.map((v) => v.name)).toEqual([...vms.list.map((v) => v.name)].sort((a, b) => a.localeCompare(b)));
    expect(vms.byId.size).toBe(2000);
  });
});
