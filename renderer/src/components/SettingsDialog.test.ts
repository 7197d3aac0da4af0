// @vitest-environment jsdom
// Settings: hardware locked (with the reason) while the VM runs; only changed fields are sent.
import { beforeEach, describe, expect, it } from 'vitest';
import { flushPromises, mount } from '@vue/test-utils';
import { createPinia, setActivePinia } from 'pinia';
import SettingsDialog from './SettingsDialog.vue';
import { FakeRpc, HOST, vmInfo } from '../testing/fake-rpc';
import { useVmsStore } from '../stores/vms';
import type { VmInfo } from '../../../main/api/schema';

let rpc: FakeRpc;

async function open(vm: VmInfo) {
  setActivePinia(createPinia());
  rpc = new FakeRpc()
    .on('host.info', () => HOST)
    .on('vm.list', () => [vm, vmInfo('other')])
    .on('vm.update', ({ patch }) => ({ ...vm, config: { ...vm.config!, ...patch } }))
    .on('vm.rename', ({ name }) => ({ ...vm, name }))
    .install();
  await useVmsStore().load();
  const w = mount(SettingsDialog, { props: { vm } });
  await flushPromises();
  return w;
}

const byTestId = (w: ReturnType<typeof mount>, id: string) => w.find(`[data-testid="${id}"]`);

describe('Settings dialog', () => {
  it('locks hardware of a running VM and says why', async () => {
    const w = await open(vmInfo('web', 'running'));
    await byTestId(w, 'settings-tab-system').trigger('click');
    expect(byTestId(w, 'settings-locked').text()).toMatch(/shut the VM down/);
    expect((byTestId(w, 'field-cpus').element as HTMLInputElement).disabled).toBe(true);
    expect((byTestId(w, 'field-memory').element as HTMLInputElement).disabled).toBe(true);
    await byTestId(w, 'settings-tab-network').trigger('click');
    expect((byTestId(w, 'net-none').element as HTMLInputElement).disabled).toBe(true);
    // The OS type is not hardware: it may change while running.
    await byTestId(w, 'settings-tab-general').trigger('click');
    expect(byTestId(w, 'settings-locked').exists()).toBe(false);
    await byTestId(w, 'settings-os').setValue('bsd');
    await byTestId(w, 'settings').trigger('submit');
    await flushPromises();
    expect(rpc.callsOf('vm.update')).toEqual([{ id: expect.any(String), patch: { osType: 'bsd' } }]);
  });

  it('sends only the changed hardware of a stopped VM, and renames', async () => {
    const w = await open(vmInfo('db', 'stopped'));
    expect((byTestId(w, 'settings-save').element as HTMLButtonElement).disabled).toBe(true);
    await byTestId(w, 'settings-tab-system').trigger('click');
    expect(byTestId(w, 'settings-locked').exists()).toBe(false);
    await byTestId(w, 'field-cpus').setValue('3');
    await byTestId(w, 'settings-tab-general').trigger('click');
    await byTestId(w, 'settings-name').setValue('db-renamed');
    await byTestId(w, 'settings').trigger('submit');
    await flushPromises();
    expect(rpc.callsOf('vm.rename')).toEqual([{ id: expect.any(String), name: 'db-renamed' }]);
    expect(rpc.callsOf('vm.update')).toEqual([{ id: expect.any(String), patch: { cpus: 3 } }]);
    expect(w.emitted('close')).toBeTruthy();
  });

  it('refuses invalid values inline and keeps OK disabled', async () => {
    const w = await open(vmInfo('db', 'stopped'));
    await byTestId(w, 'settings-name').setValue('other');
    expect(w.text()).toMatch(/already exists/);
    await byTestId(w, 'settings-name').setValue('db');
    await byTestId(w, 'settings-tab-system').trigger('click');
    await byTestId(w, 'field-cpus').setValue('0');
    expect(byTestId(w, 'error-cpus').exists()).toBe(true);
    expect((byTestId(w, 'settings-save').element as HTMLButtonElement).disabled).toBe(true);
  });
});
