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
    await byTestId(w, 'wizard-next').trigger('click');
    expect(step(w)).toBe('summary');
    expect(byTestId(w, 'wizard-summary').text()).toContain('kernel /k/vmlinuz');
    await byTestId(w, 'wizard-create').trigger('click');
    await flushPromises();
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
    await byTestId(w, 'field-iso').setValue('/x.iso');
    for (let i = 0; i < 4; i++) await byTestId(w, 'wizard-next').trigger('click');
    await byTestId(w, 'wizard-create').trigger('click');
    await flushPromises();
    expect(byTestId(w, 'error-message').text()).toContain('does not exist');
    expect(w.find('details').text()).toContain('checked at create');
    expect(w.emitted('close')).toBeFalsy();
  });
});
