// Without the token nothing works: the page is refused with 401 and so is the WebSocket upgrade, even from a browser.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import WebSocket from 'ws';
import { launchBrowser, openHarness, type Harness } from './harness.js';

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

describe('access token', () => {
  it('refuses the page without the token (HTTP 401) and serves it with the token', async () => {
    const base = `http://127.0.0.1:${h.server.port}`;
    const stranger = await browser.newContext();
    const page = await stranger.newPage();
    const res = await page.goto(`${base}/`);
    expect(res?.status()).toBe(401);
    expect(await page.content()).not.toContain('id="app"');
    await stranger.close();

    const ok = await h.page.goto(h.server.url);
    expect(ok?.status()).toBe(200);
    // The token left the address bar for an HttpOnly cookie.
    expect(h.page.url()).not.toContain('token=');
    expect(await h.page.evaluate(() => document.cookie)).toBe('');
  });

  it('refuses WebSocket upgrades without the token, from Node and from a browser page', async () => {
    const status = await new Promise<number | undefined>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${h.server.port}/ws`);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
      ws.on('open', () => resolve(101));
      ws.on('error', () => resolve(undefined));
    });
    expect(status).toBe(401);

    const stranger = await browser.newContext();
    const page = await stranger.newPage();
    await page.goto('about:blank');
    // A string, so the test file's own `WebSocket` import (ws) is not what runs in the page.
    const outcome = await page.evaluate(`new Promise((resolve) => {
      const ws = new window.WebSocket('ws://127.0.0.1:${h.server.port}/ws');
      ws.onopen = () => resolve('open');
      ws.onerror = () => resolve('refused');
    })`);
    expect(outcome).toBe('refused');
    await stranger.close();
  });

  it('tells the user when the connection to VMDesk drops', async () => {
    await h.page.goto(h.server.url);
    await h.page.getByTestId('empty-state').waitFor();
    await h.server.close();
    await h.page.getByTestId('connection-lost').waitFor({ timeout: 10_000 });
    await h.shot('40-connection-lost');
  });
});
