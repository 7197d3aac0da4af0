// Page object for a VM's Settings dialog: its tabs, network cards, shared folders and device toggles.
import type { Locator, Page } from 'playwright-core';

export type SettingsTab = 'general' | 'system' | 'media' | 'network' | 'resources' | 'guest' | 'devices';

export class SettingsPage {
  constructor(readonly page: Page) {}

  get root(): Locator {
    return this.page.getByTestId('settings');
  }

  field(testid: string): Locator {
    return this.root.getByTestId(testid);
  }

  async tab(t: SettingsTab): Promise<void> {
    await this.field(`settings-tab-${t}`).click();
    await this.root.locator(`[role="tabpanel"][aria-labelledby="settings-tab-${t}"]`).waitFor();
  }

  /** Sets card i (eth i) to a mode; internal:NAME names the network. */
  async card(i: number, mode: string, opts: { model?: string } = {}): Promise<void> {
    const [m, name] = mode.split(':');
    await this.field(`net-${i}-mode`).selectOption(m!);
    if (name !== undefined) await this.field(`net-${i}-network`).fill(name);
    if (opts.model) await this.field(`net-${i}-model`).selectOption(opts.model);
  }

  async addCard(): Promise<void> {
    await this.field('add-adapter').click();
  }

  /** Adds a shared folder by typing its path (the picker is the FilePicker's own test). */
  async addShare(hostPath: string, tag: string, readOnly = false): Promise<void> {
    await this.field('share-path').fill(hostPath);
    await this.field('share-tag').fill(tag);
    if (readOnly) await this.field('share-readonly').check();
    await this.field('share-add').click();
    await this.field(`share-${tag}`).waitFor();
  }

  async save(): Promise<void> {
    await this.field('settings-save').click();
    await this.root.waitFor({ state: 'detached' });
  }
}
