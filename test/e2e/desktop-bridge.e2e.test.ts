// The renderer under the Electron preload's window.vmdesk, in real Chromium: the page opens no WebSocket of its
// own; it speaks the contract over the channel the preload's openChannel gives it (in the app a MessagePort the
// main process relays to the daemon; here the stand-in preload relays it over the test server's WebSocket).
import { describe, expect, it } from 'vitest';
import { useHarness } from './harness.js';

const e2e = useHarness();

/** Stands in for main/electron/preload/index.ts (and the main process behind it); records the page's own sockets. */
function fakePreload(endpoint: string): string {
  return `(() => {
    const Native = window.WebSocket;
    const pageSockets = [];
    const channels = [];
    window.__pageSockets = pageSockets;
    window.__channels = channels;
    window.WebSocket = class extends Native {
      constructor(url, protocols) {
        pageSockets.push(String(url));
        super(url, protocols);
      }
    };
    function openChannel(kind, vm, h) {
      channels.push(kind);
      // The main process's relay: frames both ways, {t:'open'} first, the reason last.
      const ws = new Native(${JSON.stringify(endpoint)});
      ws.onopen = () => h.onOpen();
      ws.onmessage = (m) => h.onMessage(m.data);
      ws.onclose = () => h.onClose('closed');
      return { send: (d) => ws.readyState === 1 && ws.send(d), close: () => ws.close() };
    }
    window.vmdesk = Object.freeze({
      openChannel,
      openFile: async () => null,
      revealInFolder: async () => {},
      openConsole: async () => {},
      onMenuCommand: () => {},
      onOpenPath: () => {},
    });
  })()`;
}

describe('desktop bridge', () => {
  it('speaks the contract over the preload\'s channel and opens no WebSocket itself', async () => {
    const { port, token } = e2e.h.server;
    const ctx = await e2e.browser.newContext();
    await ctx.addInitScript(fakePreload(`ws://127.0.0.1:${port}/ws?token=${encodeURIComponent(token)}`));
    const page = await ctx.newPage();
    await page.goto(e2e.h.server.url);
    // The VM list came over the channel: the empty library's page is up.
    await page.getByTestId('empty-state').waitFor();
    expect(await page.evaluate('window.__channels')).toEqual(['rpc']);
    expect(await page.evaluate('window.__pageSockets')).toEqual([]);
    await ctx.close();
  });
});
