// Changing a stopped VM's settings and deleting it through the GUI; the list follows the server's events.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { guestPaths } from '../guest/guest.js';
import { launchBrowser, openHarness, type Harness } from './harness.js';
import { MainWindowPage } from './pages/MainWindowPage.js';

let browser: Browser;
let h: Harness;

beforeAll(async () => {
  browser = await launchBrowser();
  h = await openHarness(browser);
});

afterAll(async () => {
  await h?.dispose();
  await browser?.close();
});

describe('settings and delete', () => {
  it('edits CPUs, memory and name of a stopped VM, then deletes it', { timeout: 120_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const main = new MainWindowPage(h.page);
    await main.open(h.server.url);
    await main.emptyState.waitFor();

    // Made outside the GUI (as the CLI would): the list picks it up from the pushed event.
    await h.core.create({ name: 'cli-made', cpus: 1, memoryMiB: 128, directKernel: { kernel, initrd, cmdline: 'console=ttyS0' }, network: [{ mode: 'none', forwards: [] }] });
    await main.waitForState('cli-made', 'stopped');
    await main.select('cli-made');

    await main.toolbar('settings').click();
    await h.page.getByTestId('settings-name').fill('renamed');
    await h.page.getByTestId('settings-tab-system').click();
    await h.page.getByTestId('field-cpus').fill('2');
    await h.page.getByTestId('field-memory').fill('384');
    await h.shot('30-settings-dialog');
    await h.page.getByTestId('settings-save').click();
    await h.page.getByTestId('settings').waitFor({ state: 'detached' });

    await main.item('renamed').waitFor();
    expect(await main.details.getByTestId('details-cpus').textContent()).toBe('2');
    expect(await main.details.getByTestId('details-memory').textContent()).toBe('384 MiB');
    const onDisk = await h.core.get('renamed');
    expect(onDisk.config).toMatchObject({ cpus: 2, memoryMiB: 384, name: 'renamed' });

    await main.details.getByTestId('tab-snapshots').click();
    await main.details.getByTestId('snapshots-pane').waitFor();
    await h.shot('31-snapshots-tab');

    await main.toolbar('delete').click();
    await h.page.getByTestId('delete-dialog').waitFor();
    await h.shot('32-delete-dialog');
    await h.page.getByTestId('delete-confirm').click();
    await main.emptyState.waitFor();
    expect(await h.core.list()).toEqual([]);
    expect(h.pageErrors).toEqual([]);
  });
});
