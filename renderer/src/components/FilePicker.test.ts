// @vitest-environment jsdom
// The daemon-side picker's folder mode (shared folders): folders only, Enter opens one, "Choose this folder"
// gives the folder shown; the path field's Browse opens it in that mode even where the desktop has a file dialog.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { flushPromises, mount, type VueWrapper } from '@vue/test-utils';
import { createPinia, setActivePinia } from 'pinia';
import FilePicker from './FilePicker.vue';
import PathInput from './vmform/PathInput.vue';
import { FakeRpc } from '../testing/fake-rpc';

let rpc: FakeRpc;
let w: VueWrapper | undefined;
const when = new Date(0).toISOString();
const LISTING: Record<string, { name: string; kind: 'dir' | 'file' }[]> = {
  '/home/me': [
    { name: 'projects', kind: 'dir' },
    { name: 'notes.txt', kind: 'file' },
  ],
  '/home/me/projects': [{ name: 'site', kind: 'dir' }],
};

beforeEach(() => {
  // jsdom lays nothing out, so it has no scrollIntoView.
  Element.prototype.scrollIntoView ??= function scrollIntoView() {};
  setActivePinia(createPinia());
  rpc = new FakeRpc()
    .on('files.list', ({ path }: { path?: string }) => {
      const p = !path || path === '~' ? '/home/me' : path;
      return { path: p, parent: p === '/' ? null : p.slice(0, p.lastIndexOf('/')) || '/', home: '/home/me', entries: (LISTING[p] ?? []).map((e) => ({ ...e, size: 0, modifiedAt: when })), truncated: false };
    })
    .install();
});
afterEach(() => {
  w?.unmount();
  w = undefined;
});

describe('file picker, folder mode', () => {
  it('lists folders only and chooses the folder shown', async () => {
    w = mount(FilePicker, { props: { mode: 'folder', title: 'Choose a folder' }, attachTo: document.body });
    await flushPromises();
    const names = () => w!.findAll('[data-testid="fp-entry"]').map((e) => e.attributes('data-name'));
    expect(names()).toEqual(['projects']);
    expect(w.find('[data-testid="fp-choose"]').text()).toBe('Choose this folder');
    await w.find('[data-testid="fp-list"]').trigger('keydown', { key: 'Enter' });
    await flushPromises();
    expect(names()).toEqual(['site']);
    await w.find('[data-testid="fp-choose"]').trigger('click');
    expect(w.emitted('pick')).toEqual([['/home/me/projects']]);
  });

  it('a folder path field opens the daemon-side picker in folder mode', async () => {
    w = mount(PathInput, { props: { modelValue: '', testid: 'share-path', folder: true, 'onUpdate:modelValue': (v: string) => w!.setProps({ modelValue: v }) }, attachTo: document.body });
    await w.find('[data-testid="share-path-browse"]').trigger('click');
    await flushPromises();
    const picker = w.findComponent(FilePicker);
    expect(picker.props('mode')).toBe('folder');
    await picker.find('[data-testid="fp-choose"]').trigger('click');
    await flushPromises();
    expect((w.find('[data-testid="share-path"]').element as HTMLInputElement).value).toBe('/home/me');
    expect(rpc.callsOf('files.list').length).toBeGreaterThan(0);
  });
});
