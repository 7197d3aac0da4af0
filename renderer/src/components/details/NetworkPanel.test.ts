// @vitest-environment jsdom
// The Network panel shows what the daemon warned of when a forward was added (an old passt and a guest
// service that speaks first), beside the forwards, and not the VM's standing warnings again.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils';
import { createPinia, setActivePinia } from 'pinia';
import NetworkPanel from './NetworkPanel.vue';
import { FakeRpc, vmInfo } from '../../testing/fake-rpc';
import { useVmsStore } from '../../stores/vms';
import type { PortForward, VmInfo } from '../../../../main/api/schema';

let rpc: FakeRpc;
let w: VueWrapper | undefined;
const byTestId = (id: string) => w!.find(`[data-testid="${id}"]`);
const PASST = 'this host\'s passt (built 2023-03-09) does not complete a forwarded TCP connection until the host\'s program sends data first';

beforeEach(() => {
  setActivePinia(createPinia());
  rpc = new FakeRpc().install();
});
afterEach(() => {
  w?.unmount();
  w = undefined;
});

describe('Network panel', () => {
  it('shows the warning a new forward brings, and not the VM\'s standing ones', async () => {
    const vm: VmInfo = { ...vmInfo('web', 'running'), warnings: ['using TCG'] };
    rpc.on('vm.list', () => [vm]).on('vm.forwardAdd', ({ forward }: { forward: PortForward }) => ({
      ...vm,
      config: { ...vm.config!, network: [{ mode: 'nat', forwards: [forward] }] },
      warnings: ['using TCG', forward.guestPort === 25 ? PASST : ''].filter(Boolean),
    }));
    await useVmsStore().load();
    w = mount(NetworkPanel, { props: { vm, connected: true }, attachTo: document.body });
    await flushPromises();
    expect(byTestId('network-warnings').exists()).toBe(false);

    await byTestId('forward-host').setValue(2525);
    await byTestId('forward-guest').setValue(25);
    await byTestId('forward-form').trigger('submit');
    await flushPromises();
    expect(byTestId('network-warnings').text()).toContain('does not complete a forwarded TCP connection');
    expect(byTestId('network-warnings').text()).not.toContain('using TCG');
    expect(byTestId('network-status').text()).toMatch(/added to the running guest\. this host's passt/);

    // The next change without a warning clears it.
    await byTestId('forward-host').setValue(2222);
    await byTestId('forward-guest').setValue(22);
    await byTestId('forward-form').trigger('submit');
    await flushPromises();
    expect(byTestId('network-warnings').exists()).toBe(false);
  });
});
