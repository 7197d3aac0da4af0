// The Electron shell with a mocked 'electron' (no Electron binary here): secure webPreferences, navigation/
// window-open/permission denial, IPC sender and argument checks (the channel request included), the quit flow,
// and boot as a client of the library's daemon (a real one, in this process) that opens no TCP port: windows
// load app://vmdesk and reach the daemon over MessagePorts the main process relays.
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const mocks = vi.hoisted(() => {
  /** A stand-in BrowserWindow that records what it was built with and the URL it loaded. */
  class FakeWindow {
    static created: FakeWindow[] = [];
    readonly webContents: { listeners: Map<string, unknown>; on(ev: string, fn: unknown): void; setWindowOpenHandler(fn: unknown): void; isLoading(): boolean; send: (...a: unknown[]) => void };
    loaded: string | undefined;
    constructor(readonly options: { webPreferences?: Record<string, unknown> }) {
      const listeners = new Map<string, unknown>();
      this.webContents = { listeners, on: (ev, fn) => listeners.set(ev, fn), setWindowOpenHandler: () => {}, isLoading: () => false, send: () => {} };
      FakeWindow.created.push(this);
    }
    once(): void {}
    on(): void {}
    focus(): void {}
    show(): void {}
    isMinimized(): boolean {
      return false;
    }
    isDestroyed(): boolean {
      return false;
    }
    loadURL(url: string): Promise<void> {
      this.loaded = url;
      return Promise.resolve();
    }
  }
  /** A stand-in Tray that keeps its latest menu and tooltip. */
  class FakeTray {
    static last: FakeTray | undefined;
    menu: { label?: string; submenu?: { label?: string; enabled?: boolean; click?: () => void }[] }[] = [];
    tooltip = '';
    destroyed = false;
    constructor() {
      FakeTray.last = this;
    }
    on(): void {}
    setToolTip(t: string): void {
      this.tooltip = t;
    }
    setContextMenu(m: FakeTray['menu']): void {
      this.menu = m;
    }
    destroy(): void {
      this.destroyed = true;
    }
  }
  /** The default session's permission handlers, as boot() installs them. */
  type RequestHandler = (wc: unknown, perm: string, cb: (ok: boolean) => void, details: { requestingUrl?: string }) => void;
  type CheckHandler = (wc: unknown, perm: string, origin: string) => boolean;
  const defaultSession: { request?: RequestHandler; check?: CheckHandler; setPermissionRequestHandler(fn: RequestHandler): void; setPermissionCheckHandler(fn: CheckHandler): void } = {
    setPermissionRequestHandler(fn) {
      defaultSession.request = fn;
    },
    setPermissionCheckHandler(fn) {
      defaultSession.check = fn;
    },
  };
  return {
    defaultSession,
    handlers: new Map<string, (...args: unknown[]) => unknown>(),
    listeners: new Map<string, (...args: unknown[]) => unknown>(),
    protocolHandlers: new Map<string, (req: { url: string; method?: string }) => Promise<Response>>(),
    privileged: [] as unknown[],
    about: vi.fn(),
    showMessageBox: vi.fn(),
    openExternal: vi.fn(),
    quit: vi.fn(),
    BrowserWindow: FakeWindow,
    Tray: FakeTray,
  };
});

vi.mock('electron', () => ({
  app: { quit: mocks.quit, on: vi.fn(), whenReady: vi.fn(), requestSingleInstanceLock: vi.fn(() => true), setAboutPanelOptions: mocks.about, showAboutPanel: vi.fn() },
  BrowserWindow: Object.assign(mocks.BrowserWindow, { getFocusedWindow: () => null, fromWebContents: () => null }),
  Menu: { setApplicationMenu: vi.fn(), buildFromTemplate: vi.fn((t: unknown) => t) },
  Notification: Object.assign(vi.fn(), { isSupported: () => false }),
  Tray: mocks.Tray,
  nativeImage: { createFromPath: vi.fn(() => ({})) },
  protocol: {
    handle: (scheme: string, fn: (req: { url: string; method?: string }) => Promise<Response>) => mocks.protocolHandlers.set(scheme, fn),
    registerSchemesAsPrivileged: (s: unknown[]) => mocks.privileged.push(...s),
  },
  dialog: { showMessageBox: mocks.showMessageBox, showOpenDialog: vi.fn(), showErrorBox: vi.fn() },
  ipcMain: { handle: (ch: string, fn: (...args: unknown[]) => unknown) => mocks.handlers.set(ch, fn), on: (ch: string, fn: (...args: unknown[]) => unknown) => mocks.listeners.set(ch, fn) },
  screen: { getAllDisplays: () => [] },
  session: { defaultSession: mocks.defaultSession },
  shell: { openExternal: mocks.openExternal, showItemInFolder: vi.fn() },
}));

const shell = await import('../../main/electron/main.js');
const { startDaemon } = await import('../../main/daemon/daemon.js');
const { runtimeRoot } = await import('../../main/platform/paths.js');
const { daemonClient, settledClients } = await import('../helpers/daemon.js');
const { registerTestEngine, testVm, unregisterTestEngine } = await import('../helpers/test-engine.js');
const { IPC, OpenFileArgs } = await import('../../main/electron/ipc-contract.js');
const { APP_ORIGIN } = await import('../../main/electron/protocol.js');
const { loadWindowState, saveWindowState, fitToDisplays } = await import('../../main/electron/window-state.js');

const ORIGIN = APP_ORIGIN;

/** A DesktopApp with its IPC handlers registered (boot() minus the daemon, protocol and session). */
function deskWithIpc() {
  const desk = new shell.DesktopApp();
  desk.registerIpc();
  return { desk };
}

/** Node's MessagePort as the main process sees Electron's MessagePortMain: 'message' events carry { data }. */
function mainSide(port: MessagePort) {
  return {
    postMessage: (m: unknown) => port.postMessage(m),
    on(ev: string, fn: (...a: unknown[]) => void) {
      if (ev === 'message') port.on('message', (data) => fn({ data }));
      else port.on(ev, fn);
      return this;
    },
    start: () => port.start(),
    close: () => port.close(),
  };
}

/** The window's end of a channel: every message it receives, in order. */
function windowSide(port: MessagePort) {
  const got: unknown[] = [];
  const waiters: (() => void)[] = [];
  port.on('message', (m) => {
    got.push(m);
    for (const w of waiters.splice(0)) w();
  });
  return {
    got,
    port,
    async next(pred: (m: unknown) => boolean, timeoutMs = 10_000): Promise<unknown> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = got.find(pred);
        if (hit !== undefined) return hit;
        if (Date.now() > deadline) throw new Error(`no such message; got ${JSON.stringify(got).slice(0, 400)}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 100);
        });
      }
    },
  };
}

/** A stand-in WebContents: records listeners and the window-open handler. */
function fakeWebContents() {
  const ee = new EventEmitter() as EventEmitter & { setWindowOpenHandler(fn: (d: { url: string }) => { action: string }): void; openHandler?: (d: { url: string }) => { action: string } };
  ee.setWindowOpenHandler = (fn) => (ee.openHandler = fn);
  return ee;
}

function navigate(wc: EventEmitter, event: string, url: string): boolean {
  let prevented = false;
  wc.emit(event, { preventDefault: () => (prevented = true) }, url);
  return prevented;
}

beforeEach(() => {
  mocks.showMessageBox.mockReset();
  mocks.openExternal.mockReset();
  mocks.quit.mockReset();
});

describe('webPreferences', () => {
  it('sandboxes every window: contextIsolation on, no Node, webSecurity on, no webview', () => {
    const p = shell.secureWebPreferences();
    expect(p).toMatchObject({ sandbox: true, contextIsolation: true, nodeIntegration: false, nodeIntegrationInWorker: false, nodeIntegrationInSubFrames: false, webSecurity: true, allowRunningInsecureContent: false, webviewTag: false });
    expect(p.preload).toMatch(/preload[/\\]index\.js$/);
  });

  it('puts nothing on a renderer\'s command line (additionalArguments land in /proc/<pid>/cmdline) and loads app://vmdesk', () => {
    const { desk } = deskWithIpc();
    mocks.BrowserWindow.created.length = 0;
    desk.openConsoleWindow('vm1');
    expect(mocks.BrowserWindow.created).toHaveLength(1);
    const prefs = mocks.BrowserWindow.created[0]!.options.webPreferences!;
    expect(prefs.additionalArguments ?? []).toEqual([]);
    expect(mocks.BrowserWindow.created[0]!.loaded).toBe('app://vmdesk/#/console/vm1');
  });
});

describe('navigation and new windows', () => {
  it('denies navigation to any other origin and allows reloads of our own', () => {
    const wc = fakeWebContents();
    shell.hardenWebContents(wc as never, ORIGIN);
    expect(navigate(wc, 'will-navigate', 'https://evil.example/')).toBe(true);
    expect(navigate(wc, 'will-navigate', 'http://127.0.0.1:9999/')).toBe(true);
    expect(navigate(wc, 'will-navigate', 'app://evil/')).toBe(true);
    expect(navigate(wc, 'will-navigate', 'data:text/html,<b>x</b>')).toBe(true);
    expect(navigate(wc, 'will-navigate', 'file:///etc/passwd')).toBe(true);
    expect(navigate(wc, 'will-redirect', 'https://evil.example/')).toBe(true);
    expect(navigate(wc, 'will-navigate', `${ORIGIN}/#/console/x`)).toBe(false);
  });

  it('denies window.open, sending https links to the system browser', () => {
    const wc = fakeWebContents();
    shell.hardenWebContents(wc as never, ORIGIN);
    expect(wc.openHandler!({ url: `${ORIGIN}/#/console/x` })).toEqual({ action: 'deny' });
    expect(wc.openHandler!({ url: 'javascript:alert(1)' })).toEqual({ action: 'deny' });
    expect(wc.openHandler!({ url: 'https://example.org/docs' })).toEqual({ action: 'deny' });
    expect(mocks.openExternal).toHaveBeenCalledTimes(1);
    expect(mocks.openExternal).toHaveBeenCalledWith('https://example.org/docs');
  });

  it('refuses <webview> attachment', () => {
    const wc = fakeWebContents();
    shell.hardenWebContents(wc as never, ORIGIN);
    let prevented = false;
    wc.emit('will-attach-webview', { preventDefault: () => (prevented = true) });
    expect(prevented).toBe(true);
  });
});

describe('permissions', () => {
  it('grants only clipboard and fullscreen, only to our origin', () => {
    let requestHandler: ((wc: unknown, perm: string, cb: (ok: boolean) => void, details: { requestingUrl: string }) => void) | undefined;
    let checkHandler: ((wc: unknown, perm: string, origin: string) => boolean) | undefined;
    const ses = { setPermissionRequestHandler: (fn: typeof requestHandler) => (requestHandler = fn), setPermissionCheckHandler: (fn: typeof checkHandler) => (checkHandler = fn) };
    shell.installPermissionPolicy(ses as never, ORIGIN);
    const ask = (perm: string, url: string) => {
      let answer: boolean | undefined;
      requestHandler!({ getURL: () => url }, perm, (ok) => (answer = ok), { requestingUrl: url });
      return answer;
    };
    for (const denied of ['media', 'geolocation', 'notifications', 'openExternal', 'midi', 'pointerLock', 'display-capture']) expect(ask(denied, `${ORIGIN}/`), denied).toBe(false);
    expect(ask('clipboard-read', `${ORIGIN}/`)).toBe(true);
    expect(ask('clipboard-read', 'https://evil.example/')).toBe(false);
    expect(checkHandler!({}, 'fullscreen', ORIGIN)).toBe(true);
    expect(checkHandler!({}, 'media', ORIGIN)).toBe(false);
  });
});

describe('IPC', () => {
  it('accepts only our own main frame as sender', () => {
    const ok = { senderFrame: { url: `${ORIGIN}/`, parent: null }, sender: {} };
    expect(shell.isTrustedSender(ok as never, ORIGIN)).toBe(true);
    expect(shell.isTrustedSender({ senderFrame: { url: 'https://evil.example/', parent: null }, sender: {} } as never, ORIGIN)).toBe(false);
    expect(shell.isTrustedSender({ senderFrame: { url: `${ORIGIN}/`, parent: {} }, sender: {} } as never, ORIGIN)).toBe(false);
    expect(shell.isTrustedSender({ senderFrame: null, sender: {} } as never, ORIGIN)).toBe(false);
  });

  it('opens a channel only for our own window\'s main frame, with valid arguments and exactly one port', async () => {
    const { desk } = deskWithIpc();
    const win = desk.openConsoleWindow('vm-ipc');
    const opened: unknown[] = [];
    desk.hub = { openChannel: async (req: unknown) => void opened.push(req) } as never;
    expect(mocks.listeners.get(IPC.channel)).toBeDefined();
    const closed: number[] = [];
    const port = (i: number) => ({ close: () => closed.push(i) });
    const ours = { senderFrame: { url: `${ORIGIN}/#/console/vm-ipc`, parent: null }, sender: win.webContents };
    expect(await desk.onChannelRequest({ ...ours, ports: [port(0)] } as never, [{ kind: 'rpc' }])).toBeUndefined();
    expect(await desk.onChannelRequest({ ...ours, ports: [port(1)] } as never, [{ kind: 'vnc', vm: 'vm-ipc' }])).toBeUndefined();
    expect(opened).toEqual([{ kind: 'rpc' }, { kind: 'vnc', vm: 'vm-ipc' }]);
    // A page of another origin, a sub-frame of ours, a frame-less event, a web contents that is not one of our windows.
    const foreign = [
      { senderFrame: { url: 'https://evil.example/', parent: null }, sender: win.webContents },
      { senderFrame: { url: 'app://evil/', parent: null }, sender: win.webContents },
      { senderFrame: { url: `${ORIGIN}/`, parent: {} }, sender: win.webContents },
      { senderFrame: null, sender: win.webContents },
      { senderFrame: { url: `${ORIGIN}/`, parent: null }, sender: { id: 'some other web contents' } },
    ];
    let n = 10;
    for (const ev of foreign) expect(await desk.onChannelRequest({ ...ev, ports: [port(n++)] } as never, [{ kind: 'rpc' }]), JSON.stringify(ev.senderFrame)).toMatch(/untrusted sender/);
    // Arguments the contract does not allow, and anything but one port.
    for (const args of [[], [{ kind: 'shell' }], [{ kind: 'rpc', extra: 1 }], [{ kind: 'vnc' }], [{ kind: 'vnc', vm: '../x/y' }], [{ kind: 'rpc' }, 'extra']]) {
      expect(await desk.onChannelRequest({ ...ours, ports: [port(n++)] } as never, args), JSON.stringify(args)).toMatch(/invalid arguments/);
    }
    expect(await desk.onChannelRequest({ ...ours, ports: [] } as never, [{ kind: 'rpc' }])).toMatch(/exactly one port/);
    expect(await desk.onChannelRequest({ ...ours, ports: [port(n++), port(n++)] } as never, [{ kind: 'rpc' }])).toMatch(/exactly one port/);
    expect(opened).toHaveLength(2);
    // Every refused request had its ports closed; the accepted ones were left to the relay.
    expect(closed.sort((a, b) => a - b)).toEqual(Array.from({ length: n - 10 }, (_, i) => i + 10));
  });

  it('answers the file dialog, reveal and console requests only from our own windows, with valid arguments', async () => {
    const { desk } = deskWithIpc();
    const win = desk.openConsoleWindow('w');
    const ours = { senderFrame: { url: `${ORIGIN}/`, parent: null }, sender: win.webContents };
    const stranger = { senderFrame: { url: `${ORIGIN}/`, parent: null }, sender: { id: 'not ours' } };
    for (const ch of [IPC.openFile, IPC.revealInFolder, IPC.openConsole]) {
      const handler = mocks.handlers.get(ch)!;
      expect(() => handler(stranger, ch === IPC.openFile ? undefined : ch === IPC.revealInFolder ? '/tmp' : 'vm')).toThrow(/untrusted sender/);
    }
    expect(() => mocks.handlers.get(IPC.revealInFolder)!(ours, 'relative/path')).toThrow(/invalid arguments/);
    expect(() => mocks.handlers.get(IPC.revealInFolder)!(ours, '/tmp', 'extra')).toThrow(/invalid arguments/);
    expect(() => mocks.handlers.get(IPC.openFile)!(ours, [{ name: 'x', extensions: ['../x'] }])).toThrow(/invalid arguments/);
  });

  it('opens a console window only for our own windows', async () => {
    const { desk } = deskWithIpc();
    const win = desk.openConsoleWindow('a');
    const handler = mocks.handlers.get(IPC.openConsole)!;
    mocks.BrowserWindow.created.length = 0;
    await handler({ senderFrame: { url: `${ORIGIN}/`, parent: null }, sender: win.webContents }, 'b');
    expect(mocks.BrowserWindow.created).toHaveLength(1);
    expect(() => handler({ senderFrame: { url: `${ORIGIN}/`, parent: null }, sender: {} }, 'c')).toThrow(/refused/);
    expect(() => handler({ senderFrame: { url: `${ORIGIN}/`, parent: null }, sender: win.webContents }, '../../etc')).toThrow(/invalid arguments/);
  });

  it('validates arguments with zod before the handler runs', async () => {
    const fn = vi.fn(() => 'picked');
    shell.validatedHandle('test:open', OpenFileArgs, () => ORIGIN, fn);
    const handler = mocks.handlers.get('test:open')!;
    const event = { senderFrame: { url: `${ORIGIN}/`, parent: null }, sender: {} };
    expect(await handler(event, [{ name: 'ISO', extensions: ['iso'] }])).toBe('picked');
    expect(() => handler(event, [{ name: 'x', extensions: ['../../etc'] }])).toThrow(/invalid arguments/);
    expect(() => handler(event, 'not an array', 'extra')).toThrow(/invalid arguments/);
    expect(() => handler({ senderFrame: { url: 'https://evil.example/', parent: null } }, undefined)).toThrow(/untrusted sender/);
    expect(fn).toHaveBeenCalledTimes(1);
  });
});

describe('quit flow', () => {
  const vm = (name: string, state: string) => ({ id: name, name, state }) as never;

  function appWith(list: unknown[]) {
    const desk = new shell.DesktopApp();
    const core = { list: vi.fn(async () => list), stop: vi.fn(async () => ({})), shutdown: vi.fn(async () => {}) };
    desk.core = core as never;
    return { desk, core };
  }

  it('quits without asking when no VM runs', async () => {
    const { desk, core } = appWith([vm('a', 'stopped')]);
    const ev = { preventDefault: vi.fn() };
    await desk.onBeforeQuit(ev);
    expect(mocks.showMessageBox).not.toHaveBeenCalled();
    expect(core.shutdown).toHaveBeenCalled();
    expect(mocks.quit).toHaveBeenCalledTimes(1);
  });

  it('keeps VMs running in the background when asked to', async () => {
    const { desk, core } = appWith([vm('a', 'running'), vm('b', 'stopped')]);
    mocks.showMessageBox.mockResolvedValue({ response: 0 });
    await desk.onBeforeQuit({ preventDefault: vi.fn() });
    expect(mocks.showMessageBox).toHaveBeenCalledTimes(1);
    const opts = mocks.showMessageBox.mock.calls[0]![0];
    expect(opts.buttons).toEqual(['Keep running in the background', 'Shut them down', 'Cancel']);
    expect(opts.message).toContain('“a”');
    expect(core.stop).not.toHaveBeenCalled();
    expect(core.shutdown).toHaveBeenCalled();
    expect(mocks.quit).toHaveBeenCalledTimes(1);
  });

  it('shuts running VMs down when asked to', async () => {
    const { desk, core } = appWith([vm('a', 'running'), vm('b', 'paused')]);
    mocks.showMessageBox.mockResolvedValue({ response: 1 });
    await desk.onBeforeQuit({ preventDefault: vi.fn() });
    expect(core.stop).toHaveBeenCalledTimes(2);
    expect(core.stop).toHaveBeenCalledWith('a', { timeoutMs: 30_000 });
    expect(mocks.quit).toHaveBeenCalledTimes(1);
  });

  it('stays open on Cancel, and asks again next time', async () => {
    const { desk, core } = appWith([vm('a', 'running')]);
    mocks.showMessageBox.mockResolvedValue({ response: 2 });
    const ev = { preventDefault: vi.fn() };
    await desk.onBeforeQuit(ev);
    expect(ev.preventDefault).toHaveBeenCalled();
    expect(core.shutdown).not.toHaveBeenCalled();
    expect(mocks.quit).not.toHaveBeenCalled();
    mocks.showMessageBox.mockResolvedValue({ response: 0 });
    await desk.onBeforeQuit({ preventDefault: vi.fn() });
    expect(mocks.showMessageBox).toHaveBeenCalledTimes(2);
    expect(mocks.quit).toHaveBeenCalledTimes(1);
  });
});

describe('window state', () => {
  it('round-trips through the JSON file and falls back to defaults on garbage', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-ws-'));
    const file = path.join(dir, 'window-state.json');
    expect(loadWindowState(file).width).toBe(1180);
    await saveWindowState(file, { x: 10, y: 20, width: 900, height: 700, maximized: true });
    expect(loadWindowState(file)).toEqual({ x: 10, y: 20, width: 900, height: 700, maximized: true });
    writeFileSync(file, '{"width": -5');
    expect(loadWindowState(file).width).toBe(1180);
    expect(fitToDisplays({ x: 5000, y: 5000, width: 900, height: 700, maximized: false }, [{ x: 0, y: 0, width: 1920, height: 1080 }])).toEqual({ width: 900, height: 700, maximized: false });
  });
});

describe('preload', () => {
  /** Runs the preload source the way Electron's sandbox does: a CommonJS wrapper whose require knows only 'electron'. */
  async function runPreload() {
    const ts = await import('typescript');
    const src = readFileSync(path.resolve('main/electron/preload/index.ts'), 'utf8');
    const js = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 } }).outputText;
    const exposed: Record<string, unknown> = {};
    const invoke = vi.fn(async () => 'ok');
    const on = vi.fn();
    const postMessage = vi.fn();
    const requireFn = (name: string) => {
      if (name !== 'electron') throw new Error(`sandboxed preload may not require ${name}`);
      return { contextBridge: { exposeInMainWorld: (k: string, v: unknown) => (exposed[k] = v) }, ipcRenderer: { invoke, on, postMessage } };
    };
    const fakeProcess = { argv: ['electron'] };
    new Function('require', 'process', 'exports', 'module', 'MessageChannel', js)(requireFn, fakeProcess, {}, { exports: {} }, MessageChannel);
    return { exposed, invoke, on, postMessage };
  }

  it('exposes exactly one small, named global and nothing generic', async () => {
    const { exposed, invoke, on } = await runPreload();
    expect(Object.keys(exposed)).toEqual(['vmdesk']);
    const api = exposed.vmdesk as Record<string, unknown>;
    expect(Object.keys(api).sort()).toEqual(['onMenuCommand', 'onOpenPath', 'openChannel', 'openConsole', 'openFile', 'revealInFolder']);
    expect(Object.isFrozen(api)).toBe(true);
    expect(Object.values(api).some((v) => v && typeof v === 'object')).toBe(false); // no ipcRenderer or other objects
    await (api.openFile as (f: unknown) => Promise<unknown>)([{ name: 'ISO', extensions: ['iso'] }]);
    await (api.revealInFolder as (p: string) => Promise<unknown>)('/tmp');
    await (api.openConsole as (p: string) => Promise<unknown>)('vm1');
    expect(invoke.mock.calls.map((c) => c[0])).toEqual([IPC.openFile, IPC.revealInFolder, IPC.openConsole]);
    const seen: unknown[] = [];
    (api.onMenuCommand as (fn: (c: string) => void) => void)((c) => seen.push(c));
    (api.onOpenPath as (fn: (c: unknown) => void) => void)((c) => seen.push(c));
    expect(on.mock.calls.map((c) => c[0])).toEqual([IPC.menu, IPC.openPath]);
    (on.mock.calls[0]![1] as (e: unknown, c: unknown) => void)({ sender: 'the IPC event must not leak' }, 'new-vm');
    (on.mock.calls[1]![1] as (e: unknown, c: unknown) => void)({ sender: 'the IPC event must not leak' }, { action: 'create', path: '/isos/a.iso', extra: { x: 1 } });
    expect(seen).toEqual(['new-vm', { action: 'create', path: '/isos/a.iso' }]);
  });

  it('opens a channel by handing the main process one port, keeps its own, and acknowledges what the page consumed', async () => {
    const { exposed, postMessage } = await runPreload();
    const api = exposed.vmdesk as { openChannel(kind: string, vm: string | undefined, h: object): { send(d: unknown): void; close(): void } };
    const got: unknown[] = [];
    let opened = false;
    let closedWith: string | undefined;
    const ch = api.openChannel('vnc', 'vm1', { onOpen: () => (opened = true), onMessage: (d: unknown) => got.push(d), onClose: (r: string) => (closedWith = r) });
    expect(postMessage).toHaveBeenCalledTimes(1);
    const [channel, request, ports] = postMessage.mock.calls[0]! as [string, unknown, MessagePort[]];
    expect(channel).toBe(IPC.channel);
    expect(request).toEqual({ kind: 'vnc', vm: 'vm1' });
    expect(ports).toHaveLength(1);
    // The main process's end.
    const main = ports[0]!;
    const fromPage: unknown[] = [];
    main.on('message', (m) => fromPage.push(m));
    main.postMessage({ t: 'open' });
    main.postMessage(new Uint8Array([1, 2, 3]));
    await vi.waitFor(() => expect(got).toHaveLength(1));
    expect(opened).toBe(true);
    expect(got[0]).toEqual(new Uint8Array([1, 2, 3]));
    ch.send(new Uint8Array([9]));
    await vi.waitFor(() => expect(fromPage).toContainEqual({ t: 'ack', n: 3 }));
    await vi.waitFor(() => expect(fromPage).toContainEqual(new Uint8Array([9])));
    main.postMessage({ t: 'close', reason: 'display closed' });
    await vi.waitFor(() => expect(closedWith).toBe('display closed'));
    main.close();
  });

  it('uses the same channel names as the main process', () => {
    const src = readFileSync(path.resolve('main/electron/preload/index.ts'), 'utf8');
    for (const ch of Object.values(IPC)) expect(src).toContain(`'${ch}'`);
  });

  it('reads nothing from the command line', () => {
    const src = readFileSync(path.resolve('main/electron/preload/index.ts'), 'utf8');
    expect(src).not.toMatch(/process\.argv/);
  });
});

describe('boot: a client of the library\'s daemon', () => {
  let tmp: string;
  let home: string;
  let daemon: Awaited<ReturnType<typeof startDaemon>>;

  beforeAll(async () => {
    registerTestEngine();
    tmp = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-shell-'));
    home = path.join(tmp, 'home');
    daemon = await startDaemon({ home, idleExitMs: 0 });
  });
  afterAll(async () => {
    await daemon?.close();
    unregisterTestEngine();
    rmSync(tmp, { recursive: true, force: true });
    rmSync(runtimeRoot(home), { recursive: true, force: true });
  });

  /** A VM of the library, running (on the test engine), made by another client as the CLI would. */
  async function runningVm(name: string) {
    const c = await daemonClient(daemon.socketPath);
    const vm = await c.call('vm.create', testVm(name));
    await c.call('vm.start', { id: vm.id });
    c.close();
    return vm;
  }

  async function booted() {
    const desk = new shell.DesktopApp();
    await desk.boot(home);
    return desk;
  }

  async function quit(desk: InstanceType<typeof shell.DesktopApp>) {
    await desk.onBeforeQuit({ preventDefault: vi.fn() });
    expect(mocks.quit).toHaveBeenCalledTimes(1);
  }

  it('opens no TCP port: windows load app://vmdesk and reach the daemon over relayed MessagePorts', async () => {
    const before = await settledClients(daemon);
    // Every listen() during boot: none may be a TCP port (the daemon here listens on its unix socket before).
    const listens: unknown[][] = [];
    const orig = net.Server.prototype.listen;
    const spy = vi.spyOn(net.Server.prototype, 'listen').mockImplementation(function (this: net.Server, ...args: unknown[]) {
      listens.push(args);
      return (orig as (...a: unknown[]) => net.Server).apply(this, args);
    });
    let desk: InstanceType<typeof shell.DesktopApp>;
    try {
      desk = await booted();
    } finally {
      spy.mockRestore();
    }
    expect(listens).toEqual([]);
    expect((desk as unknown as { server?: unknown }).server).toBeUndefined();
    // The shell keeps one connection of its own to the daemon (quit flow, tray, notifications).
    expect(await settledClients(daemon)).toBe(before + 1);
    expect(mocks.privileged).toEqual([]); // registered by main() before ready, not by boot()
    expect(mocks.protocolHandlers.has('app')).toBe(true);

    // Permissions: only clipboard and fullscreen, only for app://vmdesk.
    const ask = (perm: string, from: string) => {
      let answer: boolean | undefined;
      mocks.defaultSession.request!({ getURL: () => from }, perm, (ok) => (answer = ok), { requestingUrl: from });
      return answer;
    };
    expect(ask('clipboard-read', `${ORIGIN}/`)).toBe(true);
    expect(ask('media', `${ORIGIN}/`)).toBe(false);
    expect(ask('clipboard-read', 'http://127.0.0.1:1/')).toBe(false);
    expect(ask('clipboard-read', 'app://other/')).toBe(false);
    expect(mocks.defaultSession.check!({}, 'fullscreen', ORIGIN)).toBe(true);

    // The main window loads app://vmdesk, sandboxed; the protocol serves the page with its CSP.
    mocks.BrowserWindow.created.length = 0;
    const win = desk.createMainWindow();
    expect(mocks.BrowserWindow.created[0]!.loaded).toBe('app://vmdesk/');
    expect(mocks.BrowserWindow.created[0]!.options.webPreferences).toMatchObject({ sandbox: true, contextIsolation: true, nodeIntegration: false });
    const page = await mocks.protocolHandlers.get('app')!({ url: 'app://vmdesk/../../etc/passwd' });
    expect([200, 503]).toContain(page.status); // URL parsing keeps it inside: index.html, or "not built"
    expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");

    // A window's rpc channel: its own daemon connection, frames both ways through the main process.
    const { port1, port2 } = new MessageChannel();
    const w = windowSide(port1);
    const ipcListener = mocks.listeners.get(IPC.channel)!;
    ipcListener({ senderFrame: { url: `${ORIGIN}/`, parent: null }, sender: win.webContents, ports: [mainSide(port2)] }, { kind: 'rpc' });
    await w.next((m) => (m as { t?: string }).t === 'open');
    const hello = JSON.parse((await w.next((m) => typeof m === 'string' && m.includes('"hello"'))) as string);
    expect(hello).toMatchObject({ t: 'hello', pid: process.pid });
    expect(await settledClients(daemon)).toBe(before + 2);
    port1.postMessage(JSON.stringify({ t: 'call', id: 7, method: 'vm.list', params: {} }));
    const result = JSON.parse((await w.next((m) => typeof m === 'string' && m.includes('"result"'))) as string);
    expect(result).toMatchObject({ t: 'result', id: 7 });
    expect(Array.isArray(result.result)).toBe(true);
    // A frame that is not the contract's ends the channel and its daemon connection.
    port1.postMessage('{"t":"call","id":8,"method":"vm.list","params":{}}\n{"t":"call"}');
    expect(await w.next((m) => (m as { t?: string }).t === 'close')).toMatchObject({ reason: expect.stringMatching(/newline/) });
    expect(await settledClients(daemon)).toBe(before + 1);

    await quit(desk);
    // Quitting closes the shell's connection; the daemon stays for the CLI and the next start.
    expect(await settledClients(daemon)).toBe(before);
  });

  it('asks about the daemon\'s running VMs on quit and shuts them down through it', async () => {
    const vm = await runningVm('busy');
    const desk = await booted();
    mocks.showMessageBox.mockResolvedValue({ response: 1 });
    await quit(desk);
    expect(mocks.showMessageBox).toHaveBeenCalledTimes(1);
    expect(mocks.showMessageBox.mock.calls[0]![0].message).toContain('“busy”');
    expect((await daemon.core.get(vm.id)).state).toBe('stopped');
  });

  it('shows the running VMs in the tray, with start and stop that act through the daemon', async () => {
    const vm = await runningVm('in-tray');
    const desk = await booted();
    const tray = () => mocks.Tray.last!;
    await vi.waitFor(() => expect(tray().menu.some((i) => i.label === 'in-tray — running')).toBe(true), { timeout: 5000 });
    expect(tray().tooltip).toBe('VMDesk: 1 VM running');
    const item = tray().menu.find((i) => i.label === 'in-tray — running')!;
    expect(item.submenu!.map((i) => i.label)).toEqual(['Shut down', 'Show console']);
    item.submenu![0]!.click!();
    await vi.waitFor(async () => expect((await daemon.core.get(vm.id)).state).toBe('stopped'), { timeout: 20_000 });
    // The tray follows the daemon's events.
    await vi.waitFor(() => expect(tray().menu.find((i) => i.label?.startsWith('in-tray'))?.label).toBe('in-tray — stopped'), { timeout: 5000 });
    expect(tray().menu.find((i) => i.label === 'in-tray — stopped')!.submenu![0]!.label).toBe('Start');
    mocks.showMessageBox.mockResolvedValue({ response: 0 });
    await quit(desk);
    expect(tray().destroyed).toBe(true);
  });

  it('keeps VMs running in the background when asked to: they stay with the daemon', async () => {
    const vm = await runningVm('background');
    const desk = await booted();
    mocks.showMessageBox.mockResolvedValue({ response: 0 });
    await quit(desk);
    expect((await daemon.core.get(vm.id)).state).toBe('running');
    const c = await daemonClient(daemon.socketPath);
    expect((await c.call('vm.get', { id: vm.id })).state).toBe('running');
    await c.call('vm.kill', { id: vm.id });
    c.close();
  });

  it('still asks, and still shuts down, after the daemon was restarted under it', async () => {
    const desk = await booted();
    // `vmdesk daemon stop`, or an upgrade: the shell's connection goes with the old daemon.
    await daemon.close();
    daemon = await startDaemon({ home, idleExitMs: 0 });
    const vm = await runningVm('after-restart');
    mocks.showMessageBox.mockResolvedValue({ response: 1 });
    await quit(desk);
    expect(mocks.showMessageBox).toHaveBeenCalledTimes(1);
    expect(mocks.showMessageBox.mock.calls[0]![0].message).toContain('“after-restart”');
    expect((await daemon.core.get(vm.id)).state).toBe('stopped');
  });
});
