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
});
