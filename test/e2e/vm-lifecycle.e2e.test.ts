// A user's whole path through the GUI: create the test guest in the wizard, start it, use both consoles, pause, resume, shut down.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { guestPaths, GUEST_READY_MARKER } from '../guest/guest.js';
import { launchBrowser, openHarness, type Harness } from './harness.js';
import { MainWindowPage } from './pages/MainWindowPage.js';
import { WizardPage } from './pages/WizardPage.js';
import { ConsolePage } from './pages/ConsolePage.js';

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

describe('VM lifecycle through the GUI', () => {
  it('creates, boots, talks to, pauses, resumes and shuts down the test guest', { timeout: 300_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const main = new MainWindowPage(h.page);
    const wizard = new WizardPage(h.page);
    const cons = new ConsolePage(h.page);

    await main.open(h.server.url);
    await main.emptyState.waitFor();
    await h.shot('01-empty-state');

    // ---- the wizard ----
    await main.toolbar('new').click();
    await wizard.waitForStep('name');
    await wizard.setName('e2e guest');
    await h.shot('02-wizard-name');
    await wizard.next();
    await wizard.waitForStep('media');
    // tty0 first, ttyS0 last: the last console= is /dev/console (the serial shell); VGA still shows the kernel log.
    await wizard.directKernel(kernel, initrd, 'console=tty0 console=ttyS0');
    await h.shot('03-wizard-media');
    await wizard.next();
    await wizard.waitForStep('hardware');
    await wizard.hardware({ cpus: 1, memoryMiB: 256, accel: 'tcg' });
    await h.shot('04-wizard-hardware');
    await wizard.next();
    await wizard.waitForStep('disk');
    await wizard.diskGiB(0);
    await wizard.next();
    await wizard.waitForStep('network');
    await wizard.next();
    await wizard.waitForStep('summary');
    await h.shot('05-wizard-summary');
    await wizard.create();

    await main.waitForState('e2e guest', 'stopped');
    await main.details.getByText('console=tty0 console=ttyS0').waitFor();
    await h.shot('06-main-window-stopped');

    // ---- start ----
    await main.toolbar('start').click();
    await main.waitForState('e2e guest', 'running', 60_000);
    expect(await main.details.getByTestId('details-accel').textContent()).toMatch(/TCG/);

    // ---- serial console ----
    await main.toolbar('console').click();
    await cons.waitOpen();
    await cons.serialTab();
    await cons.waitForSerial(new RegExp(GUEST_READY_MARKER), 120_000);
    // Wait for the shell prompt, then ask the guest to compute something we can recognise.
    await cons.waitForSerial(/[#$] ?\s*$/m, 30_000);
    await cons.waitForQuiet();
    await cons.typeSerial('echo $((6*7))\n');
    await cons.waitForSerial(/^42\s*$/m, 30_000);
    await h.shot('07-console-serial');

    // Search the scrollback (addon-search) for the boot marker.
    await h.page.getByTestId('serial-search').fill(GUEST_READY_MARKER);
    await h.page.getByTestId('serial-search-next').click();
    expect(await h.page.evaluate(() => (document.querySelector('[data-testid="serial-terminal"]') as HTMLElement & { vmdeskTerminal?: { getSelection(): string } }).vmdeskTerminal?.getSelection())).toBe(GUEST_READY_MARKER);

    // ---- display ----
    await cons.displayTab();
    await h.page.locator('[data-testid="display-status"]', { hasText: 'connected' }).waitFor({ timeout: 30_000 });
    await expect.poll(() => cons.displayLitPixels(), { timeout: 30_000, interval: 500 }).toBeGreaterThan(500);
    await h.shot('08-console-display');
    const [download] = await Promise.all([h.page.waitForEvent('download'), h.page.getByTestId('display-screenshot').click()]);
    expect(download.suggestedFilename()).toMatch(/^e2e guest-.*\.png$/);
    const png = await import('node:fs').then((fs) => download.path().then((p) => fs.readFileSync(p)));
    expect(png.subarray(1, 4).toString()).toBe('PNG');

    // ---- pause / resume ----
    await cons.button('pause').click();
    await cons.waitForState('paused', 30_000);
    await h.shot('09-console-paused');
    await cons.button('resume').click();
    await cons.waitForState('running', 30_000);

    // ---- reopening the console replays what the guest already printed (the serial log) ----
    await h.page.getByTestId('console-back').click();
    await main.toolbar('console').click();
    await cons.waitOpen();
    await cons.serialTab();
    const replayed = await cons.waitForSerial(/^42\s*$/m, 15_000);
    // The log and the engine's own replay overlap: the user sees the boot once, not twice.
    expect(replayed.split(GUEST_READY_MARKER).length - 1).toBe(1);

    // ---- back to the list: live thumbnail, then shut down ----
    await h.page.getByTestId('console-back').click();
    await main.waitForState('e2e guest', 'running');
    await h.page.getByTestId('vm-thumb').waitFor({ timeout: 30_000 });
    await main.toolbar('settings').click();
    await h.page.getByTestId('settings-tab-system').click();
    await h.page.getByTestId('settings-locked').waitFor();
    expect(await h.page.getByTestId('field-cpus').isDisabled()).toBe(true);
    await h.shot('10-settings-locked-while-running');
    await h.page.getByTestId('settings-cancel').click();
    await h.shot('11-main-window-running');

    await main.toolbar('stop').click();
    await main.waitForState('e2e guest', 'stopped', 90_000);
    await main.details.getByTestId('details-last-exit').waitFor();
    await h.shot('12-main-window-after-shutdown');

    // The page ran under the strict CSP without a single violation or script error.
    expect(h.pageErrors.filter((e) => !/favicon/.test(e))).toEqual([]);
  });
});
