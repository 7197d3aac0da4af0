// The Snapshots tab in a real browser against a real QEMU guest: take a live snapshot from the view, see its
// thumbnail in the tree and in the timeline, power the VM off, restore the snapshot (the dialog saying the VM will
// be running afterwards) and see the guest run again.
import { describe, expect, it } from 'vitest';
import { guestPaths, GUEST_READY_MARKER } from '../guest/guest.js';
import { useHarness } from './harness.js';
import { MainWindowPage } from './pages/MainWindowPage.js';
import { WizardPage } from './pages/WizardPage.js';
import { ConsolePage } from './pages/ConsolePage.js';
import { SnapshotsPage } from './pages/snapshots-page.js';

const e2e = useHarness();

const VM = 'snap guest';
const SNAP = 'Booted shell';

describe('Snapshots tab', () => {
  it('takes a live snapshot with a thumbnail, shows it in tree and timeline, and restores it', { timeout: 420_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const main = new MainWindowPage(e2e.h.page);
    const wizard = new WizardPage(e2e.h.page);
    const cons = new ConsolePage(e2e.h.page);
    const snaps = new SnapshotsPage(e2e.h.page);

    // ---- a VM with a qcow2 disk (snapshots live in it), booted to its shell ----
    await main.open(e2e.h.server.url);
    await main.emptyState.waitFor();
    await main.toolbar('new').click();
    await wizard.waitForStep('name');
    await wizard.setName(VM);
    await wizard.next();
    await wizard.waitForStep('media');
    await wizard.directKernel(kernel, initrd, 'console=tty0 console=ttyS0');
    await wizard.next();
    await wizard.waitForStep('hardware');
    await wizard.hardware({ cpus: 1, memoryMiB: 256, accel: 'tcg' });
    await wizard.next();
    await wizard.waitForStep('disk');
    await wizard.diskGiB(1);
    await wizard.next();
    await wizard.waitForStep('network');
    await wizard.next();
    await wizard.waitForStep('summary');
    await wizard.create();
    await main.waitForState(VM, 'stopped');

    await main.toolbar('start').click();
    await main.waitForState(VM, 'running', 60_000);
    await main.toolbar('console').click();
    await cons.waitOpen();
    await cons.serialTab();
    await cons.waitForSerial(new RegExp(GUEST_READY_MARKER), 120_000);
    // The shell prompt; a late kernel line may follow it on the same line ("/ # [ 5.7] IPv6: …").
    await cons.waitForSerial(/^\S* ?[#$](?: |$)/m, 30_000);
    await cons.waitForQuiet();
    await e2e.h.page.getByTestId('console-back').click();
    await main.waitForState(VM, 'running');
    await main.select(VM);

    // ---- the Snapshots tab: empty, then take one by name ----
    await snaps.open();
    await snaps.empty.waitFor();
    await snaps.take(SNAP, 'taken by the e2e test');
    expect(await snaps.error.count(), (await snaps.error.textContent().catch(() => null)) ?? '').toBe(0);
    await snaps.waitIdle();

    // ---- tree mode: the node, selected, with its thumbnail loaded in the details ----
    await snaps.treeMode();
    await snaps.treeNode(SNAP).waitFor();
    expect(await snaps.treeNode(SNAP).getAttribute('aria-selected')).toBe('true');
    await expect.poll(() => snaps.currentNode.textContent()).toMatch(/Current State\s*running/);
    await expect.poll(() => snaps.details.textContent()).toMatch(/Live \(memory and disks\)/);
    await snaps.thumb.waitFor({ timeout: 30_000 });
    await expect.poll(() => snaps.imgNaturalWidth(snaps.thumb), { timeout: 30_000, interval: 250 }).toBeGreaterThan(0);
    await e2e.h.shot('40-snapshots-tree');

    // ---- timeline mode: the node carries the thumbnail, and the details still show it ----
    await snaps.timelineMode();
    await snaps.timelineNode(SNAP).waitFor();
    await expect.poll(() => snaps.timelineThumbNaturalWidth(SNAP), { timeout: 30_000, interval: 250 }).toBeGreaterThan(0);
    expect(await snaps.thumb.isVisible()).toBe(true);
    expect(await snaps.imgNaturalWidth(snaps.thumb)).toBeGreaterThan(0);
    await e2e.h.shot('41-snapshots-timeline');

    // ---- power the VM off, then restore the snapshot from the view: the guest comes back running ----
    await main.confirmed('kill');
    await main.waitForState(VM, 'stopped', 60_000);
    await snaps.treeMode();
    await expect.poll(() => snaps.currentNode.textContent(), { timeout: 30_000 }).toMatch(/Current State\s*stopped/);
    await snaps.treeNode(SNAP).click();
    await expect.poll(() => snaps.treeNode(SNAP).getAttribute('aria-selected')).toBe('true');
    // The dialog says what will happen before anything does: the stopped VM will be running afterwards.
    await snaps.restore({ saveCurrent: true, confirm: false });
    expect(await snaps.restoreDialog.getByTestId('snap-restore-headline').textContent()).toBe(`“${VM}” is stopped now and will be running afterwards: this live snapshot brings back a running guest.`);
    expect(await snaps.restoreDialog.getByTestId('snap-restore-steps').textContent()).toMatch(new RegExp(`saved first as "Before restoring ${SNAP}" \\(disks only\\)`));
    await e2e.h.shot('42-snapshots-restore-dialog');
    await e2e.h.page.getByTestId('snap-restore-confirm').click();
    await snaps.progress.waitFor({ timeout: 10_000 }).catch(() => {});
    await snaps.waitIdle();
    expect(await snaps.error.count(), (await snaps.error.textContent().catch(() => null)) ?? '').toBe(0);
    await main.waitForState(VM, 'running', 120_000);
    await expect.poll(() => snaps.currentNode.textContent(), { timeout: 30_000 }).toMatch(/Current State\s*running/);
    // The stopped state was saved first (disks only), as the checkbox asked.
    await snaps.treeNode(`Before restoring ${SNAP}`).waitFor();
    expect(await main.details.getByTestId('details-state').textContent()).toBe('running');

    // The restored guest is where the snapshot left it: at its shell, answering.
    await main.toolbar('console').click();
    await cons.waitOpen();
    await cons.serialTab();
    await cons.typeSerial('echo $((6*7))\n');
    await cons.waitForSerial(/^42\s*$/m, 60_000);
    await e2e.h.page.getByTestId('console-back').click();
    await main.waitForState(VM, 'running');

    expect(e2e.h.pageErrors.filter((e) => !/favicon/.test(e))).toEqual([]);
  });
});
