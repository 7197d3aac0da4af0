// The renderer under the Electron preload's window.vmdesk, in real Chromium: it connects with the endpoint and
// token the preload hands over through IPC (no longer on the command line), and still connects on the cookie
// alone when that IPC is refused.
import { describe, expect, it } from 'vitest';
import { useHarness } from './harness.js';

const e2e = useHarness();

/** Stands in for main/electron/preload/index.ts and records every WebSocket URL the page opens. */
function fakePreload(answer: 'ok' | 'refused', endpoint: string, token: string): string {
  return `(() => {
    const urls = [];
    window.__wsUrls = urls;
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(url, protocols) {
        urls.push(String(url));
        super(url, protocols);
      }
    };
    window.vmdesk = Object.freeze({
      connection: () => ${answer === 'ok' ? `Promise.resolve(${JSON.stringify({ endpoint, token })})` : `Promise.reject(new Error('refused vmdesk:connection'))`},
      openFile: async () => null,
      revealInFolder: async () => {},
      openConsole: async () => {},
      onMenuCommand: () => {},
    });
  })()`;
}

describe('desktop bridge', () => {
  it('connects with the endpoint and token the preload asked the main process for', async () => {
    const { port, token } = e2e.h.server;
    const endpoint = `ws://127.0.0.1:${port}/ws`;
    const ctx = await e2e.browser.newContext();
    await ctx.addInitScript(fakePreload('ok', endpoint, token));
    const page = await ctx.newPage();
    await page.goto(e2e.h.server.url);
    await page.getByTestId('empty-state').waitFor();
    const urls = (await page.evaluate('window.__wsUrls')) as string[];
    expect(urls).toContain(`${endpoint}?token=${encodeURIComponent(token)}`);
    await ctx.close();
  });

  it('falls back to its own server and the cookie when the IPC is refused', async () => {
    const ctx = await e2e.browser.newContext();
    await ctx.addInitScript(fakePreload('refused', '', ''));
    const page = await ctx.newPage();
    await page.goto(e2e.h.server.url);
    await page.getByTestId('empty-state').waitFor();
    const urls = (await page.evaluate('window.__wsUrls')) as string[];
    expect(urls[0]).toBe(`ws://127.0.0.1:${e2e.h.server.port}/ws?token=`);
    expect(urls.join(' ')).not.toContain(e2e.h.server.token);
    await ctx.close();
  });
});
