// The Electron shell with a mocked 'electron': secure webPreferences, navigation/window-open/permission denial, IPC sender checks, the quit flow.
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const mocks = vi.hoisted(() => ({
  handlers: new Map<string, (...args: unknown[]) => unknown>(),
  showMessageBox: vi.fn(),
  openExternal: vi.fn(),
  quit: vi.fn(),
}));

vi.mock('electron', () => ({
  app: { quit: mocks.quit, on: vi.fn(), whenReady: vi.fn(), requestSingleInstanceLock: vi.fn(() => true) },
  BrowserWindow: vi.fn(),
  Menu: { setApplicationMenu: vi.fn(), buildFromTemplate: vi.fn((t: unknown) => t) },
  dialog: { showMessageBox: mocks.showMessageBox, showOpenDialog: vi.fn() },
  ipcMain: { handle: (ch: string, fn: (...args: unknown[]) => unknown) => mocks.handlers.set(ch, fn) },
  screen: { getAllDisplays: () => [] },
  session: { defaultSession: {} },
  shell: { openExternal: mocks.openExternal, showItemInFolder: vi.fn() },
}));

const shell = await import('../../main/electron/main.js');
const { IPC, OpenFileArgs } = await import('../../main/electron/ipc-contract.js');
const { loadWindowState, saveWindowState, fitToDisplays } = await import('../../main/electron/window-state.js');

const ORIGIN = 'http://127.0.0.1:4321';

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
    const p = shell.secureWebPreferences('ws://127.0.0.1:4321/ws', 'tok');
    expect(p).toMatchObject({ sandbox: true, contextIsolation: true, nodeIntegration: false, nodeIntegrationInWorker: false, nodeIntegrationInSubFrames: false, webSecurity: true, allowRunningInsecureContent: false, webviewTag: false });
    expect(p.preload).toMatch(/preload[/\\]index\.js$/);
    expect(p.additionalArguments).toEqual(['--vmdesk-endpoint=ws://127.0.0.1:4321/ws', '--vmdesk-token=tok']);
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
    const fakeProcess = { argv: ['electron', '--vmdesk-endpoint=ws://127.0.0.1:1/ws', '--vmdesk-token=secret'] };
    new Function('require', 'process', 'exports', 'module', js)(requireFn, fakeProcess, {}, { exports: {} });
    return { exposed, invoke, on };
  }

  it('exposes exactly one small, named global and nothing generic', async () => {
    const { exposed, invoke, on } = await runPreload();
    expect(Object.keys(exposed)).toEqual(['vmdesk']);
    const api = exposed.vmdesk as Record<string, unknown>;
    expect(Object.keys(api).sort()).toEqual(['endpoint', 'onMenuCommand', 'openConsole', 'openFile', 'revealInFolder', 'token']);
    expect(Object.isFrozen(api)).toBe(true);
    expect(api.endpoint).toBe('ws://127.0.0.1:1/ws');
    expect(api.token).toBe('secret');
    expect(Object.values(api).some((v) => v && typeof v === 'object')).toBe(false); // no ipcRenderer or other objects
    await (api.openFile as (f: unknown) => Promise<unknown>)([{ name: 'ISO', extensions: ['iso'] }]);
    await (api.revealInFolder as (p: string) => Promise<unknown>)('/tmp');
    await (api.openConsole as (p: string) => Promise<unknown>)('vm1');
    expect(invoke.mock.calls.map((c) => c[0])).toEqual([IPC.openFile, IPC.revealInFolder, IPC.openConsole]);
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
});
