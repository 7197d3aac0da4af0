// Boots a real Core + GUI server on a temporary VMDESK home and a headless Chromium for one e2e test.
import { execSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';
import { Core } from '../../main/core/core.js';
import { startServer, type RunningServer } from '../../main/server/server.js';

export const SCREENSHOT_DIR = path.resolve('test-output/screenshots');
const RENDERER_DIR = path.resolve('dist/renderer');

export function ensureRendererBuilt(): void {
  if (!existsSync(path.join(RENDERER_DIR, 'index.html'))) execSync('npx vite build --config renderer/vite.config.ts', { stdio: 'inherit' });
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
}

export interface Harness {
  home: string;
  core: Core;
  server: RunningServer;
  context: BrowserContext;
  page: Page;
  /** Console errors and CSP violations seen by the page; a clean run has none. */
  pageErrors: string[];
  shot(name: string): Promise<void>;
  dispose(): Promise<void>;
}

export async function openHarness(browser: Browser): Promise<Harness> {
  ensureRendererBuilt();
  // Short path: the runtime dir (sockets) is derived from it and unix socket paths are limited.
  const home = mkdtempSync(path.join(os.tmpdir(), 'vmd-e2e-'));
  const core = new Core({ home, watchMs: 500 });
  await core.boot();
  const server = await startServer({ core, staticDir: RENDERER_DIR });
  const context = await browser.newContext({ viewport: { width: 1280, height: 820 }, acceptDownloads: true });
  const page = await context.newPage();
  const pageErrors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(m.text());
  });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  return {
    home,
    core,
    server,
    context,
    page,
    pageErrors,
    shot: async (name) => {
      await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`) });
    },
    dispose: async () => {
      await context.close().catch(() => {});
      // Leave no guest behind: power off whatever the test started.
      for (const vm of await core.list().catch(() => [])) {
        if (vm.state !== 'stopped' && vm.state !== 'crashed') await core.kill(vm.id).catch(() => {});
      }
      await server.close();
      await core.shutdown();
      rmSync(home, { recursive: true, force: true });
    },
  };
}

/** One browser and one harness for a test file: opened before its tests, torn down (guests included) after. */
export function useHarness(): { browser: Browser; h: Harness } {
  const e2e = {} as { browser: Browser; h: Harness };
  beforeAll(async () => {
    e2e.browser = await launchBrowser();
    e2e.h = await openHarness(e2e.browser);
  });
  afterAll(async () => {
    await e2e.h?.dispose();
    await e2e.browser?.close();
  });
  return e2e;
}
