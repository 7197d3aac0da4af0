// Page object for the main window: toolbar, VM list, details pane, empty state.
import type { Locator, Page } from 'playwright-core';

export type ToolbarAction = 'new' | 'import' | 'settings' | 'start' | 'pause' | 'resume' | 'reset' | 'stop' | 'kill' | 'console' | 'delete';

export class MainWindowPage {
  constructor(readonly page: Page) {}

  async open(url: string): Promise<void> {
    await this.page.goto(url);
    await this.page.getByTestId('main-window').waitFor();
  }

  get emptyState(): Locator {
    return this.page.getByTestId('empty-state');
  }

  get list(): Locator {
    return this.page.getByTestId('vm-list');
  }

  item(name: string): Locator {
    return this.page.locator(`[data-testid="vm-item"][data-vm-name="${name}"]`);
  }

  async stateOf(name: string): Promise<string | null> {
    return this.item(name).getAttribute('data-vm-state');
  }

  /** Waits until the list shows the VM in the given state (pushed by server events, no reload). */
  async waitForState(name: string, state: string, timeout = 60_000): Promise<void> {
    await this.page.locator(`[data-testid="vm-item"][data-vm-name="${name}"][data-vm-state="${state}"]`).waitFor({ timeout });
  }

  toolbar(action: ToolbarAction): Locator {
    return this.page.getByTestId(`tb-${action}`);
  }

  /** Power off (or reset) from the toolbar: the button asks first; this confirms. */
  async confirmed(action: 'kill' | 'reset'): Promise<void> {
    await this.toolbar(action).click();
    const dialog = this.page.getByTestId(action === 'kill' ? 'confirm-kill' : 'confirm-reset');
    await dialog.getByTestId('confirm-ok').click();
    await dialog.waitFor({ state: 'detached' });
  }

  async select(name: string): Promise<void> {
    await this.item(name).click();
  }

  get details(): Locator {
    return this.page.getByTestId('vm-details');
  }

  get errors(): Locator {
    return this.page.getByTestId('error');
  }
}
