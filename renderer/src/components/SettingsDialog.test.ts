// @vitest-environment jsdom
// Settings: hardware locked (with the reason) while the VM runs; only changed fields are sent.
import { beforeEach, describe, expect, it } from 'vitest';
import { flushPromises, mount } from '@vue/test-utils';
import { createPinia, setActivePinia } from 'pinia';
import SettingsDialog from './SettingsDialog.vue';
import { FakeRpc, HOST, vmInfo } from '../testing/fake-rpc';
import { useVmsStore } from '../stores/vms';
import { useNoticesStore } from '../stores/notices';
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
    expect(byTestId(w, 'settings-locked').text()).toMatch(/Port forwards change while it runs/);
    expect((byTestId(w, 'net-0-mode').element as HTMLSelectElement).disabled).toBe(true);
    expect((byTestId(w, 'add-adapter').element as HTMLButtonElement).disabled).toBe(true);
    expect((byTestId(w, 'add-forward').element as HTMLButtonElement).disabled).toBe(false);
    for (const t of ['guest', 'devices']) {
      await byTestId(w, `settings-tab-${t}`).trigger('click');
      expect(byTestId(w, 'settings-locked').text()).toMatch(/shut the VM down/);
    }
    expect((byTestId(w, 'field-tpm').element as HTMLInputElement).disabled).toBe(true);
    await byTestId(w, 'settings-tab-resources').trigger('click');
    expect(byTestId(w, 'settings-locked').exists()).toBe(false);
    expect((byTestId(w, 'limit-cpu-cap').element as HTMLInputElement).disabled).toBe(false);
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

describe('Settings dialog: networks, limits, shares, devices', () => {
  it('changes forwards and limits of a running VM live, and nothing else', async () => {
    const vm = vmInfo('web', 'running', { network: [{ mode: 'nat', forwards: [], mac: '52:54:00:aa:bb:cc' }] });
    const w = await open(vm);
    rpc.on('host.ports', () => []).on('vm.update', () => ({ ...vm, warnings: ['the CPU cap applies from the next start'] }));
    await byTestId(w, 'settings-tab-network').trigger('click');
    await byTestId(w, 'add-forward').trigger('click');
    await byTestId(w, 'settings-tab-resources').trigger('click');
    await byTestId(w, 'limit-cpu-cap').setValue('40');
    await byTestId(w, 'settings').trigger('submit');
    await flushPromises();
    expect(rpc.callsOf('vm.update')).toEqual([
      { id: expect.any(String), patch: { network: [{ mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }], mac: '52:54:00:aa:bb:cc' }], limits: { cpuCapPercent: 40 } } },
    ]);
    expect(useNoticesStore().notices.map((n) => n.text)).toContain('the CPU cap applies from the next start');
  });

  it('adds an internal card, a share, the clipboard and a TPM to a stopped VM, then saves each through its call', async () => {
    const vm = vmInfo('db', 'stopped', { network: [{ mode: 'nat', forwards: [], mac: '52:54:00:aa:bb:cc' }] });
    const w = await open(vm);
    rpc
      .on('files.stat', ({ path }) => ({ path: path.replace(/^~/, '/home/me'), exists: true, kind: 'dir', readable: true }))
      .on('share.add', () => vm)
      .on('share.list', () => ({ id: vm.id, name: vm.name, state: 'stopped', shares: [], notes: [] }));
    await byTestId(w, 'settings-tab-network').trigger('click');
    await byTestId(w, 'add-adapter').trigger('click');
    expect((byTestId(w, 'net-1-mode').element as HTMLSelectElement).value).toBe('internal');
    await byTestId(w, 'net-1-network').setValue('lab');
    await byTestId(w, 'net-1-model').setValue('e1000e');
    const mac = (byTestId(w, 'net-1-mac').element as HTMLInputElement).value;
    expect(mac).toMatch(/^52:54:00:/);
    await byTestId(w, 'settings-tab-guest').trigger('click');
    await byTestId(w, 'share-path').setValue('~/projects');
    await byTestId(w, 'share-readonly').setValue(true);
    await byTestId(w, 'share-add').trigger('click');
    await flushPromises();
    expect(byTestId(w, 'share-projects-mount').text()).toBe('mount -t virtiofs -o ro projects /mnt/projects');
    await byTestId(w, 'field-clipboard').setValue(true);
    await byTestId(w, 'settings-tab-devices').trigger('click');
    // Secure Boot waits for UEFI.
    expect((byTestId(w, 'field-secure-boot').element as HTMLInputElement).disabled).toBe(true);
    await byTestId(w, 'field-tpm').setValue(true);
    await byTestId(w, 'settings').trigger('submit');
    await flushPromises();
    expect(rpc.callsOf('vm.update')).toEqual([
      {
        id: vm.id,
        patch: {
          network: [
            { mode: 'nat', forwards: [], mac: '52:54:00:aa:bb:cc' },
            { mode: 'internal', network: 'lab', forwards: [], mac, model: 'e1000e' },
          ],
          clipboard: true,
          tpm: true,
        },
      },
    ]);
    expect(rpc.callsOf('share.add')).toEqual([{ id: vm.id, hostPath: '/home/me/projects', tag: 'projects', readOnly: true }]);
    expect(w.emitted('close')).toBeTruthy();
  });

  it('says which tab holds an error', async () => {
    const w = await open(vmInfo('db', 'stopped'));
    await byTestId(w, 'settings-tab-network').trigger('click');
    await byTestId(w, 'add-adapter').trigger('click');
    await byTestId(w, 'net-1-network').setValue('no,commas');
    expect(byTestId(w, 'error-net.1.network').text()).toMatch(/letters, digits/);
    await byTestId(w, 'settings-tab-general').trigger('click');
    expect(w.text()).toMatch(/Fix the highlighted field \(Network\)/);
    expect((byTestId(w, 'settings-save').element as HTMLButtonElement).disabled).toBe(true);
  });

  it('passes a host USB device through to a running VM and takes one out, on OK', async () => {
    const vm = vmInfo('desk', 'running', { usb: [{ bus: 1, addr: 4, label: 'Old stick' }] });
    const w = await open(vm);
    rpc
      .on('usb.host', () => ({
        devices: [{ bus: 3, addr: 7, vendorId: '046d', productId: 'c52b', vendorName: 'Logitech, Inc.', productName: 'Unifying Receiver', port: '3-1', devNode: '/dev/bus/usb/003/007', usable: false, problem: 'VMDesk may not open /dev/bus/usb/003/007; a udev rule allows it' }],
        idsDatabase: '/usr/share/misc/usb.ids',
        notes: [],
      }))
      .on('usb.list', () => ({ id: vm.id, name: vm.name, state: 'running', devices: [{ bus: 1, addr: 4, label: 'Old stick', key: 'bus 1 address 4', present: false, usable: false, problem: 'not plugged into this host now' }], notes: [] }))
      .on('usb.add', () => ({ ...vm, warnings: ['USB device 046d:c52b needs a udev rule'] }))
      .on('usb.remove', () => vm);
    await byTestId(w, 'settings-tab-devices').trigger('click');
    await flushPromises();
    expect(byTestId(w, 'settings-locked').text()).toMatch(/USB devices can be plugged in and out while it runs/);
    expect((byTestId(w, 'field-tpm').element as HTMLInputElement).disabled).toBe(true);
    expect(byTestId(w, 'usb-0').text()).toMatch(/Old stick.*bus 1 address 4.*not plugged into this host now/);
    expect(byTestId(w, 'warning-usb.device').text()).toMatch(/udev rule/);
    await byTestId(w, 'usb-add').trigger('click');
    expect(byTestId(w, 'usb-1').text()).toMatch(/Logitech, Inc. Unifying Receiver.*046d:c52b.*added when you click OK/);
    // Twice is refused inline.
    expect(byTestId(w, 'error-usb.device').text()).toMatch(/passed through already/);
    await byTestId(w, 'usb-0-remove').trigger('click');
    await byTestId(w, 'settings').trigger('submit');
    await flushPromises();
    expect(rpc.callsOf('vm.update')).toEqual([]);
    expect(rpc.callsOf('usb.remove')).toEqual([{ id: vm.id, device: { bus: 1, addr: 4 } }]);
    expect(rpc.callsOf('usb.add')).toEqual([{ id: vm.id, device: { vendorId: '046d', productId: 'c52b', label: 'Logitech, Inc. Unifying Receiver' } }]);
    expect(w.emitted('close')).toBeTruthy();
  });

  it('gives a card whose MAC was emptied a new one on OK, never the address of the card that was there before', async () => {
    const vm = vmInfo('pair', 'stopped', { network: [{ mode: 'nat', forwards: [], mac: '52:54:00:00:00:01' }, { mode: 'internal', network: 'lab', forwards: [], mac: '52:54:00:00:00:02' }] });
    const w = await open(vm);
    await byTestId(w, 'settings-tab-network').trigger('click');
    await byTestId(w, 'net-1-up').trigger('click');
    await byTestId(w, 'net-0-mac').setValue('');
    expect(byTestId(w, 'net-0').text()).toMatch(/Chosen by VMDesk when the VM is saved/);
    await byTestId(w, 'settings').trigger('submit');
    await flushPromises();
    const [{ patch }] = rpc.callsOf('vm.update');
    expect(patch.network.map((n: { mode: string }) => n.mode)).toEqual(['internal', 'nat']);
    expect(patch.network[0].mac).toMatch(/^52:54:00:/);
    expect(patch.network[0].mac).not.toMatch(/^52:54:00:00:00:0[12]$/);
    expect(patch.network[1].mac).toBe('52:54:00:00:00:01');
  });

  it('a VM with a saved state: hardware and forwards locked with the way out, limits still open', async () => {
    const w = await open(vmInfo('held', 'saved'));
    await byTestId(w, 'settings-tab-network').trigger('click');
    expect(byTestId(w, 'settings-locked').text()).toMatch(/saved state.*discard the saved state/);
    expect((byTestId(w, 'add-forward').element as HTMLButtonElement).disabled).toBe(true);
    await byTestId(w, 'settings-tab-guest').trigger('click');
    expect((byTestId(w, 'share-add').element as HTMLButtonElement).disabled).toBe(true);
    await byTestId(w, 'settings-tab-resources').trigger('click');
    expect(byTestId(w, 'settings-locked').exists()).toBe(false);
    await byTestId(w, 'limit-memory-target').setValue('256');
    await byTestId(w, 'settings').trigger('submit');
    await flushPromises();
    expect(rpc.callsOf('vm.update')).toEqual([{ id: expect.any(String), patch: { limits: { memoryTargetMiB: 256 } } }]);
  });
});
