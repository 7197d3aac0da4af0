// @vitest-environment jsdom
// The wizard walks its pages, refuses bad input inline with the server's schemas, and sends a valid vm.create.
import { beforeEach, describe, expect, it } from 'vitest';
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils';
import { createPinia, setActivePinia } from 'pinia';
import NewVmWizard from './NewVmWizard.vue';
import { RpcMethods } from '../../../main/api/rpc';
import { RpcCallError } from '../api/client';
import { FakeRpc, HOST, vmInfo } from '../testing/fake-rpc';
import { useVmsStore } from '../stores/vms';

let rpc: FakeRpc;

beforeEach(async () => {
  setActivePinia(createPinia());
  rpc = new FakeRpc()
    .on('host.info', () => HOST)
    .on('vm.list', () => [vmInfo('taken')])
    .on('vm.create', (p) => vmInfo(p.name))
    .install();
  await useVmsStore().load();
});

const step = (w: VueWrapper) => w.find('[data-testid^="wizard-step-"]').attributes('data-testid')!.replace('wizard-step-', '');
const byTestId = (w: VueWrapper, id: string) => w.find(`[data-testid="${id}"]`);

async function mountWizard() {
  const w = mount(NewVmWizard);
  await flushPromises();
  return w;
}

describe('New VM wizard', () => {
  it('keeps the user on the name page until the name is valid', async () => {
    const w = await mountWizard();
    expect(step(w)).toBe('name');
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('name');
    expect(byTestId(w, 'error-name').text()).toMatch(/must not be empty/);

    await byTestId(w, 'field-name').setValue('../x');
    expect(byTestId(w, 'error-name').text()).toMatch(/name may contain|must not contain/);
    expect(byTestId(w, 'field-name').attributes('aria-invalid')).toBe('true');

    await byTestId(w, 'field-name').setValue('Taken');
    expect(byTestId(w, 'error-name').text()).toMatch(/already exists/);

    await byTestId(w, 'field-name').setValue('fresh');
    expect(byTestId(w, 'error-name').exists()).toBe(false);
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('media');
  });

  it('bounds CPUs and memory by the host and warns past free memory', async () => {
    const w = await mountWizard();
    await byTestId(w, 'field-name').setValue('vm1');
    await byTestId(w, 'wizard-next').trigger('click');
    await byTestId(w, 'media-none').setValue(true);
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('hardware');
    expect(byTestId(w, 'slider-cpus').attributes('max')).toBe('4');
    expect(byTestId(w, 'slider-memory').attributes('max')).toBe('8192');

    await byTestId(w, 'field-cpus').setValue('0');
    expect(byTestId(w, 'error-cpus').text()).toMatch(/at least 1 CPU/);
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('hardware');

    await byTestId(w, 'field-cpus').setValue('6');
    expect(byTestId(w, 'error-cpus').text()).toMatch(/4 CPUs/);
    await byTestId(w, 'field-cpus').setValue('2');
    await byTestId(w, 'field-memory').setValue('4096');
    expect(byTestId(w, 'error-memoryMiB').exists()).toBe(false);
    expect(byTestId(w, 'warning-memoryMiB').text()).toMatch(/2048 MiB free/);
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('disk');
  });

  it('creates a direct-kernel VM with a request the server accepts', async () => {
    const w = await mountWizard();
    await byTestId(w, 'field-name').setValue('kernel-vm');
    await byTestId(w, 'wizard-next').trigger('click');
    await byTestId(w, 'media-kernel').setValue(true);
    await byTestId(w, 'wizard-next').trigger('click');
    expect(byTestId(w, 'error-kernel').text()).toMatch(/choose a kernel/);
    await byTestId(w, 'field-kernel').setValue('/k/vmlinuz');
    await byTestId(w, 'field-initrd').setValue('/k/initrd.gz');
    await byTestId(w, 'field-cmdline').setValue('console=tty0 console=ttyS0');
    await byTestId(w, 'wizard-next').trigger('click');
    await byTestId(w, 'field-cpus').setValue('2');
    await byTestId(w, 'field-memory').setValue('256');
    await byTestId(w, 'field-accel').setValue('tcg');
    await byTestId(w, 'wizard-next').trigger('click');
    await byTestId(w, 'field-disk-size').setValue('0');
    await byTestId(w, 'wizard-next').trigger('click');
    await byTestId(w, 'add-forward').trigger('click');
    // A shared folder, checked with the daemon, added once the VM exists.
    rpc.on('files.stat', (p) => ({ path: p.path, exists: true, readable: true, kind: 'dir' }) as never).on('share.add', (p) => ({ share: { tag: p.tag, hostPath: p.hostPath, readOnly: !!p.readOnly }, notes: [] }) as never);
    await byTestId(w, 'share-path').setValue('/srv/data');
    await byTestId(w, 'share-readonly').setValue(true);
    await byTestId(w, 'share-add').trigger('click');
    await flushPromises();
    expect(byTestId(w, 'share-data').exists()).toBe(true);
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('summary');
    expect(byTestId(w, 'wizard-summary').text()).toContain('kernel /k/vmlinuz');
    expect(byTestId(w, 'wizard-summary').text()).toContain('data → /srv/data (read-only)');
    await byTestId(w, 'wizard-create').trigger('click');
    await flushPromises();
    expect(rpc.callsOf('share.add')).toEqual([{ id: vmInfo('kernel-vm').id, hostPath: '/srv/data', tag: 'data', readOnly: true }]);
    const [params] = rpc.callsOf('vm.create');
    expect(params).toMatchObject({ name: 'kernel-vm', cpus: 2, memoryMiB: 256, accel: 'tcg', directKernel: { kernel: '/k/vmlinuz', initrd: '/k/initrd.gz', cmdline: 'console=tty0 console=ttyS0' }, network: [{ mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }] }] });
    expect(params.diskBytes).toBeUndefined();
    expect(RpcMethods['vm.create'].params.safeParse(params).success).toBe(true);
    expect(w.emitted('created')).toBeTruthy();
    expect(w.emitted('close')).toBeTruthy();
  });

  it('shows a server refusal with its details and stays open', async () => {
    rpc.on('vm.create', () => {
      throw new RpcCallError({ code: 'EINVAL', message: 'ISO "/x.iso" does not exist', details: ['checked at create'] });
    });
    const w = await mountWizard();
    await byTestId(w, 'field-name').setValue('iso-vm');
    await byTestId(w, 'wizard-next').trigger('click');
    await byTestId(w, 'media-iso').setValue(true);
    await byTestId(w, 'field-iso').setValue('/x.iso');
    for (let i = 0; i < 4; i++) await byTestId(w, 'wizard-next').trigger('click');
    await byTestId(w, 'wizard-create').trigger('click');
    await flushPromises();
    expect(byTestId(w, 'error-message').text()).toContain('does not exist');
    expect(w.find('details').text()).toContain('checked at create');
    expect(w.emitted('close')).toBeFalsy();
  });
});

describe('New VM wizard, from the gallery', () => {
  const GiB = 1024 ** 3;
  const listing = (cached: boolean) => ({
    cacheDir: '/c',
    catalogueVersion: 1,
    cacheBytes: 0,
    images: [
      {
        source: 'gallery',
        usedBy: [],
        entry: {
          id: 'alpine-3.21-cloud',
          name: 'Alpine 3.21 (cloud)',
          kind: 'cloud',
          format: 'qcow2',
          url: 'https://x/a.qcow2',
          maxBytes: GiB,
          verify: { sums: 'https://x/SHA512SUMS', algorithm: 'sha512' },
          defaults: { cpus: 1, memoryMiB: 512, diskBytes: 4 * GiB, firmware: 'bios', preset: 'alpine' },
        },
        ...(cached ? { cached: { id: 'alpine-3.21-cloud', file: '/c/a', format: 'qcow2', bytes: 200, virtualSize: GiB, url: '', fetchedAt: '', verification: { algorithm: 'sha512', digest: '', source: 'sums-file', signature: 'unsigned', summary: 'ok' } } } : {}),
      },
      {
        source: 'gallery',
        usedBy: [],
        entry: { id: 'windows-11', name: 'Windows 11', kind: 'vendor-page', format: 'iso', url: 'https://www.microsoft.com/software-download/windows11', defaults: { cpus: 2, memoryMiB: 4096, diskBytes: 64 * GiB, firmware: 'uefi', preset: 'windows11' } },
      },
    ],
  });

  it('applies the entry\'s defaults, checks cloud-init, downloads the image with progress and creates the VM from it', async () => {
    let cached = false;
    let finishPull: () => void = () => {};
    rpc
      .on('image.list', () => listing(cached))
      .on('image.pull', () => new Promise((resolve) => (finishPull = () => ((cached = true), resolve((listing(true).images[0] as { cached?: unknown }).cached)))))
      .on('vm.createFromImage', (p) => vmInfo(p.name));
    const w = await mountWizard();
    await byTestId(w, 'field-name').setValue('Alpine Box');
    await byTestId(w, 'wizard-next').trigger('click');
    expect((byTestId(w, 'media-gallery').element as HTMLInputElement).checked).toBe(true);
    // Nothing chosen yet: Next stays.
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('media');
    expect(byTestId(w, 'error-image').text()).toBe('choose an image');
    expect(byTestId(w, 'gallery-status-alpine-3.21-cloud').text()).toBe('download, up to 1.0 GiB');
    await byTestId(w, 'gallery-entry-alpine-3.21-cloud').setValue(true);
    await byTestId(w, 'ci-user').setValue('root');
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('media');
    expect(byTestId(w, 'error-ciUser').text()).toMatch(/belongs to the system/);
    await byTestId(w, 'ci-user').setValue('alice');
    await byTestId(w, 'ci-packages').setValue('git curl');
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('hardware');
    // The entry's defaults: 1 CPU, 512 MiB, a 4 GiB disk.
    expect((byTestId(w, 'field-cpus').element as HTMLInputElement).value).toBe('1');
    expect((byTestId(w, 'field-memory').element as HTMLInputElement).value).toBe('512');
    await byTestId(w, 'wizard-next').trigger('click');
    expect((byTestId(w, 'field-disk-size').element as HTMLInputElement).value).toBe('4');
    await byTestId(w, 'wizard-next').trigger('click');
    expect(byTestId(w, 'gallery-network-note').text()).toMatch(/SSH port is forwarded/);
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('summary');
    expect(byTestId(w, 'summary-media').text()).toBe('Alpine 3.21 (cloud) (cloud image, downloaded first)');
    expect(byTestId(w, 'summary-cloud-init').text()).toBe('user alice, host name alpine-box, packages git curl');

    await byTestId(w, 'wizard-create').trigger('click');
    await flushPromises();
    expect(rpc.callsOf('image.pull')).toEqual([{ image: 'alpine-3.21-cloud' }]);
    expect(byTestId(w, 'wizard-create').text()).toBe('Downloading…');
    rpc.push({ type: 'image-download', download: { image: 'alpine-3.21-cloud', state: 'running', bytes: 300 * 1024 ** 2, totalBytes: 600 * 1024 ** 2, bytesPerSecond: 30 * 1024 ** 2, etaSeconds: 10, startedAt: '' } });
    await flushPromises();
    expect(byTestId(w, 'download-line').text()).toMatch(/300(\.0)? MiB of 600(\.0)? MiB · 30(\.0)? MiB\/s · 10 s left/);
    expect((byTestId(w, 'download-bar').element as HTMLProgressElement).value).toBeCloseTo(0.5);
    expect(byTestId(w, 'download-pause').exists()).toBe(true);
    expect(rpc.callsOf('vm.createFromImage')).toEqual([]);
    finishPull();
    await flushPromises();
    expect(rpc.callsOf('vm.createFromImage')).toEqual([
      { name: 'Alpine Box', image: 'alpine-3.21-cloud', cpus: 1, memoryMiB: 512, firmware: 'bios', osType: 'linux', accel: 'auto', network: [{ mode: 'nat', forwards: [] }], diskBytes: 4 * GiB, cloudInit: { user: 'alice', packages: ['git', 'curl'] } },
    ]);
    expect(w.emitted('close')).toBeTruthy();
  });

  it('pauses and resumes a download, and a paused download stops Create with a plain message', async () => {
    rpc
      .on('image.list', () => listing(false))
      .on('image.pull', () => Promise.reject(new RpcCallError({ code: 'ECANCELED', message: 'download paused', details: [] })))
      .on('image.pause', () => ({ image: 'alpine-3.21-cloud', state: 'paused', bytes: 5, totalBytes: 10, bytesPerSecond: 0, startedAt: '' }));
    const w = await mountWizard();
    await byTestId(w, 'field-name').setValue('a');
    await byTestId(w, 'wizard-next').trigger('click');
    await byTestId(w, 'gallery-entry-alpine-3.21-cloud').setValue(true);
    await byTestId(w, 'gallery-download').trigger('click');
    rpc.push({ type: 'image-download', download: { image: 'alpine-3.21-cloud', state: 'running', bytes: 5, totalBytes: 10, bytesPerSecond: 1, startedAt: '' } });
    await flushPromises();
    await byTestId(w, 'download-pause').trigger('click');
    await flushPromises();
    expect(rpc.callsOf('image.pause')).toEqual([{ image: 'alpine-3.21-cloud' }]);
    expect(byTestId(w, 'download-line').text()).toMatch(/^paused at 5 B of 10 B$/);
    await byTestId(w, 'download-resume').trigger('click');
    expect(rpc.callsOf('image.pull').length).toBe(2);
    for (let i = 0; i < 4; i++) await byTestId(w, 'wizard-next').trigger('click');
    rpc.push({ type: 'image-download', download: { image: 'alpine-3.21-cloud', state: 'paused', bytes: 5, totalBytes: 10, bytesPerSecond: 0, startedAt: '' } });
    await byTestId(w, 'wizard-create').trigger('click');
    await flushPromises();
    expect(byTestId(w, 'error-message').text()).toBe('The download of Alpine 3.21 (cloud) is paused: resume it, then Create again.');
    expect(w.emitted('close')).toBeFalsy();
  });

  it('offers Windows 11: the vendor\'s page, the downloaded ISO and the windows11 preset', async () => {
    rpc.on('image.list', () => listing(false)).on('files.stat', (p) => ({ path: p.path, exists: true, readable: true, kind: 'file' }));
    const w = await mountWizard();
    await byTestId(w, 'field-name').setValue('win');
    await byTestId(w, 'field-os').setValue('windows11');
    await byTestId(w, 'wizard-next').trigger('click');
    await byTestId(w, 'gallery-entry-windows-11').setValue(true);
    expect(byTestId(w, 'gallery-vendor-link').attributes('href')).toBe('https://www.microsoft.com/software-download/windows11');
    await byTestId(w, 'wizard-next').trigger('click');
    expect(byTestId(w, 'error-vendorIso').text()).toMatch(/download the ISO/);
    await byTestId(w, 'field-vendor-iso').setValue('/home/u/Win11.iso');
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('hardware');
    for (let i = 0; i < 3; i++) await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('summary');
    await byTestId(w, 'wizard-create').trigger('click');
    await flushPromises();
    const [req] = rpc.callsOf('vm.create');
    expect(req).toMatchObject({ name: 'win', osType: 'windows', firmware: 'uefi', memoryMiB: 4096, iso: '/home/u/Win11.iso', preset: 'windows11', diskBytes: 64 * GiB });
  });
});
