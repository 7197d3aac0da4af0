// Every screen and dialog of the GUI, light and dark, at 1280×800 and 900×600: an axe-core scan of each (no
// critical or serious violation may remain) and a screenshot of each written to docs/screenshots/ (checked in,
// so reviewers see what the GUI looks like without running it). Walks a library with a running guest, a VM whose
// start failed, tagged VMs, disks and a disc.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { guestPaths, GUEST_READY_MARKER } from '../guest/guest.js';
import { useHarness } from './harness.js';
import { axeScan, type AxeFinding } from './axe.js';
import { MainWindowPage } from './pages/MainWindowPage.js';
import { ConsolePage } from './pages/ConsolePage.js';
import { startServer } from '../../main/server/server.js';

const e2e = useHarness();
const OUT = path.resolve('docs/screenshots');
const SIZES = [
  { width: 1280, height: 800 },
  { width: 900, height: 600 },
] as const;
const SCHEMES = ['light', 'dark'] as const;

interface Found extends AxeFinding {
  screen: string;
  scheme: string;
  size: string;
}

const findings: Found[] = [];
/** Where pngquant is installed (Debian: apt install pngquant), screenshots are stored with a palette: a third of the size. */
const PNGQUANT = ['/usr/bin/pngquant', '/usr/local/bin/pngquant'].find((p) => existsSync(p));

function shrink(file: string): void {
  if (!PNGQUANT) return;
  try {
    execFileSync(PNGQUANT, ['--quality=65-95', '--speed=3', '--strip', '--force', '--ext', '.png', file], { stdio: 'ignore' });
  } catch {
    /* quality not reachable (exit 99): the file stays as Chromium wrote it */
  }
}
const written: string[] = [];

/** Two animation frames: layout, transitions and async components have settled. */
async function settle(page: Page): Promise<void> {
  await page.evaluate(() => new Promise<void>((r) => requestAnimationFrame(() => requestAnimationFrame(() => r()))));
}

/**
 * Shoots and scans one screen in both schemes and sizes. `prepare` brings the screen back after a resize or a
 * scheme change where those close it (a context menu closes on resize).
 */
async function visit(page: Page, name: string, prepare?: () => Promise<void>): Promise<void> {
  for (const scheme of SCHEMES) {
    await page.emulateMedia({ colorScheme: scheme });
    for (const size of SIZES) {
      await page.setViewportSize(size);
      await settle(page);
      if (prepare) await prepare();
      await settle(page);
      const file = `${name}-${scheme}-${size.width}x${size.height}.png`;
      await page.screenshot({ path: path.join(OUT, file) });
      shrink(path.join(OUT, file));
      written.push(file);
      for (const f of await axeScan(page)) findings.push({ ...f, screen: name, scheme, size: `${size.width}x${size.height}` });
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize(SIZES[0]);
  await settle(page);
}

async function holdPort(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen({ port: 0, host: '127.0.0.1' }, r));
  return { server, port: (server.address() as { port: number }).port };
}

describe('every screen, light and dark, 1280×800 and 900×600', () => {
  it('passes axe-core with no critical or serious violation, and writes the screenshots', { timeout: 600_000 }, async () => {
    mkdirSync(OUT, { recursive: true });
    const { page } = e2e.h;
    const main = new MainWindowPage(page);
    const cons = new ConsolePage(page);
    const { kernel, initrd } = guestPaths();
    await page.setViewportSize(SIZES[0]);

    // ---- an empty library ----
    await main.open(e2e.h.server.url);
    await main.emptyState.waitFor();
    await visit(page, '01-empty-library');

    // ---- a library: a running guest with disks, forwards and a disc; a failed start; tagged VMs ----
    const iso = path.join(e2e.h.home, 'tools.iso');
    writeFileSync(iso, Buffer.alloc(64 * 1024));
    const blocker = await holdPort();
    try {
      await e2e.h.call('vm.create', {
        name: 'web server',
        memoryMiB: 256,
        accel: 'tcg',
        diskBytes: 1024 ** 3,
        iso,
        tags: ['work'],
        directKernel: { kernel, initrd, cmdline: 'console=tty0 console=ttyS0' },
        network: [{ mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 18080, guestPort: 8080 }] }],
      });
      await e2e.h.call('vm.create', { name: 'windows 11', osType: 'windows', firmware: 'uefi', cpus: 2, memoryMiB: 4096, tags: ['lab'], network: [{ mode: 'nat', forwards: [] }] });
      await e2e.h.call('vm.create', { name: 'freebsd', osType: 'bsd', memoryMiB: 512, tags: ['lab'], network: [{ mode: 'none', forwards: [] }] });
      await e2e.h.call('vm.create', {
        name: 'database',
        memoryMiB: 128,
        directKernel: { kernel, initrd, cmdline: 'console=ttyS0' },
        network: [{ mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: blocker.port, guestPort: 5432 }] }],
      });
      await e2e.h.call('vm.start', { id: 'database' }).catch(() => undefined);
    } finally {
      blocker.server.close();
    }
    await main.waitForState('database', 'stopped');
    await page.locator('[data-vm-name="database"] [data-testid="vm-state"]', { hasText: 'stopped (start failed)' }).waitFor();
    await e2e.h.call('vm.start', { id: 'web server' });
    await main.waitForState('web server', 'running');
    await main.select('web server');
    await main.details.getByTestId('details-accel').waitFor();
    await visit(page, '02-main-window');

    await main.select('database');
    await main.details.getByTestId('details-last-exit').waitFor();
    await visit(page, '03-details-start-failed');

    await main.select('web server');
    await page.getByTestId('tab-storage').click();
    await page.getByTestId('disk-table').waitFor();
    await visit(page, '04-storage');

    await page.getByTestId('tab-logs').click();
    await page.getByTestId('log-text').locator('.line').first().waitFor();
    await page.getByTestId('log-source').selectOption('qemu');
    await page.getByTestId('log-search').fill('accel');
    await visit(page, '05-logs');

    await page.getByTestId('tab-snapshots').click();
    await page.getByTestId('snapshots-pane').waitFor();
    await page.locator('[data-testid="snap-empty"], [data-testid="snap-tree"], [data-testid="snap-timeline"]').first().waitFor({ timeout: 30_000 });
    await visit(page, '06-snapshots');
    await page.getByTestId('tab-details').click();

    // ---- the list: grouped by tag, two selected, the context menu ----
    await page.getByTestId('vm-group').check();
    await main.item('freebsd').click();
    await main.item('windows 11').click({ modifiers: ['Control'] });
    await page.getByTestId('multi-details').waitFor();
    const openMenu = async () => {
      if (await page.getByTestId('context-menu').isVisible().catch(() => false)) return;
      await main.item('windows 11').focus();
      await page.keyboard.press('Shift+F10');
      await page.getByTestId('context-menu').waitFor();
    };
    await visit(page, '07-list-grouped-multiselect-menu', openMenu);
    await page.keyboard.press('Escape');
    await page.getByTestId('context-menu').waitFor({ state: 'detached' });
    await page.getByTestId('vm-group').uncheck();
    await main.select('web server');

    // ---- dialogs ----
    const dialog = async (open: () => Promise<void>, testid: string, name: string, prepare?: () => Promise<void>) => {
      await open();
      await page.getByTestId(testid).waitFor();
      await visit(page, name, prepare);
      await page.keyboard.press('Escape');
      await page.getByTestId(testid).waitFor({ state: 'detached' });
    };

    await main.toolbar('new').click();
    await page.getByTestId('wizard-step-name').waitFor();
    await page.getByTestId('field-name').fill('new vm');
    await page.getByTestId('field-os').selectOption('windows');
    await visit(page, '10-wizard-name');
    await page.getByTestId('wizard-next').click();
    // The gallery is the first choice: the catalogue in the repo, nothing downloaded.
    await page.getByTestId('gallery').waitFor();
    await visit(page, '11-wizard-gallery');
    await page.getByTestId('media-iso').check();
    await page.getByTestId('field-iso').fill(iso);
    await visit(page, '11-wizard-media-iso');
    await page.getByTestId('wizard-next').click();
    await page.getByTestId('wizard-step-hardware').waitFor();
    await visit(page, '12-wizard-hardware');
    await page.getByTestId('wizard-next').click();
    await page.getByTestId('wizard-step-disk').waitFor();
    await page.getByTestId('wizard-next').click();
    await page.getByTestId('wizard-step-network').waitFor();
    await page.getByTestId('add-forward').click();
    // The relay's own port: refused inline.
    await page.getByTestId('forward-0-host').fill(String(e2e.h.server.port));
    await visit(page, '13-wizard-network');
    await page.getByTestId('forward-0-host').fill('2222');
    await page.getByTestId('wizard-next').click();
    await page.getByTestId('wizard-summary').waitFor();
    await visit(page, '14-wizard-summary');
    await page.keyboard.press('Escape');
    await page.getByTestId('wizard').waitFor({ state: 'detached' });

    await main.select('windows 11');
    await dialog(
      async () => {
        await main.toolbar('settings').click();
        await page.getByTestId('settings-tab-system').click();
      },
      'settings',
      '20-settings-system',
    );
    await dialog(
      async () => {
        await main.toolbar('settings').click();
        await page.getByTestId('settings-tab-network').click();
      },
      'settings',
      '21-settings-network',
    );
    for (const [tab, name] of [['resources', '21-settings-limits'], ['guest', '21-settings-shares-clipboard'], ['devices', '21-settings-devices']] as const) {
      await dialog(
        async () => {
          await main.toolbar('settings').click();
          await page.getByTestId(`settings-tab-${tab}`).click();
        },
        'settings',
        name,
      );
    }
    await dialog(() => page.getByTestId('tb-migrate').click(), 'move-dialog', '29-move-to-host');
    await dialog(() => page.getByTestId('tb-images').click(), 'image-cache-dialog', '29-image-cache');
    await dialog(() => main.toolbar('delete').click(), 'delete-dialog', '22-delete');
    await dialog(() => page.getByTestId('details-clone').click(), 'clone-dialog', '23-clone');
    await dialog(() => page.getByTestId('details-export').click(), 'export-dialog', '24-export');
    await dialog(() => main.toolbar('import').click(), 'import-dialog', '25-import');
    await dialog(
      async () => {
        await main.toolbar('import').click();
        await page.getByTestId('import-path-browse').click();
      },
      'file-picker',
      '26-file-picker',
    );
    await page.keyboard.press('Escape');
    await page.getByTestId('import-dialog').waitFor({ state: 'detached' });

    await main.select('web server');
    await dialog(() => main.toolbar('kill').click(), 'confirm-kill', '27-confirm-power-off');
    await page.getByTestId('tab-storage').click();
    await dialog(() => page.getByTestId('cd-insert').click(), 'cd-dialog', '28-storage-disc');
    await page.getByTestId('tab-details').click();

    // ---- the console: serial and display ----
    await main.toolbar('console').click();
    await cons.waitOpen();
    await cons.serialTab();
    await cons.waitForSerial(new RegExp(GUEST_READY_MARKER), 180_000);
    await visit(page, '30-console-serial');
    await cons.displayTab();
    await page.locator('[data-testid="display-status"]', { hasText: 'connected' }).waitFor({ timeout: 30_000 });
    await visit(page, '31-console-display');
    // The Terminal tab on a VM without SSH: its serial console, with a note saying so.
    await cons.terminalTab();
    await page.getByTestId('terminal-note').waitFor({ timeout: 30_000 });
    await visit(page, '32-console-terminal');
    await page.getByTestId('console-back').click();
    await main.details.waitFor();

    // ---- connection lost, then a session that cannot come back ----
    const { port } = e2e.h.server;
    await e2e.h.server.close();
    await page.getByTestId('connection-lost').waitFor({ timeout: 10_000 });
    expect(await main.toolbar('stop').isDisabled()).toBe(true);
    await visit(page, '40-connection-lost');
    const restarted = await startServer({ home: e2e.h.home, port, staticDir: path.resolve('dist/renderer') });
    try {
      await page.getByTestId('session-expired').waitFor({ timeout: 30_000 });
      await visit(page, '41-session-expired');
    } finally {
      await restarted.close();
    }

    writeFileSync(path.resolve('test-output/axe-report.json'), JSON.stringify(findings, null, 2));
    expect(written.length).toBeGreaterThan(60);
    expect(findings, JSON.stringify(findings, null, 2)).toEqual([]);
  });
});
