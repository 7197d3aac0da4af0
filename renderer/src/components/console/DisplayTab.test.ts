// @vitest-environment jsdom
// The Display tab drives noVNC: connects to /vnc/<id>, scales or not, sends Ctrl+Alt+Del, and types pasted text as keys.
import { describe, expect, it, vi } from 'vitest';
import { flushPromises, mount } from '@vue/test-utils';

const created: FakeRFB[] = [];
class FakeRFB extends EventTarget {
  scaleViewport = false;
  clipViewport = true;
  resizeSession = true;
  background = '';
  keys: [number, string | null, boolean | undefined][] = [];
  cad = 0;
  disconnected = false;
  constructor(
    readonly target: HTMLElement,
    readonly url: string,
  ) {
    super();
    created.push(this);
  }
  sendKey(keysym: number, code: string | null, down?: boolean) {
    this.keys.push([keysym, code, down]);
  }
  sendCtrlAltDel() {
    this.cad++;
  }
  pasted: string[] = [];
  clipboardPasteFrom(text: string) {
    this.pasted.push(text);
  }
  focus() {}
  disconnect() {
    this.disconnected = true;
  }
  toBlob(cb: (b: Blob | null) => void) {
    cb(new Blob(['png']));
  }
}
vi.mock('@novnc/novnc', () => ({ default: FakeRFB }));

const { default: DisplayTab } = await import('./DisplayTab.vue');

describe('Display tab', () => {
  it('connects to the VNC bridge and controls the session', async () => {
    const w = mount(DisplayTab, { props: { vmId: 'vm 1', vmName: 'web', running: true, active: true }, attachTo: document.body });
    await flushPromises();
    const rfb = created.at(-1)!;
    expect(rfb.url).toBe(`ws://${location.host}/vnc/vm%201`);
    expect(rfb.scaleViewport).toBe(true);
    rfb.dispatchEvent(new Event('connect'));
    await flushPromises();
    expect(w.find('[data-testid="display-status"]').text()).toBe('connected');

    await w.find('[data-testid="display-1to1"]').setValue(true);
    expect(rfb.scaleViewport).toBe(false);

    await w.find('[data-testid="display-cad"]').trigger('click');
    expect(rfb.cad).toBe(1);

    await w.find('[data-testid="display-paste"]').trigger('click');
    await w.find('[data-testid="display-paste-text"]').setValue('Hi\n');
    await w.find('[data-testid="display-paste-send"]').trigger('click');
    const SHIFT = 0xffe1;
    await expect.poll(() => rfb.keys.length, { timeout: 5000 }).toBeGreaterThanOrEqual(8);
    expect(rfb.keys).toEqual([
      [SHIFT, 'ShiftLeft', true],
      [0x48, null, true],
      [0x48, null, false],
      [SHIFT, 'ShiftLeft', false],
      [0x69, null, true],
      [0x69, null, false],
      [0xff0d, null, true],
      [0xff0d, null, false],
    ]);

    await w.setProps({ running: false });
    expect(rfb.disconnected).toBe(true);
    w.unmount();
  });

  it('shares the clipboard both ways when the VM has it on, and lets a virtio display follow the window', async () => {
    let host = 'from host';
    const writes: string[] = [];
    Object.defineProperty(navigator, 'clipboard', {
      configurable: true,
      value: { readText: async () => host, writeText: async (t: string) => void writes.push((host = t)) },
    });
    const w = mount(DisplayTab, { props: { vmId: 'v', vmName: 'web', running: true, active: true, clipboard: true, resizeGuest: true }, attachTo: document.body });
    await flushPromises();
    const rfb = created.at(-1)!;
    expect(rfb.resizeSession).toBe(true);
    rfb.dispatchEvent(new Event('connect'));
    await flushPromises();
    // Connected: the host's clipboard goes to the guest once.
    expect(rfb.pasted).toEqual(['from host']);
    window.dispatchEvent(new Event('focus'));
    await flushPromises();
    expect(rfb.pasted).toEqual(['from host']);
    // The guest copies: the host's clipboard gets it, and it is not sent back.
    rfb.dispatchEvent(new CustomEvent('clipboard', { detail: { text: 'from guest' } }));
    await flushPromises();
    expect(writes).toEqual(['from guest']);
    window.dispatchEvent(new Event('focus'));
    await flushPromises();
    expect(rfb.pasted).toEqual(['from host']);
    // Something new copied on the host arrives when the window is back in focus; the button forces it.
    host = 'second';
    window.dispatchEvent(new Event('focus'));
    await flushPromises();
    expect(rfb.pasted).toEqual(['from host', 'second']);
    await w.find('[data-testid="display-send-clipboard"]').trigger('click');
    await flushPromises();
    expect(rfb.pasted).toEqual(['from host', 'second', 'second']);
    w.unmount();
  });

  it('leaves the clipboard alone and scales when the VM has neither', async () => {
    const w = mount(DisplayTab, { props: { vmId: 'v', vmName: 'web', running: true, active: true }, attachTo: document.body });
    await flushPromises();
    const rfb = created.at(-1)!;
    expect(rfb.resizeSession).toBe(false);
    expect(rfb.scaleViewport).toBe(true);
    rfb.dispatchEvent(new Event('connect'));
    rfb.dispatchEvent(new CustomEvent('clipboard', { detail: { text: 'secret' } }));
    await flushPromises();
    expect(rfb.pasted).toEqual([]);
    expect(w.find('[data-testid="display-send-clipboard"]').exists()).toBe(false);
    w.unmount();
  });
});
