// Boots a library's daemon (in this process, as `vmdesk daemon run` would in its own), the GUI server relaying
// to it (as `vmdesk serve` does) on a temporary VMDESK home, and a headless Chromium for one e2e test.
import { execSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';
import type { RpcMethod, RpcParams, RpcResult } from '../../main/api/rpc.js';
import { callDaemon, connectDaemon } from '../../main/client/daemon-client.js';
import { startDaemon, type RunningDaemon } from '../../main/daemon/daemon.js';
import { runtimeRoot } from '../../main/platform/paths.js';
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
  /** The library's daemon; the guests the GUI starts are its children. */
  daemon: RunningDaemon;
  server: RunningServer;
  /** One call to the daemon on a connection of its own, as the CLI makes it (started again if it stopped). */
  call<M extends RpcMethod>(method: M, params: RpcParams<M>): Promise<RpcResult<M>>;
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
  const daemon = await startDaemon({ home, idleExitMs: 0 });
  const server = await startServer({ home, staticDir: RENDERER_DIR });
  const call = <M extends RpcMethod>(method: M, params: RpcParams<M>) => callDaemon(home, (c) => c.call(method, params));
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
    daemon,
    server,
    call,
    context,
    page,
    pageErrors,
    shot: async (name) => {
      await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`) });
    },
    dispose: async () => {
      await context.close().catch(() => {});
      // Leave no guest and no daemon behind: power off whatever the test started, through whichever daemon
      // serves the library now (a test may have had the relay start a new one), and stop that daemon.
      const c = await connectDaemon(home, { autostart: false }).catch(() => undefined);
      if (c) {
        for (const vm of await c.call('vm.list', {}).catch(() => [])) {
          if (vm.state !== 'stopped' && vm.state !== 'crashed') await c.call('vm.kill', { id: vm.id }).catch(() => {});
        }
        if (c.hello?.pid !== process.pid) {
          await c.call('daemon.stop', {}).catch(() => {});
          await new Promise<void>((r) => (c.isClosed ? r() : c.onClosed(r)));
        }
        c.close();
      }
      await server.close();
      await daemon.close();
      rmSync(home, { recursive: true, force: true });
      rmSync(runtimeRoot(home), { recursive: true, force: true });
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
