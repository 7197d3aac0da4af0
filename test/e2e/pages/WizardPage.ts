// Page object for the New VM wizard: one method per page, plus the inline error of any field.
import type { Locator, Page } from 'playwright-core';

export class WizardPage {
  constructor(readonly page: Page) {}

  get root(): Locator {
    return this.page.getByTestId('wizard');
  }

  async waitForStep(key: 'name' | 'media' | 'hardware' | 'disk' | 'network' | 'summary'): Promise<void> {
    await this.page.getByTestId(`wizard-step-${key}`).waitFor();
  }

  error(field: string): Locator {
    return this.page.getByTestId(`error-${field}`);
  }

  async setName(name: string): Promise<void> {
    await this.page.getByTestId('field-name').fill(name);
  }

  async next(): Promise<void> {
    await this.page.getByTestId('wizard-next').click();
  }

  async back(): Promise<void> {
    await this.page.getByTestId('wizard-back').click();
  }

  async directKernel(kernel: string, initrd: string, cmdline: string): Promise<void> {
    await this.page.getByTestId('media-kernel').check();
    await this.page.getByTestId('field-kernel').fill(kernel);
    await this.page.getByTestId('field-initrd').fill(initrd);
    await this.page.getByTestId('field-cmdline').fill(cmdline);
  }

  async hardware(opts: { cpus?: number | string; memoryMiB?: number; accel?: string }): Promise<void> {
    if (opts.cpus !== undefined) await this.page.getByTestId('field-cpus').fill(String(opts.cpus));
    if (opts.memoryMiB !== undefined) await this.page.getByTestId('field-memory').fill(String(opts.memoryMiB));
    if (opts.accel) await this.page.getByTestId('field-accel').selectOption(opts.accel);
  }

  async diskGiB(n: number): Promise<void> {
    await this.page.getByTestId('field-disk-size').fill(String(n));
  }

  async noNetwork(): Promise<void> {
    await this.page.getByTestId('net-0-mode').selectOption('none');
  }

  async create(): Promise<void> {
    await this.page.getByTestId('wizard-create').click();
    await this.root.waitFor({ state: 'detached', timeout: 30_000 });
  }
}
