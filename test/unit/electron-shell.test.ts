// The Electron shell with a mocked 'electron': secure webPreferences, navigation/window-open/permission denial,
// IPC sender checks, the quit flow, and boot as a client of the library's daemon (a real one, in this process)
// serving its windows through a relay on 127.0.0.1.
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const mocks = vi.hoisted(() => {
  /** A stand-in BrowserWindow that records what it was built with and the URL it loaded. */
  class FakeWindow {
    static created: FakeWindow[] = [];
    readonly webContents: { listeners: Map<string, unknown>; on(ev: string, fn: unknown): void; setWindowOpenHandler(fn: unknown): void };
    loaded: string | undefined;
    constructor(readonly options: { webPreferences?: Record<string, unknown> }) {
      const listeners = new Map<string, unknown>();
      this.webContents = { listeners, on: (ev, fn) => listeners.set(ev, fn), setWindowOpenHandler: () => {} };
      FakeWindow.created.push(this);
    }
    once(): void {}
    on(): void {}
    focus(): void {}
    isDestroyed(): boolean {
      return false;
    }
    loadURL(url: string): Promise<void> {
      this.loaded = url;
      return Promise.resolve();
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
    showMessageBox: vi.fn(),
    openExternal: vi.fn(),
    quit: vi.fn(),
    BrowserWindow: FakeWindow,
  };
});

vi.mock('electron', () => ({
  app: { quit: mocks.quit, on: vi.fn(), whenReady: vi.fn(), requestSingleInstanceLock: vi.fn(() => true) },
  BrowserWindow: mocks.BrowserWindow,
  Menu: { setApplicationMenu: vi.fn(), buildFromTemplate: vi.fn((t: unknown) => t) },
  dialog: { showMessageBox: mocks.showMessageBox, showOpenDialog: vi.fn() },
  ipcMain: { handle: (ch: string, fn: (...args: unknown[]) => unknown) => mocks.handlers.set(ch, fn) },
  screen: { getAllDisplays: () => [] },
  session: { defaultSession: mocks.defaultSession },
  shell: { openExternal: mocks.openExternal, showItemInFolder: vi.fn() },
}));

const shell = await import('../../main/electron/main.js');
const { startDaemon } = await import('../../main/daemon/daemon.js');
const { runtimeRoot } = await import('../../main/platform/paths.js');
const { daemonClient, settledClients, upgradeStatus, wsClient } = await import('../helpers/daemon.js');
const { registerTestEngine, testVm, unregisterTestEngine } = await import('../helpers/test-engine.js');
const { IPC, OpenFileArgs } = await import('../../main/electron/ipc-contract.js');
const { loadWindowState, saveWindowState, fitToDisplays } = await import('../../main/electron/window-state.js');

const ORIGIN = 'http://127.0.0.1:4321';
const TOKEN = 'tok-0123456789abcdef';

/** A DesktopApp with a stand-in server and its IPC handlers registered (boot() minus core, server and session). */
function deskWithServer() {
  const desk = new shell.DesktopApp();
  desk.server = { url: `${ORIGIN}/?token=${TOKEN}`, port: 4321, token: TOKEN, close: vi.fn(async () => {}) } as never;
  desk.registerIpc();
  return { desk };
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

  it('never puts the token on a renderer\'s command line (additionalArguments land in /proc/<pid>/cmdline)', () => {
    const { desk } = deskWithServer();
    mocks.BrowserWindow.created.length = 0;
    desk.openConsoleWindow('vm1');
    expect(mocks.BrowserWindow.created).toHaveLength(1);
    const prefs = mocks.BrowserWindow.created[0]!.options.webPreferences!;
    expect(prefs.additionalArguments ?? []).toEqual([]);
    expect(JSON.stringify(mocks.BrowserWindow.created[0]!.options)).not.toContain(TOKEN);
    // The console window opens on the origin alone; the cookie set by the main window authenticates it.
    expect(mocks.BrowserWindow.created[0]!.loaded).toBe(`${ORIGIN}/#/console/vm1`);
  });
});

describe('navigation and new windows', () => {
  it('denies navigation to any other origin and allows reloads of our own', () => {
    const wc = fakeWebContents();
    shell.hardenWebContents(wc as never, ORIGIN);
    expect(navigate(wc, 'will-navigate', 'https://evil.example/')).toBe(true);
    expect(navigate(wc, 'will-navigate', 'http://127.0.0.1:9999/')).toBe(true);
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

  it('hands the endpoint and token only to our own window\'s main frame', async () => {
    const { desk } = deskWithServer();
    const win = desk.openConsoleWindow('vm-ipc');
    const handler = mocks.handlers.get(IPC.connection)!;
    expect(handler).toBeDefined();
    const ours = { senderFrame: { url: `${ORIGIN}/#/console/vm-ipc`, parent: null }, sender: win.webContents };
    expect(await handler(ours)).toEqual({ endpoint: 'ws://127.0.0.1:4321/ws', token: TOKEN });
    // A page of another origin, a sub-frame of ours, a frame-less event, a web contents that is not one of our windows.
    const foreign = [
      { senderFrame: { url: 'https://evil.example/', parent: null }, sender: win.webContents },
      { senderFrame: { url: `${ORIGIN}/`, parent: {} }, sender: win.webContents },
      { senderFrame: null, sender: win.webContents },
      { senderFrame: { url: `${ORIGIN}/`, parent: null }, sender: { id: 'some other web contents' } },
    ];
    for (const ev of foreign) expect(() => handler(ev), JSON.stringify(ev.senderFrame)).toThrow(/refused/);
    // The request takes no arguments: extra ones are refused too.
    expect(() => handler(ours, 'extra')).toThrow(/invalid arguments/);
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
    desk.server = { url: `${ORIGIN}/?token=t`, port: 4321, token: 't', close: vi.fn(async () => {}) };
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
    const requireFn = (name: string) => {
      if (name !== 'electron') throw new Error(`sandboxed preload may not require ${name}`);
      return { contextBridge: { exposeInMainWorld: (k: string, v: unknown) => (exposed[k] = v) }, ipcRenderer: { invoke, on } };
    };
    const fakeProcess = { argv: ['electron'] };
    new Function('require', 'process', 'exports', 'module', js)(requireFn, fakeProcess, {}, { exports: {} });
    return { exposed, invoke, on };
  }

  it('exposes exactly one small, named global and nothing generic', async () => {
    const { exposed, invoke, on } = await runPreload();
    expect(Object.keys(exposed)).toEqual(['vmdesk']);
    const api = exposed.vmdesk as Record<string, unknown>;
    expect(Object.keys(api).sort()).toEqual(['connection', 'onMenuCommand', 'openConsole', 'openFile', 'revealInFolder']);
    expect(Object.isFrozen(api)).toBe(true);
    expect(Object.values(api).some((v) => v && typeof v === 'object')).toBe(false); // no ipcRenderer or other objects
    // The endpoint and token are asked for over IPC, with no arguments for the page to steer.
    await (api.connection as () => Promise<unknown>)();
    await (api.openFile as (f: unknown) => Promise<unknown>)([{ name: 'ISO', extensions: ['iso'] }]);
    await (api.revealInFolder as (p: string) => Promise<unknown>)('/tmp');
    await (api.openConsole as (p: string) => Promise<unknown>)('vm1');
    expect(invoke.mock.calls.map((c) => c[0])).toEqual([IPC.connection, IPC.openFile, IPC.revealInFolder, IPC.openConsole]);
    expect(invoke.mock.calls[0]).toEqual([IPC.connection]);
    const seen: string[] = [];
    (api.onMenuCommand as (fn: (c: string) => void) => void)((c) => seen.push(c));
    expect(on.mock.calls[0]![0]).toBe(IPC.menu);
    const listener = on.mock.calls[0]![1] as (e: unknown, c: unknown) => void;
    listener({ sender: 'the IPC event must not leak' }, 'new-vm');
    expect(seen).toEqual(['new-vm']);
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

  it('serves its windows through a relay to the daemon on 127.0.0.1, behind the token', async () => {
    const before = await settledClients(daemon);
    const desk = await booted();
    const server = desk.server!;
    const url = new URL(server.url);
    expect(url.hostname).toBe('127.0.0.1');
    expect(url.searchParams.get('token')).toBe(server.token);
    expect(server.token.length).toBeGreaterThanOrEqual(43); // 32 random bytes
    // The shell keeps one connection of its own to the daemon (the quit flow).
    expect(await settledClients(daemon)).toBe(before + 1);
    // A window's WebSocket reaches this daemon; without the token nothing does.
    const page = await wsClient(server);
    expect(await page.next((f) => f.t === 'hello')).toMatchObject({ pid: process.pid });
    page.close();
    expect(await upgradeStatus(server, '/ws', {})).toBe(401);
    expect(await upgradeStatus(server, '/ws', { 'x-vmdesk-token': server.token, origin: 'http://evil.example' })).toBe(403);

    // Permissions: only clipboard and fullscreen, only for this server's origin.
    const ask = (perm: string, from: string) => {
      let answer: boolean | undefined;
      mocks.defaultSession.request!({ getURL: () => from }, perm, (ok) => (answer = ok), { requestingUrl: from });
      return answer;
    };
    expect(ask('clipboard-read', `${url.origin}/`)).toBe(true);
    expect(ask('media', `${url.origin}/`)).toBe(false);
    expect(ask('clipboard-read', 'http://127.0.0.1:1/')).toBe(false);
    expect(mocks.defaultSession.check!({}, 'fullscreen', url.origin)).toBe(true);

    // The main window loads the URL with the token once, sandboxed; IPC hands this server's endpoint to it alone.
    mocks.BrowserWindow.created.length = 0;
    const win = desk.createMainWindow();
    expect(mocks.BrowserWindow.created[0]!.loaded).toBe(server.url);
    expect(mocks.BrowserWindow.created[0]!.options.webPreferences).toMatchObject({ sandbox: true, contextIsolation: true, nodeIntegration: false });
    const handler = mocks.handlers.get(IPC.connection)!;
    expect(await handler({ senderFrame: { url: `${url.origin}/`, parent: null }, sender: win.webContents })).toEqual({ endpoint: `ws://127.0.0.1:${server.port}/ws`, token: server.token });
    expect(() => handler({ senderFrame: { url: 'https://evil.example/', parent: null }, sender: win.webContents })).toThrow(/refused/);

    await quit(desk);
    // Quitting closes the server and the shell's connection; the daemon stays for the CLI and the next start.
    expect(await upgradeStatus(server, '/ws')).toBeUndefined();
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
