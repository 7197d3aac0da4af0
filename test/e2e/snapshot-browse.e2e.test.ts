// Browsing snapshots in a real browser against the real daemon, on a fake engine whose snapshots are instant (so
// the test can make branches, restores and scheduled snapshots in seconds and move the scheduler's clock): the
// timeline's keyboard (time, lanes, Enter, Delete asks, Escape, zoom), the restore dialog's consequences, retention
// of "Before restoring" snapshots, delete confirmation, the schedule set in the GUI and its snapshots in their own
// lane, and the layout of a 900×600 window.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { Page } from 'playwright-core';
import { registerEngine, unregisterEngine } from '../../main/engines/registry.js';
import { FAKE_FULL_KIND, fakeFullEngine } from '../unit/snapshot-fake-engine.js';
import { useHarness } from './harness.js';
import { MainWindowPage } from './pages/MainWindowPage.js';
import { SnapshotsPage } from './pages/snapshots-page.js';

const e2e = useHarness();
const VM = 'browse';

beforeAll(() => registerEngine(fakeFullEngine));
afterAll(() => unregisterEngine(FAKE_FULL_KIND));

// axe-core through page.evaluate (the page's CSP refuses injected <script> elements), on the snapshot view and
// any dialog open over it: critical and serious findings only.
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
async function axe(page: Page): Promise<string[]> {
  if (!(await page.evaluate('typeof window.axe === "object"'))) await page.evaluate(AXE);
  const r = (await page.evaluate(`window.axe.run({ include: [['[data-testid="snapshot-view"]']] }, { resultTypes: ['violations'] })`)) as {
    violations: { id: string; impact: string | null; nodes: { target: string[]; failureSummary?: string }[] }[];
  };
  return r.violations.filter((v) => v.impact === 'critical' || v.impact === 'serious').map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => `${n.target.join(' ')} (${(n.failureSummary ?? '').split('\n')[1] ?? ''})`).join('; ')}`);
}

async function snapNames(): Promise<{ name: string; auto?: string }[]> {
  return (await e2e.h.call('snapshot.list', { id: VM })).snapshots.map((s) => ({ name: s.name, auto: s.auto }));
}

describe('snapshot browsing', () => {
  it('walks the timeline with the keyboard: time, lanes, Enter, Delete asks, Escape, zoom', { timeout: 120_000 }, async () => {
    const { h } = e2e;
    await h.call('vm.create', { name: VM, engine: FAKE_FULL_KIND, memoryMiB: 256, diskBytes: 4 * 1024 * 1024, network: [{ mode: 'none', forwards: [] }] });
    await h.call('vm.start', { id: VM });
    // A ─ B ─ C, then back to A and on to D: D is on the path to "now" (lane 0), B ─ C a branch (lane 1).
    for (const n of ['A', 'B', 'C']) await h.call('snapshot.take', { id: VM, name: n });
    await h.call('snapshot.restore', { id: VM, snapshot: 'A', saveCurrent: false });
    await h.call('snapshot.take', { id: VM, name: 'D' });

    const main = new MainWindowPage(h.page);
    const snaps = new SnapshotsPage(h.page);
    await main.open(h.server.url);
    await main.waitForState(VM, 'running');
    await main.select(VM);
    await snaps.open();
    await snaps.timelineMode();
    const tl = h.page.getByTestId('snap-timeline');
    await tl.focus();

    await h.page.keyboard.press('End');
    await expect.poll(() => snaps.activeDescendant('snap-timeline')).toMatch(/^Current state, running: you are here/);
    await h.page.keyboard.press('ArrowLeft');
    await expect.poll(() => snaps.activeDescendant('snap-timeline')).toMatch(/^D, .*the current state comes from here/);
    await h.page.keyboard.press('ArrowLeft');
    await expect.poll(() => snaps.activeDescendant('snap-timeline')).toMatch(/^C, .*branch lane 2/);
    await expect.poll(() => snaps.details.locator('h3').textContent()).toBe('C');
    // Up: the nearest snapshot in the lane above (D is one step from C, A two).
    await h.page.keyboard.press('ArrowUp');
    await expect.poll(() => snaps.activeDescendant('snap-timeline')).toMatch(/^D, /);
    await h.page.keyboard.press('ArrowDown');
    await expect.poll(() => snaps.activeDescendant('snap-timeline')).toMatch(/^C, /);
    await h.page.keyboard.press('Home');
    await expect.poll(() => snaps.activeDescendant('snap-timeline')).toMatch(/^A, /);
    await h.page.keyboard.press('ArrowRight');
    await expect.poll(() => snaps.activeDescendant('snap-timeline')).toMatch(/^B, /);
    await h.shot('50-snapshot-timeline-keyboard');

    // Delete asks (and says what goes); Escape closes the dialog and the focus comes back to the timeline.
    await h.page.keyboard.press('Delete');
    await snaps.deleteDialog.waitFor();
    expect(await snaps.deleteDialog.textContent()).toMatch(/Delete “B”\?/);
    expect(await snaps.focused()).toBe('snap-delete-cancel');
    await h.page.keyboard.press('Tab');
    await h.page.keyboard.press('Tab');
    await h.page.keyboard.press('Tab');
    await h.page.keyboard.press('Tab');
    expect(await snaps.deleteDialog.evaluate((d) => d.contains(document.activeElement))).toBe(true);
    await h.page.keyboard.press('Escape');
    await snaps.deleteDialog.waitFor({ state: 'detached' });
    expect(await snaps.focused()).toBe('snap-timeline');
    expect((await snapNames()).map((s) => s.name)).toEqual(['A', 'B', 'C', 'D']);

    // Enter opens the snapshot: the focus goes to its details' first action.
    await h.page.keyboard.press('Enter');
    expect(await snaps.focused()).toBe('snap-restore');

    // Zoom from the keyboard and the buttons.
    await tl.focus();
    const zoom = h.page.getByTestId('snap-tl-zoom');
    const before = await zoom.textContent();
    await h.page.keyboard.press('+');
    await expect.poll(() => zoom.textContent()).not.toBe(before);
    await h.page.getByTestId('snap-tl-fit').click();
    for (const n of ['A', 'B', 'C', 'D']) expect(await snaps.timelineNode(n).isVisible()).toBe(true);
  });

  it('states what a restore will do before it runs, and keeps only the newest 3 "Before restoring" snapshots', { timeout: 120_000 }, async () => {
    const { h } = e2e;
    const main = new MainWindowPage(h.page);
    const snaps = new SnapshotsPage(h.page);
    await h.call('vm.kill', { id: VM });
    await h.call('vm.update', { id: VM, patch: { memoryMiB: 320 } });
    await main.waitForState(VM, 'stopped');
    await snaps.treeMode();
    await snaps.treeNode('B').click();

    await snaps.restore({ confirm: false });
    const dlg = snaps.restoreDialog;
    expect(await dlg.getByTestId('snap-restore-headline').textContent()).toBe('“browse” is stopped now and will be running afterwards: this live snapshot brings back a running guest.');
    expect(await dlg.getByTestId('snap-restore-settings').textContent()).toMatch(/Memory\s*320 MiB\s*256 MiB/);
    expect(await dlg.getByTestId('snap-restore-steps').textContent()).toMatch(/saved first as "Before restoring B"/);
    await h.shot('51-snapshot-restore-dialog');
    // Without the safety snapshot, the plan says what is lost.
    await dlg.getByTestId('snap-save-current').setChecked(false);
    await expect.poll(() => dlg.getByTestId('snap-restore-steps').textContent()).toMatch(/is not saved/);
    await dlg.getByTestId('snap-save-current').setChecked(true);
    await expect.poll(() => dlg.getByTestId('snap-restore-steps').textContent()).toMatch(/saved first/);
    await h.page.getByTestId('snap-restore-confirm').click();
    await snaps.waitIdle();
    await main.waitForState(VM, 'running');
    expect(await h.page.getByTestId('snap-notice').textContent()).toMatch(/Restored “B”; the VM is running\. The previous state was saved as “Before restoring B”/);
    expect((await h.call('vm.get', { id: VM })).config!.memoryMiB).toBe(256);

    // Four more restores: retention keeps the newest three safety snapshots and says which it removed.
    for (let i = 0; i < 4; i++) {
      await snaps.treeNode('B').click();
      await snaps.restore();
      await snaps.waitIdle();
    }
    expect(await h.page.getByTestId('snap-notice').textContent()).toMatch(/Retention removed “Before restoring B.*”/);
    const safety = (await snapNames()).filter((s) => s.auto === 'safety');
    expect(safety).toHaveLength(3);
    // In the tree they are one group under B, closed; opening it shows them.
    const group = h.page.getByTestId('snap-group');
    await expect.poll(() => group.textContent()).toMatch(/3 automatic snapshots before restores/);
    await group.click();
    await h.page.keyboard.press('ArrowRight');
    for (const s of safety) await snaps.treeNode(s.name).waitFor();
    await h.shot('52-snapshot-tree-groups');
  });

  it('asks before deleting, says what goes and what it frees', { timeout: 60_000 }, async () => {
    const { h } = e2e;
    const snaps = new SnapshotsPage(h.page);
    await snaps.treeNode('A').click();
    await h.page.getByTestId('snap-delete').click();
    const dlg = snaps.deleteDialog;
    await dlg.waitFor();
    expect(await dlg.getByTestId('snap-delete-frees').textContent()).toMatch(/Frees 1000 B of saved memory/);
    await dlg.getByTestId('snap-delete-branch').check();
    await expect.poll(() => dlg.getByTestId('snap-delete-frees').textContent()).toMatch(/Frees [\d.]+ KiB of saved memory, and the disk blocks that only these snapshots hold/);
    expect(await dlg.getByTestId('snap-delete-list').textContent()).toMatch(/Deleted: “A”, /);
    await dlg.getByTestId('snap-delete-cancel').click();
    await dlg.waitFor({ state: 'detached' });
    expect((await snapNames()).some((s) => s.name === 'A')).toBe(true);

    await snaps.treeNode('C').click();
    await h.page.getByTestId('snap-tree').press('Delete');
    await dlg.waitFor();
    await h.page.getByTestId('snap-delete-confirm').click();
    await snaps.waitIdle();
    await snaps.treeNode('C').waitFor({ state: 'detached' });
    expect((await snapNames()).some((s) => s.name === 'C')).toBe(false);
  });

  it('sets a schedule in the GUI; the daemon\'s scheduled snapshots appear in their own lane, the newest 2 kept', { timeout: 120_000 }, async () => {
    const { h } = e2e;
    const snaps = new SnapshotsPage(h.page);
    await h.page.getByTestId('snap-auto-open').click();
    const dlg = h.page.getByTestId('snap-auto-dialog');
    await dlg.waitFor();
    await dlg.getByTestId('snap-schedule-on').check();
    await dlg.getByTestId('snap-schedule-every').fill('30');
    await dlg.getByTestId('snap-schedule-unit').selectOption('minutes');
    await dlg.getByTestId('snap-schedule-keep').fill('2');
    await dlg.getByTestId('snap-auto-save').click();
    await dlg.waitFor({ state: 'detached' });
    expect((await h.call('vm.get', { id: VM })).config!.snapshotSchedule).toEqual({ everyMinutes: 30, keep: 2 });
    await expect.poll(() => snaps.summary.textContent()).toMatch(/scheduled every 30 minutes, last 2 kept, next /);

    // Half an hour passes three times (the scheduler's clock is the test's).
    for (let i = 0; i < 3; i++) {
      const runs = await h.daemon.scheduler.runDue(Date.now() + 31 * 60_000);
      expect(runs.map((r) => r.error ?? r.taken?.name)).toHaveLength(1);
      expect(runs[0]!.error).toBeUndefined();
    }
    const scheduled = (await snapNames()).filter((s) => s.auto === 'scheduled');
    expect(scheduled).toHaveLength(2);
    await snaps.timelineMode();
    await h.page.getByTestId('snap-tl-fit').click();
    for (const s of scheduled) {
      const node = snaps.timelineNode(s.name);
      await node.waitFor();
      expect(await node.getAttribute('aria-label')).toMatch(/automatic, scheduled, automatic lane/);
    }
    await h.shot('53-snapshot-timeline-scheduled');
    // Hidden on request.
    await h.page.getByTestId('snap-hide-auto').check();
    await snaps.timelineNode(scheduled[0]!.name).waitFor({ state: 'detached' });
    await h.page.getByTestId('snap-hide-auto').uncheck();
  });

  it('has every control labelled: axe finds nothing serious in the tree, the timeline and the dialogs', { timeout: 120_000 }, async () => {
    const { h } = e2e;
    const snaps = new SnapshotsPage(h.page);
    await snaps.treeMode();
    expect(await axe(h.page)).toEqual([]);
    await snaps.timelineMode();
    expect(await axe(h.page)).toEqual([]);
    await snaps.timelineNode('B').click();
    await snaps.restore({ confirm: false });
    expect(await axe(h.page)).toEqual([]);
    await h.page.keyboard.press('Escape');
    await snaps.restoreDialog.waitFor({ state: 'detached' });
    for (const [open, id] of [
      ['snap-delete', 'snap-delete-dialog'],
      ['snap-compare', 'snap-compare-dialog'],
      ['snap-auto-open', 'snap-auto-dialog'],
      ['snap-take-open', 'snap-take-form'],
    ] as const) {
      await h.page.getByTestId(open).click();
      await h.page.getByTestId(id).waitFor();
      expect(await axe(h.page), id).toEqual([]);
      await h.page.keyboard.press('Escape');
      await h.page.getByTestId(id).waitFor({ state: 'detached' });
    }
  });

  it('gives the tree the room at 900×600: the details go below it', { timeout: 60_000 }, async () => {
    const { h } = e2e;
    const snaps = new SnapshotsPage(h.page);
    await h.page.setViewportSize({ width: 900, height: 600 });
    await snaps.treeMode();
    const tree = (await h.page.getByTestId('snap-tree').boundingBox())!;
    const side = (await snaps.details.boundingBox())!;
    expect(tree.width).toBeGreaterThan(450);
    expect(side.y).toBeGreaterThanOrEqual(tree.y + tree.height - 1);
    await h.shot('54-snapshots-900x600');
    await h.page.setViewportSize({ width: 1280, height: 820 });
    expect(h.pageErrors.filter((e) => !/favicon/.test(e))).toEqual([]);
  });

  it('is photographed for docs/screenshots: the tree and the timeline, light and dark, at 1280×800 and 900×600', { timeout: 60_000 }, async () => {
    const { h } = e2e;
    const snaps = new SnapshotsPage(h.page);
    const out = path.resolve('docs/screenshots');
    mkdirSync(out, { recursive: true });
    for (const [mode, name] of [['tree', '06-snapshot-tree'], ['timeline', '06-snapshot-timeline']] as const) {
      await (mode === 'tree' ? snaps.treeMode() : snaps.timelineMode());
      // The earlier cases zoomed and panned: the whole timeline, as a user opening it sees it.
      if (mode === 'timeline') await h.page.getByRole('button', { name: 'Fit all' }).click();
      for (const scheme of ['light', 'dark'] as const) {
        await h.page.emulateMedia({ colorScheme: scheme });
        for (const [width, height] of [[1280, 800], [900, 600]] as const) {
          await h.page.setViewportSize({ width, height });
          await h.page.evaluate(() => new Promise<void>((r) => requestAnimationFrame(() => requestAnimationFrame(() => r()))));
          const file = path.join(out, `${name}-${scheme}-${width}x${height}.png`);
          await h.page.screenshot({ path: file });
          // Palette-reduced where pngquant is installed, as screens.e2e does (exit 99: the file stays as it is).
          if (existsSync('/usr/bin/pngquant')) spawnSync('/usr/bin/pngquant', ['--quality=65-95', '--speed=3', '--strip', '--force', '--ext', '.png', file]);
        }
      }
    }
    await h.page.emulateMedia({ colorScheme: 'light' });
    await h.page.setViewportSize({ width: 1280, height: 820 });
  });
});
