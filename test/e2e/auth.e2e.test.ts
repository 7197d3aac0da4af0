// Without the token nothing works: the page is refused with 401 and so is the WebSocket upgrade, even from a browser.
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { useHarness } from './harness.js';

const e2e = useHarness();

describe('access token', () => {
  it('refuses the page without the token (HTTP 401) and serves it with the token', async () => {
    const base = `http://127.0.0.1:${e2e.h.server.port}`;
    const stranger = await e2e.browser.newContext();
    const page = await stranger.newPage();
    const res = await page.goto(`${base}/`);
    expect(res?.status()).toBe(401);
    expect(await page.content()).not.toContain('id="app"');
    await stranger.close();

    const ok = await e2e.h.page.goto(e2e.h.server.url);
    expect(ok?.status()).toBe(200);
    // The token left the address bar for an HttpOnly cookie.
    expect(e2e.h.page.url()).not.toContain('token=');
    expect(await e2e.h.page.evaluate(() => document.cookie)).toBe('');
  });

  it('refuses WebSocket upgrades without the token, from Node and from a browser page', async () => {
    const status = await new Promise<number | undefined>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${e2e.h.server.port}/ws`);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
      ws.on('open', () => resolve(101));
      ws.on('error', () => resolve(undefined));
    });
    expect(status).toBe(401);

    const stranger = await e2e.browser.newContext();
    const page = await stranger.newPage();
    await page.goto('about:blank');
    // A string, so the test file's own `WebSocket` import (ws) is not what runs in the page.
    const outcome = await page.evaluate(`new Promise((resolve) => {
      const ws = new window.WebSocket('ws://127.0.0.1:${e2e.h.server.port}/ws');
      ws.onopen = () => resolve('open');
      ws.onerror = () => resolve('refused');
    })`);
    expect(outcome).toBe('refused');
    await stranger.close();
  });

  it('tells the user when the daemon goes away, and is back on a new daemon (started by the relay) by itself', async () => {
    const h = e2e.h;
    await h.call('vm.create', { name: 'survivor', memoryMiB: 64, network: [{ mode: 'none', forwards: [] }] });
    await h.page.goto(h.server.url);
    await h.page.locator('[data-testid="vm-item"][data-vm-name="survivor"]').waitFor();
    // `vmdesk daemon stop`, an upgrade, an idle exit: the page's connection ends with the daemon.
    await h.daemon.close();
    await h.page.getByTestId('connection-lost').waitFor({ timeout: 10_000 });
    // The page reconnects; the relay finds no daemon and starts one for the library; the list comes back.
    await h.page.getByTestId('connection-lost').waitFor({ state: 'detached', timeout: 60_000 });
    await h.page.locator('[data-testid="vm-item"][data-vm-name="survivor"]').waitFor();
    const status = await h.call('daemon.status', {});
    expect(status.pid).not.toBe(process.pid);
    expect(status.home).toBe(h.home);
    await h.call('vm.delete', { id: 'survivor' });
    await h.page.getByTestId('empty-state').waitFor();
  });

  it('tells the user when the connection to VMDesk drops', async () => {
    await e2e.h.page.goto(e2e.h.server.url);
    await e2e.h.page.getByTestId('empty-state').waitFor();
    await e2e.h.server.close();
    await e2e.h.page.getByTestId('connection-lost').waitFor({ timeout: 10_000 });
    await e2e.h.shot('40-connection-lost');
  });
});
