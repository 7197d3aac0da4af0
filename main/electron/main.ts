// The Electron shell (the only main-process file importing 'electron'): a client of the library's daemon that
// serves the GUI to sandboxed windows through an in-process relay server on 127.0.0.1.
import { app, BrowserWindow, Menu, dialog, ipcMain, screen, session, shell } from 'electron';
import type { IpcMainInvokeEvent, MenuItemConstructorOptions, Session, WebContents, WebPreferences } from 'electron';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { z } from 'zod';
import type { VmInfo } from '../api/schema.js';
import type { FrameClient } from '../api/frame-client.js';
import { connectDaemon } from '../client/daemon-client.js';
import { defaultHome } from '../platform/paths.js';
import { startServer, type RunningServer } from '../server/server.js';
import { ConnectionArgs, IPC, OpenConsoleArgs, OpenFileArgs, RevealArgs, type DesktopConnection, type MenuCommand } from './ipc-contract.js';
import { DEFAULT_WINDOW_STATE, fitToDisplays, loadWindowState, saveWindowState, windowStateFile, type WindowState } from './window-state.js';
import { QUIT_BUTTONS, choiceFromButton, quitQuestion, runningVms, type QuitChoice } from './quit-flow.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const PRELOAD_PATH = path.join(here, 'preload', 'index.js');

/** Permissions our own pages may use (Copy/Paste buttons, fullscreen console); everything else is refused. */
export const ALLOWED_PERMISSIONS = new Set(['clipboard-read', 'clipboard-sanitized-write', 'fullscreen']);

/**
 * No additionalArguments: they become the renderer process's command line, which /proc/<pid>/cmdline shows
 * to every local user. The preload asks for the endpoint and token over IPC instead (IPC.connection).
 */
export function secureWebPreferences(preload = PRELOAD_PATH): WebPreferences {
  return {
    preload,
    sandbox: true,
    contextIsolation: true,
    nodeIntegration: false,
    nodeIntegrationInWorker: false,
    nodeIntegrationInSubFrames: false,
    webSecurity: true,
    allowRunningInsecureContent: false,
    webviewTag: false,
    navigateOnDragDrop: false,
    spellcheck: false,
  };
}

export function originOf(url: string): string | null {
  try {
    return new URL(url).origin;
  } catch {
    return null;
  }
}

/** No navigation away from our origin, no new windows, no <webview>: the renderer stays a single trusted page. */
export function hardenWebContents(wc: WebContents, origin: string): void {
  wc.on('will-navigate', (event, url) => {
    if (originOf(url) !== origin) event.preventDefault();
  });
  wc.on('will-redirect', (event, url) => {
    if (originOf(url) !== origin) event.preventDefault();
  });
  wc.setWindowOpenHandler(({ url }) => {
    // Links to documentation open in the user's browser, never inside the app.
    if (/^https:\/\//.test(url)) void shell.openExternal(url);
    return { action: 'deny' };
  });
  wc.on('will-attach-webview', (event) => event.preventDefault());
}

export function installPermissionPolicy(ses: Session, origin: string): void {
  ses.setPermissionRequestHandler((wc, permission, callback, details) => {
    const from = originOf(details.requestingUrl ?? wc.getURL());
    callback(from === origin && ALLOWED_PERMISSIONS.has(permission));
  });
  ses.setPermissionCheckHandler((_wc, permission, requestingOrigin) => originOf(requestingOrigin) === origin && ALLOWED_PERMISSIONS.has(permission));
}

/** IPC from anything but our own page's main frame is refused (VS Code's validatedIpcMain). */
export function isTrustedSender(event: Pick<IpcMainInvokeEvent, 'senderFrame' | 'sender'>, origin: string): boolean {
  const frame = event.senderFrame;
  if (!frame) return false;
  if (frame.parent) return false; // a sub-frame
  return originOf(frame.url) === origin;
}

export function validatedHandle<S extends z.ZodType<unknown[]>>(channel: string, schema: S, getOrigin: () => string, fn: (event: IpcMainInvokeEvent, args: z.output<S>) => unknown): void {
  ipcMain.handle(channel, (event, ...raw) => {
    if (!isTrustedSender(event, getOrigin())) throw new Error(`refused ${channel} from an untrusted sender`);
    const parsed = schema.safeParse(raw);
    if (!parsed.success) throw new Error(`invalid arguments for ${channel}`);
    return fn(event, parsed.data);
  });
}

/** Asks what to do with running VMs; 'keep' also when nothing runs. */
export async function askAboutRunningVms(core: { list(): Promise<VmInfo[]> }, parent: BrowserWindow | undefined): Promise<{ choice: QuitChoice; running: string[] }> {
  const running = runningVms(await core.list());
  if (!running.length) return { choice: 'keep', running: [] };
  const q = quitQuestion(running);
  const opts = { type: 'question' as const, buttons: [...QUIT_BUTTONS], defaultId: 0, cancelId: 2, message: q.message, detail: q.detail, noLink: true };
  const r = parent ? await dialog.showMessageBox(parent, opts) : await dialog.showMessageBox(opts);
  return { choice: choiceFromButton(r.response), running: running.map((v) => v.id) };
}

export class DesktopApp {
  /** The daemon connection the shell itself uses (quit flow); windows have their own through the server. */
  core: { list(): Promise<VmInfo[]>; stop(id: string, opts: { timeoutMs: number }): Promise<unknown>; shutdown(): Promise<void>; home: string } | undefined;
  server: RunningServer | undefined;
  mainWindow: BrowserWindow | undefined;
  private consoleWindows = new Map<string, BrowserWindow>();
  private quitting: 'no' | 'asking' | 'done' = 'no';
  private stateFile = '';

  get origin(): string {
    return this.server ? new URL(this.server.url).origin : 'null';
  }

  async boot(home?: string): Promise<void> {
    const lib = home ?? defaultHome();
    // Connected now, so a daemon of this build serves the library before the first window loads; connected
    // again when that daemon has gone meanwhile (`vmdesk daemon stop`, an upgrade), so the quit question still
    // sees the running VMs and can shut them down.
    let client: FrameClient | undefined = await connectDaemon(lib);
    const daemon = async (): Promise<FrameClient> => {
      if (!client || client.isClosed) client = await connectDaemon(lib);
      return client;
    };
    this.core = {
      home: lib,
      list: async () => (await daemon()).call('vm.list', {}),
      stop: async (id, opts) => (await daemon()).call('vm.stop', { id, timeoutMs: opts.timeoutMs }),
      shutdown: async () => {
        client?.close();
        client = undefined;
      },
    };
    this.server = await startServer({ home: lib, host: '127.0.0.1' });
    this.stateFile = windowStateFile(this.core.home);
    installPermissionPolicy(session.defaultSession, this.origin);
    this.registerIpc();
    Menu.setApplicationMenu(Menu.buildFromTemplate(this.menuTemplate()));
  }

  private endpoint(): string {
    return `ws://127.0.0.1:${this.server!.port}/ws`;
  }

  private newWindow(opts: { width: number; height: number; x?: number; y?: number; title: string }): BrowserWindow {
    const win = new BrowserWindow({
      ...opts,
      minWidth: 640,
      minHeight: 420,
      show: false,
      backgroundColor: '#f3f4f6',
      webPreferences: secureWebPreferences(),
    });
    hardenWebContents(win.webContents, this.origin);
    win.once('ready-to-show', () => win.show());
    return win;
  }

  createMainWindow(): BrowserWindow {
    const saved = fitToDisplays(loadWindowState(this.stateFile), screen.getAllDisplays().map((d) => d.workArea));
    const win = this.newWindow({ width: saved.width, height: saved.height, x: saved.x, y: saved.y, title: 'VMDesk' });
    if (saved.maximized) win.maximize();
    let timer: NodeJS.Timeout | undefined;
    const remember = () => {
      clearTimeout(timer);
      timer = setTimeout(() => void this.persistWindow(win), 400);
    };
    win.on('resize', remember);
    win.on('move', remember);
    win.on('close', () => void this.persistWindow(win));
    win.on('closed', () => {
      if (this.mainWindow === win) this.mainWindow = undefined;
    });
    // The URL carries the token once; the server answers with a cookie and a clean URL.
    void win.loadURL(this.server!.url);
    this.mainWindow = win;
    return win;
  }

  private async persistWindow(win: BrowserWindow): Promise<void> {
    if (win.isDestroyed()) return;
    const b = win.getNormalBounds();
    const state: WindowState = { ...DEFAULT_WINDOW_STATE, x: b.x, y: b.y, width: b.width, height: b.height, maximized: win.isMaximized() };
    await saveWindowState(this.stateFile, state).catch(() => {});
  }

  openConsoleWindow(vmId: string): BrowserWindow {
    const existing = this.consoleWindows.get(vmId);
    if (existing && !existing.isDestroyed()) {
      existing.focus();
      return existing;
    }
    const win = this.newWindow({ width: 1060, height: 760, title: 'VMDesk console' });
    this.consoleWindows.set(vmId, win);
    win.on('closed', () => this.consoleWindows.delete(vmId));
    void win.loadURL(`${this.origin}/#/console/${encodeURIComponent(vmId)}`);
    return win;
  }

  /** True when wc belongs to one of the windows this app opened (the main window or a console window). */
  ownsWebContents(wc: WebContents | undefined): boolean {
    if (!wc) return false;
    const wins = [this.mainWindow, ...this.consoleWindows.values()];
    return wins.some((w) => !!w && !w.isDestroyed() && w.webContents === wc);
  }

  registerIpc(): void {
    const origin = () => this.origin;
    // The token opens everything: only our own page, in a window we opened, gets it. validatedHandle has
    // already checked that the sender is a main frame of our origin.
    validatedHandle(IPC.connection, ConnectionArgs, origin, (event): DesktopConnection => {
      if (!this.ownsWebContents(event.sender)) throw new Error(`refused ${IPC.connection}: the sender is not a VMDesk window`);
      return { endpoint: this.endpoint(), token: this.server!.token };
    });
    validatedHandle(IPC.openFile, OpenFileArgs, origin, async (event, [filters]) => {
      const win = BrowserWindow.fromWebContents(event.sender) ?? undefined;
      const opts = { properties: ['openFile' as const], filters: [...(filters ?? []), { name: 'All files', extensions: ['*'] }] };
      const r = win ? await dialog.showOpenDialog(win, opts) : await dialog.showOpenDialog(opts);
      return r.canceled ? null : (r.filePaths[0] ?? null);
    });
    validatedHandle(IPC.revealInFolder, RevealArgs, origin, (_event, [p]) => {
      shell.showItemInFolder(p);
    });
    validatedHandle(IPC.openConsole, OpenConsoleArgs, origin, (_event, [vmId]) => {
      this.openConsoleWindow(vmId);
    });
  }

  private sendMenu(cmd: MenuCommand): void {
    const win = BrowserWindow.getFocusedWindow() ?? this.mainWindow;
    win?.webContents.send(IPC.menu, cmd);
  }

  menuTemplate(): MenuItemConstructorOptions[] {
    const isMac = process.platform === 'darwin';
    return [
      ...(isMac ? [{ role: 'appMenu' as const }] : []),
      {
        label: '&Machine',
        submenu: [
          { label: 'New…', accelerator: 'CmdOrCtrl+N', click: () => this.sendMenu('new-vm') },
          { label: 'Settings…', accelerator: 'CmdOrCtrl+S', click: () => this.sendMenu('settings') },
          { type: 'separator' },
          isMac ? { role: 'close' } : { role: 'quit', accelerator: 'CmdOrCtrl+Q' },
        ],
      },
      { role: 'editMenu' },
      {
        label: '&View',
        submenu: [{ role: 'reload' }, { role: 'forceReload' }, { role: 'toggleDevTools' }, { type: 'separator' }, { role: 'resetZoom' }, { role: 'zoomIn' }, { role: 'zoomOut' }, { type: 'separator' }, { role: 'togglefullscreen' }],
      },
      { role: 'windowMenu' },
      { role: 'help', submenu: [{ label: 'VMDesk on the web', click: () => void shell.openExternal('https://github.com/') }] },
    ];
  }

  /** before-quit: ask once about running VMs, then keep them or shut them down, then really quit. */
  async onBeforeQuit(event: { preventDefault(): void }): Promise<void> {
    if (this.quitting === 'done' || !this.core) return;
    event.preventDefault();
    if (this.quitting === 'asking') return;
    this.quitting = 'asking';
    try {
      const { choice, running } = await askAboutRunningVms(this.core, this.mainWindow);
      if (choice === 'cancel') {
        this.quitting = 'no';
        return;
      }
      if (choice === 'shutdown') {
        // ACPI first; a guest that ignores it is forced off after 30 s.
        await Promise.allSettled(running.map((id) => this.core!.stop(id, { timeoutMs: 30_000 })));
      }
      await this.server?.close();
      await this.core.shutdown();
    } catch {
      /* quitting must not be blocked by a failure here */
    }
    this.quitting = 'done';
    app.quit();
  }
}

export async function main(): Promise<void> {
  if (!app.requestSingleInstanceLock()) {
    app.quit();
    return;
  }
  const desk = new DesktopApp();
  app.on('second-instance', () => {
    const w = desk.mainWindow;
    if (w) {
      if (w.isMinimized()) w.restore();
      w.focus();
    }
  });
  app.on('web-contents-created', (_e, wc) => {
    wc.on('will-attach-webview', (event) => event.preventDefault());
  });
  app.on('before-quit', (event) => void desk.onBeforeQuit(event));
  // Closing the last window quits (and asks about running VMs); VMs can keep running without the app.
  app.on('window-all-closed', () => app.quit());
  app.on('activate', () => {
    if (!desk.mainWindow && desk.server) desk.createMainWindow();
  });
  await app.whenReady();
  await desk.boot(process.env.VMDESK_HOME);
  desk.createMainWindow();
}

if (process.versions.electron) void main();
