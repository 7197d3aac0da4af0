// Page object for the wizard's "From the gallery" page: entries, an image added by URL, cloud-init, the download.
import type { Locator, Page } from 'playwright-core';

export class GalleryPage {
  constructor(readonly page: Page) {}

  entry(id: string): Locator {
    return this.page.getByTestId(`gallery-entry-${id}`);
  }

  status(id: string): Locator {
    return this.page.getByTestId(`gallery-status-${id}`);
  }

  async addSource(opts: { name: string; url: string; check: string; format?: 'qcow2' | 'raw' | 'iso' }): Promise<void> {
    await this.page.getByTestId('gallery-add-open').click();
    await this.page.getByTestId('source-name').fill(opts.name);
    await this.page.getByTestId('source-url').fill(opts.url);
    await this.page.getByTestId('source-check').fill(opts.check);
    if (opts.format) await this.page.getByTestId('source-format').selectOption(opts.format);
    await this.page.getByTestId('source-add').click();
    await this.page.getByTestId('gallery-add').waitFor({ state: 'detached' });
  }

  async cloudInit(opts: { user?: string; hostname?: string; packages?: string }): Promise<void> {
    if (opts.user !== undefined) await this.page.getByTestId('ci-user').fill(opts.user);
    if (opts.hostname !== undefined) await this.page.getByTestId('ci-hostname').fill(opts.hostname);
    if (opts.packages !== undefined) await this.page.getByTestId('ci-packages').fill(opts.packages);
  }

  get download(): Locator {
    return this.page.getByTestId('download-status');
  }

  async downloadState(): Promise<string | null> {
    return this.download.first().getAttribute('data-state');
  }

  async downloadLine(): Promise<string> {
    return (await this.page.getByTestId('download-line').first().textContent()) ?? '';
  }
}
