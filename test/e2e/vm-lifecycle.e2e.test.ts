// A user's whole path through the GUI: create the test guest in the wizard, start it, use both consoles, pause, resume, shut down.
import { describe, expect, it } from 'vitest';
import { guestPaths, GUEST_READY_MARKER } from '../guest/guest.js';
import { useHarness } from './harness.js';
import { MainWindowPage } from './pages/MainWindowPage.js';
import { WizardPage } from './pages/WizardPage.js';
import { ConsolePage } from './pages/ConsolePage.js';

const e2e = useHarness();

describe('VM lifecycle through the GUI', () => {
  it('creates, boots, talks to, pauses, resumes and shuts down the test guest', { timeout: 300_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const main = new MainWindowPage(e2e.h.page);
    const wizard = new WizardPage(e2e.h.page);
    const cons = new ConsolePage(e2e.h.page);

    await main.open(e2e.h.server.url);
    await main.emptyState.waitFor();
    await e2e.h.shot('01-empty-state');

    // ---- the wizard ----
    await main.toolbar('new').click();
    await wizard.waitForStep('name');
    await wizard.setName('e2e guest');
    await e2e.h.shot('02-wizard-name');
    await wizard.next();
    await wizard.waitForStep('media');
    // tty0 first, ttyS0 last: the last console= is /dev/console (the serial shell); VGA still shows the kernel log.
    await wizard.directKernel(kernel, initrd, 'console=tty0 console=ttyS0');
    await e2e.h.shot('03-wizard-media');
    await wizard.next();
    await wizard.waitForStep('hardware');
    await wizard.hardware({ cpus: 1, memoryMiB: 256, accel: 'tcg' });
    await e2e.h.shot('04-wizard-hardware');
    await wizard.next();
    await wizard.waitForStep('disk');
    await wizard.diskGiB(0);
    await wizard.next();
    await wizard.waitForStep('network');
    await wizard.next();
    await wizard.waitForStep('summary');
    await e2e.h.shot('05-wizard-summary');
    await wizard.create();

    await main.waitForState('e2e guest', 'stopped');
    await main.details.getByText('console=tty0 console=ttyS0').waitFor();
    await e2e.h.shot('06-main-window-stopped');

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
    // The shell prompt; a late kernel line may follow it on the same line ("/ # [ 5.7] IPv6: …").
    await cons.waitForSerial(/^\S* ?[#$](?: |$)/m, 30_000);
    await cons.waitForQuiet();
    await cons.typeSerial('echo $((6*7))\n');
    await cons.waitForSerial(/^42\s*$/m, 30_000);
    await e2e.h.shot('07-console-serial');

    // Search the scrollback (addon-search) for the boot marker.
    await e2e.h.page.getByTestId('serial-search').fill(GUEST_READY_MARKER);
    await e2e.h.page.getByTestId('serial-search-next').click();
    expect(await e2e.h.page.evaluate(() => (document.querySelector('[data-testid="serial-terminal"]') as HTMLElement & { vmdeskTerminal?: { getSelection(): string } }).vmdeskTerminal?.getSelection())).toBe(GUEST_READY_MARKER);

    // ---- display ----
    await cons.displayTab();
    await e2e.h.page.locator('[data-testid="display-status"]', { hasText: 'connected' }).waitFor({ timeout: 30_000 });
    await expect.poll(() => cons.displayLitPixels(), { timeout: 30_000, interval: 500 }).toBeGreaterThan(500);
    await e2e.h.shot('08-console-display');
    const [download] = await Promise.all([e2e.h.page.waitForEvent('download'), e2e.h.page.getByTestId('display-screenshot').click()]);
    expect(download.suggestedFilename()).toMatch(/^e2e guest-.*\.png$/);
    const png = await import('node:fs').then((fs) => download.path().then((p) => fs.readFileSync(p)));
    expect(png.subarray(1, 4).toString()).toBe('PNG');

    // ---- pause / resume ----
    await cons.button('pause').click();
    await cons.waitForState('paused', 30_000);
    await e2e.h.shot('09-console-paused');
    await cons.button('resume').click();
    await cons.waitForState('running', 30_000);

    // ---- reopening the console replays what the guest already printed (the serial log) ----
    await e2e.h.page.getByTestId('console-back').click();
    await main.toolbar('console').click();
    await cons.waitOpen();
    await cons.serialTab();
    const replayed = await cons.waitForSerial(/^42\s*$/m, 15_000);
    // The log and the engine's own replay overlap: the user sees the boot once, not twice.
    expect(replayed.split(GUEST_READY_MARKER).length - 1).toBe(1);

    // ---- back to the list: live thumbnail, then shut down ----
    await e2e.h.page.getByTestId('console-back').click();
    await main.waitForState('e2e guest', 'running');
    await e2e.h.page.getByTestId('vm-thumb').waitFor({ timeout: 30_000 });
    await main.toolbar('settings').click();
    await e2e.h.page.getByTestId('settings-tab-system').click();
    await e2e.h.page.getByTestId('settings-locked').waitFor();
    expect(await e2e.h.page.getByTestId('field-cpus').isDisabled()).toBe(true);
    await e2e.h.shot('10-settings-locked-while-running');
    await e2e.h.page.getByTestId('settings-cancel').click();
    await e2e.h.shot('11-main-window-running');

    await main.toolbar('stop').click();
    await main.waitForState('e2e guest', 'stopped', 90_000);
    await main.details.getByTestId('details-last-exit').waitFor();
    await e2e.h.shot('12-main-window-after-shutdown');

    // The page ran under the strict CSP without a single violation or script error.
    expect(e2e.h.pageErrors.filter((e) => !/favicon/.test(e))).toEqual([]);
  });
});
