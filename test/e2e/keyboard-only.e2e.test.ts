// Keyboard only, in real Chromium against a real daemon and the real test guest: create a VM in the wizard, start
// it, take live snapshots from the Snapshots tab, restore one through its dialog and power the VM off through its
// confirmation. Every step is a key press (Tab, Shift+Tab, arrows, Enter, Space, typing); locators only read
// where the focus is and what the page shows. A step the keyboard cannot reach fails here with where the focus was.
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { guestPaths } from '../guest/guest.js';
import { useHarness } from './harness.js';
import { MainWindowPage } from './pages/MainWindowPage.js';

const e2e = useHarness();

const VM = 'kbd guest';
const SNAP = 'Keyboard snap';
const LATER = 'Keyboard later';

/** data-testid (else tag, role and label) of the focused element, for assertions and failure messages. */
async function focused(page: Page): Promise<string> {
  return page.evaluate(() => {
    const a = document.activeElement as HTMLElement | null;
    if (!a || a === document.body) return '<body>';
    return a.getAttribute('data-testid') ?? `<${a.tagName.toLowerCase()} role=${a.getAttribute('role') ?? ''} label=${a.getAttribute('aria-label') ?? a.textContent?.trim().slice(0, 30) ?? ''}>`;
  });
}

/** Whether the focus is inside the element with this test id. */
async function focusInside(page: Page, testid: string): Promise<boolean> {
  return page.evaluate((t) => !!document.querySelector(`[data-testid="${t}"]`)?.contains(document.activeElement), testid);
}

/** Presses Tab (or Shift+Tab) until the element with this test id has the focus; fails after `max` presses. */
async function tabTo(page: Page, testid: string, opts: { back?: boolean; max?: number } = {}): Promise<number> {
  const max = opts.max ?? 40;
  const seen: string[] = [];
  for (let i = 0; i <= max; i++) {
    const f = await focused(page);
    if (f === testid) return i;
    seen.push(f);
    if (i < max) await page.keyboard.press(opts.back ? 'Shift+Tab' : 'Tab');
  }
  throw new Error(`${testid} not reached with ${max} × ${opts.back ? 'Shift+Tab' : 'Tab'}; the focus went through: ${seen.join(' → ')}`);
}

async function waitFocus(page: Page, testid: string, timeout = 10_000): Promise<void> {
  await expect.poll(() => focused(page), { timeout, interval: 100 }).toBe(testid);
}

/** Replaces the text of the focused field by typing (select all, then type). */
async function retype(page: Page, text: string): Promise<void> {
  await page.keyboard.press('Control+A');
  await page.keyboard.type(text);
}

describe('keyboard only', () => {
  it('creates, starts, snapshots, restores and powers off a VM without the mouse', { timeout: 240_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const page = e2e.h.page;
    const main = new MainWindowPage(page);
    await main.open(e2e.h.server.url);
    await main.emptyState.waitFor();

    // ---- New VM: the toolbar's first button, reached by Tab from the top of the page ----
    await tabTo(page, 'tb-new');
    await page.keyboard.press('Enter');
    await page.getByTestId('wizard-step-name').waitFor();
    // The dialog took the focus, on its first field.
    await waitFocus(page, 'field-name');
    expect(await focusInside(page, 'wizard')).toBe(true);
    await page.keyboard.type(VM);
    await page.keyboard.press('Enter'); // Enter in a text field goes to the next page

    await page.getByTestId('wizard-step-media').waitFor();
    await tabTo(page, 'media-kernel');
    await page.keyboard.press('Space');
    expect(await page.getByTestId('media-kernel').isChecked()).toBe(true);
    await tabTo(page, 'field-kernel');
    await page.keyboard.type(kernel);
    await tabTo(page, 'field-initrd');
    await page.keyboard.type(initrd);
    await tabTo(page, 'field-cmdline');
    await retype(page, 'console=ttyS0');
    await page.keyboard.press('Enter');

    await page.getByTestId('wizard-step-hardware').waitFor();
    await tabTo(page, 'field-memory');
    await retype(page, '128');
    await page.keyboard.press('Enter');

    await page.getByTestId('wizard-step-disk').waitFor();
    // A small qcow2 disk: the snapshots live in it.
    await tabTo(page, 'field-disk-size');
    await retype(page, '1');
    await page.keyboard.press('Enter');

    await page.getByTestId('wizard-step-network').waitFor();
    await tabTo(page, 'wizard-next'); // the default network
    await page.keyboard.press('Enter');

    await page.getByTestId('wizard-step-summary').waitFor();
    expect(await page.getByTestId('summary-media').textContent()).toContain(kernel);
    await tabTo(page, 'wizard-create');
    await page.keyboard.press('Enter');
    await page.getByTestId('wizard').waitFor({ state: 'detached', timeout: 30_000 });
    // The focus came back to the button that opened the wizard.
    await waitFocus(page, 'tb-new');
    await main.waitForState(VM, 'stopped');
    const vm = (await e2e.h.call('vm.list', {})).find((v) => v.name === VM)!;
    expect(vm).toBeTruthy();
    const config = await e2e.h.call('vm.get', { id: vm.id });
    expect(config.config.memoryMiB).toBe(128);

    // ---- Start from the toolbar ----
    await expect.poll(() => page.getByTestId('details-name').textContent()).toBe(VM);
    await tabTo(page, 'tb-start');
    await page.keyboard.press('Enter');
    await main.waitForState(VM, 'running', 60_000);
    // Start disabled itself; the focus stayed in the toolbar rather than falling to <body>.
    await expect.poll(() => focused(page)).toMatch(/^tb-/);

    // ---- Snapshots tab: the tab list is one Tab stop; arrows pick the tab ----
    await tabTo(page, 'tab-details');
    await page.keyboard.press('End');
    await waitFocus(page, 'tab-snapshots');
    await page.getByTestId('snapshot-view').waitFor();
    await page.getByTestId('snap-empty').waitFor({ timeout: 30_000 });

    /** Take snapshot… → the dialog takes the focus on the name → type it → Enter submits → the focus returns. */
    const take = async (name: string): Promise<void> => {
      await tabTo(page, 'snap-take-open');
      await page.keyboard.press('Enter');
      await page.getByTestId('snap-take-form').waitFor();
      await waitFocus(page, 'snap-take-name');
      expect(await focusInside(page, 'snap-take-form')).toBe(true);
      await retype(page, name);
      await page.keyboard.press('Enter');
      await page.getByTestId('snap-take-form').waitFor({ state: 'detached', timeout: 120_000 });
      expect(await page.getByTestId('snap-error').count()).toBe(0);
      await page.getByTestId('snap-progress').waitFor({ state: 'detached', timeout: 120_000 });
      await waitFocus(page, 'snap-take-open');
    };
    await take(SNAP);
    await take(LATER);

    let listing = await e2e.h.call('snapshot.list', { id: vm.id });
    const snap = listing.snapshots.find((s) => s.name === SNAP)!;
    const later = listing.snapshots.find((s) => s.name === LATER)!;
    expect(snap && later).toBeTruthy();
    // Taking a snapshot moves "you are here" to it: the later one is current now.
    expect(listing.current).toBe(later.id);

    // ---- Restore the first one: the tree (one Tab stop, arrows walk it), Enter opens its details ----
    if (!(await page.getByTestId('snap-tree').count())) {
      await tabTo(page, 'snap-mode-tree');
      await page.keyboard.press('Enter');
      await page.getByTestId('snap-tree').waitFor();
    }
    await tabTo(page, 'snap-tree');
    await page.keyboard.press('Home');
    await expect.poll(() => page.getByTestId(`snap-node-${SNAP}`).getAttribute('aria-selected')).toBe('true');
    await page.keyboard.press('Enter');
    await waitFocus(page, 'snap-restore');
    await page.keyboard.press('Enter');
    await page.getByTestId('snap-restore-dialog').waitFor();
    expect(await focusInside(page, 'snap-restore-dialog')).toBe(true);
    // Once the plan has come, the focus is on Restore: Enter confirms.
    await page.getByTestId('snap-restore-steps').waitFor({ timeout: 30_000 });
    await waitFocus(page, 'snap-restore-confirm');
    await page.keyboard.press('Enter');
    await page.getByTestId('snap-restore-dialog').waitFor({ state: 'detached' });
    await page.getByTestId('snap-progress').waitFor({ state: 'detached', timeout: 120_000 });
    expect(await page.getByTestId('snap-error').count()).toBe(0);
    await page.getByTestId('snap-notice').waitFor();
    // The focus did not fall to <body> when the dialog closed onto a button the restore disabled: it is back on
    // Restore… (or on the tree when that button is gone).
    await expect.poll(() => focused(page)).toMatch(/^(snap-restore|snap-tree)$/);

    listing = await e2e.h.call('snapshot.list', { id: vm.id });
    expect(listing.current).toBe(snap.id);
    expect(listing.snapshots.find((s) => s.id === snap.id)?.isCurrent).toBe(true);
    // The state before the restore was kept, as the dialog's default asked.
    expect(listing.snapshots.some((s) => s.name === `Before restoring ${SNAP}`)).toBe(true);
    expect((await e2e.h.call('vm.list', {})).find((v) => v.id === vm.id)?.state).toBe('running');
    await main.waitForState(VM, 'running');

    // ---- Power off: back to the toolbar with Shift+Tab; the confirmation starts on Cancel ----
    await tabTo(page, 'tb-kill', { back: true, max: 60 });
    await page.keyboard.press('Enter');
    await page.getByTestId('confirm-kill').waitFor();
    await waitFocus(page, 'confirm-cancel');
    expect(await focusInside(page, 'confirm-kill')).toBe(true);
    await page.keyboard.press('Tab');
    await waitFocus(page, 'confirm-ok');
    await page.keyboard.press('Enter');
    await page.getByTestId('confirm-kill').waitFor({ state: 'detached' });
    await main.waitForState(VM, 'stopped', 60_000);
    // Power off disabled itself once the VM stopped: the focus went to the verb that applies now.
    await waitFocus(page, 'tb-start');
    expect((await e2e.h.call('vm.list', {})).find((v) => v.id === vm.id)?.state).toBe('stopped');

    expect(e2e.h.pageErrors.filter((e) => !/favicon/.test(e))).toEqual([]);
  });
});
