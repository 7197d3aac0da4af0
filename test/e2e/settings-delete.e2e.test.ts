// Changing a stopped VM's settings and deleting it through the GUI; the list follows the server's events.
import { describe, expect, it } from 'vitest';
import { guestPaths } from '../guest/guest.js';
import { useHarness } from './harness.js';
import { MainWindowPage } from './pages/MainWindowPage.js';

const e2e = useHarness();

describe('settings and delete', () => {
  it('edits CPUs, memory and name of a stopped VM, then deletes it', { timeout: 120_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const main = new MainWindowPage(e2e.h.page);
    await main.open(e2e.h.server.url);
    await main.emptyState.waitFor();

    // Made outside the GUI, by another client of the daemon (as the CLI would): the list picks it up from the
    // event the daemon pushes to every client.
    await e2e.h.call('vm.create', { name: 'cli-made', cpus: 1, memoryMiB: 128, directKernel: { kernel, initrd, cmdline: 'console=ttyS0' }, network: [{ mode: 'none', forwards: [] }] });
    await main.waitForState('cli-made', 'stopped');
    await main.select('cli-made');

    await main.toolbar('settings').click();
    await e2e.h.page.getByTestId('settings-name').fill('renamed');
    await e2e.h.page.getByTestId('settings-tab-system').click();
    await e2e.h.page.getByTestId('field-cpus').fill('2');
    await e2e.h.page.getByTestId('field-memory').fill('384');
    await e2e.h.shot('30-settings-dialog');
    await e2e.h.page.getByTestId('settings-save').click();
    await e2e.h.page.getByTestId('settings').waitFor({ state: 'detached' });

    await main.item('renamed').waitFor();
    expect(await main.details.getByTestId('details-cpus').textContent()).toBe('2');
    expect(await main.details.getByTestId('details-memory').textContent()).toBe('384 MiB');
    const onDisk = await e2e.h.call('vm.get', { id: 'renamed' });
    expect(onDisk.config).toMatchObject({ cpus: 2, memoryMiB: 384, name: 'renamed' });

    await main.details.getByTestId('tab-snapshots').click();
    await main.details.getByTestId('snapshots-pane').waitFor();
    await e2e.h.shot('31-snapshots-tab');

    await main.toolbar('delete').click();
    await e2e.h.page.getByTestId('delete-dialog').waitFor();
    await e2e.h.shot('32-delete-dialog');
    await e2e.h.page.getByTestId('delete-confirm').click();
    await main.emptyState.waitFor();
    expect(await e2e.h.call('vm.list', {})).toEqual([]);
    expect(e2e.h.pageErrors).toEqual([]);
  });
});
