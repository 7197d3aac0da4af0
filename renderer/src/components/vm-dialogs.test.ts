// @vitest-environment jsdom
// The VM surface's dialogs: Move to host (destinations, why a running local VM cannot move, progress and a
// Cancel that reaches the daemon, hosts added from the dialog) and the image cache (sizes, total, removal of
// the chosen images or all of them, only after a confirmation; images in use cannot be chosen).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils';
import { createPinia, setActivePinia } from 'pinia';
import MoveToHostDialog from './MoveToHostDialog.vue';
import ImageCacheDialog from './ImageCacheDialog.vue';
import { FakeRpc, vmInfo } from '../testing/fake-rpc';
import { RpcCallError } from '../api/client';
import { useVmsStore } from '../stores/vms';
import { useOperationsStore } from '../stores/operations';
import type { VmInfo } from '../../../main/api/schema';

let rpc: FakeRpc;
let w: VueWrapper | undefined;
const byTestId = (id: string) => w!.find(`[data-testid="${id}"]`);
const HOSTS = [
  { name: 'lab', uri: 'qemu+ssh://me@lab/system', pool: 'default', addedAt: '', where: 'lab over ssh', vms: 0 },
  { name: 'attic', uri: 'qemu+ssh://me@attic/system', pool: 'default', addedAt: '', where: 'attic over ssh', vms: 0 },
];

beforeEach(() => {
  setActivePinia(createPinia());
  rpc = new FakeRpc().install();
});
afterEach(() => {
  w?.unmount();
  w = undefined;
});

async function openMove(vm: VmInfo, hosts = HOSTS): Promise<void> {
  rpc.on('vm.list', () => [vm]).on('hosts.list', (p: { check?: boolean }) => hosts.map((h) => (p.check ? { ...h, reachable: h.name !== 'attic', ...(h.name === 'attic' ? { error: 'connection refused' } : { version: 'libvirt 9.0.0' }) } : h)));
  await useVmsStore().load();
  w = mount(MoveToHostDialog, { props: { vm }, attachTo: document.body });
  await flushPromises();
}

describe('Move to host dialog', () => {
  it('offers the other hosts, greys out one that does not answer and says why', async () => {
    await openMove(vmInfo('web'));
    expect(byTestId('move-to-lab').text()).toMatch(/lab over ssh — reachable, libvirt 9.0.0/);
    expect(byTestId('move-to-attic').text()).toMatch(/not reachable: connection refused/);
    expect((byTestId('move-to-attic').find('input').element as HTMLInputElement).disabled).toBe(true);
    expect(byTestId('move-to-local').exists()).toBe(false);
    expect((byTestId('move-ok').element as HTMLButtonElement).disabled).toBe(false);
  });

  it('offers this computer for a VM on a host, and refuses to move a running local VM', async () => {
    await openMove({ ...vmInfo('remote'), host: 'lab' });
    expect(byTestId('move-to-local').exists()).toBe(true);
    expect(byTestId('move-to-lab').exists()).toBe(false);
    w!.unmount();
    setActivePinia(createPinia());
    rpc = new FakeRpc().install();
    await openMove(vmInfo('busy', 'running'));
    expect(w!.text()).toMatch(/Shut “busy” down first: a running VM moves live only between two libvirt hosts/);
    expect((byTestId('move-ok').element as HTMLButtonElement).disabled).toBe(true);
  });

  it('moves with progress, and Cancel asks the daemon to stop the job', async () => {
    const vm = vmInfo('web');
    let reject!: (e: unknown) => void;
    rpc.on('vm.migrate', () => new Promise((_res, rej) => (reject = rej))).on('job.cancel', () => ({ cancelled: true }));
    await openMove(vm);
    await byTestId('move-ok').trigger('click');
    await flushPromises();
    expect(rpc.callsOf('vm.migrate')).toEqual([{ id: vm.id, to: 'lab', start: true }]);
    const op = useOperationsStore().active[0]!;
    rpc.push({ type: 'progress', opId: op.opId, id: vm.id, phase: 'copying disk vda', fraction: 0.4 });
    await flushPromises();
    expect(byTestId('op-progress').text()).toMatch(/copying disk vda/);
    expect((byTestId('op-progress').find('progress').element as HTMLProgressElement).value).toBeCloseTo(0.4);
    await byTestId('op-cancel').trigger('click');
    await flushPromises();
    expect(rpc.callsOf('job.cancel')).toEqual([{ opId: op.opId }]);
    reject(new RpcCallError({ code: 'ECANCELED', message: 'cancelled', details: [] }));
    await flushPromises();
    expect(byTestId('move-cancelled').text()).toMatch(/stays where it was/);
    expect(byTestId('op-progress').exists()).toBe(false);
  });

  it('adds a host from the dialog and picks it', async () => {
    const added = { name: 'new1', uri: 'qemu:///session', pool: 'default', addedAt: '', where: 'this machine', vms: 0 };
    const hosts = [...HOSTS];
    rpc.on('hosts.add', () => {
      hosts.push(added);
      return { host: added, warnings: [] };
    });
    await openMove(vmInfo('web'), hosts);
    await byTestId('host-name').setValue('new1');
    await byTestId('host-uri').setValue('qemu:///session');
    await w!.find('form[aria-label="Add a libvirt host"]').trigger('submit');
    await flushPromises();
    expect(rpc.callsOf('hosts.add')).toEqual([{ name: 'new1', uri: 'qemu:///session' }]);
    expect((byTestId('move-to-new1').find('input').element as HTMLInputElement).checked).toBe(true);
  });
});

const entry = (id: string, name: string) => ({ id, name, kind: 'cloud', format: 'qcow2', url: `https://example.org/${id}.qcow2`, defaults: {} });
const cachedImage = (id: string, bytes: number) => ({
  id,
  file: `/cache/${id}.qcow2`,
  format: 'qcow2',
  bytes,
  virtualSize: bytes * 4,
  url: '',
  fetchedAt: '2026-11-01T00:00:00.000Z',
  verification: { algorithm: 'sha256', digest: 'ab', source: 'sums-file', signature: 'signed', summary: 'SHA-256 from the signed SHA256SUMS' },
});

describe('image cache dialog', () => {
  let listing: { cacheDir: string; catalogueVersion: number; cacheBytes: number; images: unknown[] };
  beforeEach(() => {
    listing = {
      cacheDir: '/cache',
      catalogueVersion: 1,
      cacheBytes: 300 * 1024 * 1024 + 5 * 1024 * 1024,
      images: [
        { entry: entry('debian-12', 'Debian 12'), source: 'gallery', cached: cachedImage('debian-12', 300 * 1024 * 1024), usedBy: [] },
        { entry: entry('alpine-iso', 'Alpine'), source: 'gallery', partialBytes: 5 * 1024 * 1024, usedBy: [] },
        { entry: entry('fedora', 'Fedora'), source: 'gallery', usedBy: [] },
        { entry: entry('ubuntu-iso', 'Ubuntu'), source: 'gallery', cached: cachedImage('ubuntu-iso', 1024), usedBy: ['installer vm'] },
      ],
    };
    rpc.on('image.list', () => listing).on('image.remove', (p: { images?: string[]; all?: boolean }) => {
      const gone = p.all ? ['debian-12', 'alpine-iso'] : p.images!;
      listing = { ...listing, images: listing.images.filter((i) => !gone.includes((i as { entry: { id: string } }).entry.id)), cacheBytes: 1024 };
      return { removed: gone, freedBytes: 300 * 1024 * 1024 };
    });
  });

  it('lists cached images and partial downloads with sizes and the total', async () => {
    w = mount(ImageCacheDialog, { attachTo: document.body });
    await flushPromises();
    expect(byTestId('image-cache-total').text()).toMatch(/^305 MiB in 3 images/);
    expect(byTestId('cached-size-debian-12').text()).toBe('300 MiB');
    expect(byTestId('cached-alpine-iso').text()).toMatch(/partial download/);
    expect(byTestId('cached-fedora').exists()).toBe(false);
    expect(byTestId('cached-ubuntu-iso').text()).toMatch(/in use as the CD of installer vm/);
    expect((byTestId('cached-choose-ubuntu-iso').element as HTMLInputElement).disabled).toBe(true);
  });

  it('removes the chosen images only after a confirmation, and reloads', async () => {
    w = mount(ImageCacheDialog, { attachTo: document.body });
    await flushPromises();
    expect((byTestId('image-cache-remove').element as HTMLButtonElement).disabled).toBe(true);
    await byTestId('cached-choose-debian-12').setValue(true);
    await byTestId('image-cache-remove').trigger('click');
    await flushPromises();
    expect(byTestId('confirm-image-remove').text()).toMatch(/300 MiB will be freed/);
    await byTestId('confirm-cancel').trigger('click');
    expect(rpc.callsOf('image.remove')).toEqual([]);
    await byTestId('image-cache-remove').trigger('click');
    await byTestId('confirm-ok').trigger('click');
    await flushPromises();
    expect(rpc.callsOf('image.remove')).toEqual([{ images: ['debian-12'] }]);
    expect(byTestId('cached-debian-12').exists()).toBe(false);
    expect(rpc.callsOf('image.list').length).toBe(2);
  });

  it('"Remove cached images" removes every one', async () => {
    w = mount(ImageCacheDialog, { attachTo: document.body });
    await flushPromises();
    await byTestId('image-cache-remove-all').trigger('click');
    await flushPromises();
    expect(byTestId('confirm-image-remove').text()).toMatch(/All 305 MiB will be freed/);
    await byTestId('confirm-ok').trigger('click');
    await flushPromises();
    expect(rpc.callsOf('image.remove')).toEqual([{ all: true }]);
  });
});
