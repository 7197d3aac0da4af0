// Page object for the details pane's live parts (usage, guest, network) and the toolbar's save-state, move and
// image-cache verbs.
import type { Locator, Page } from 'playwright-core';

export class VmSurfacePage {
  constructor(readonly page: Page) {}

  get details(): Locator {
    return this.page.getByTestId('vm-details');
  }

  usageValue(key: 'cpu' | 'memory' | 'disk' | 'net'): Locator {
    return this.page.getByTestId(`usage-${key}-value`);
  }

  get guestAddresses(): Locator {
    return this.page.getByTestId('guest-addresses');
  }

  async addForward(hostPort: number, guestPort: number, protocol: 'tcp' | 'udp' = 'tcp'): Promise<void> {
    await this.page.getByTestId('forward-protocol').selectOption(protocol);
    await this.page.getByTestId('forward-host').fill(String(hostPort));
    await this.page.getByTestId('forward-guest').fill(String(guestPort));
    await this.page.getByTestId('forward-add').click();
    await this.forwardRow(hostPort, protocol).waitFor();
  }

  forwardRow(hostPort: number, protocol: 'tcp' | 'udp' = 'tcp'): Locator {
    return this.page.getByTestId(`forward-${protocol}-${hostPort}`);
  }

  async removeForward(hostPort: number, protocol: 'tcp' | 'udp' = 'tcp'): Promise<void> {
    await this.page.getByTestId(`forward-remove-${protocol}-${hostPort}`).click();
    await this.forwardRow(hostPort, protocol).waitFor({ state: 'detached' });
  }

  link(adapter: number): Locator {
    return this.page.getByTestId(`adapter-${adapter}-link`);
  }

  linkDownChip(adapter: number): Locator {
    return this.page.getByTestId(`adapter-${adapter}-down`);
  }

  toolbar(action: 'suspend' | 'discard-state' | 'migrate' | 'images'): Locator {
    return this.page.getByTestId(`tb-${action}`);
  }
}
