// The Electron shell (the only main-process file importing 'electron'): a client of the library's daemon whose
// sandboxed windows load the renderer from app://vmdesk (protocol.ts) and reach VMDesk over MessagePorts that
// this process relays to the daemon's unix socket and to the VMs' VNC sockets (port-relay.ts). It opens no TCP
// port and holds no token; `vmdesk serve` is the browser mode.
import { app, BrowserWindow, Menu, Notification, Tray, dialog, ipcMain, nativeImage, protocol, screen, session, shell } from 'electron';
import type { IpcMainEvent, IpcMainInvokeEvent, MenuItemConstructorOptions, Session, WebContents, WebPreferences } from 'electron';
import path from 'node:path';
import type { z } from 'zod';
import type { VmInfo } from '../api/schema.js';
import { defaultHome } from '../platform/paths.js';
import { buildInfo } from '../platform/node-entry.js';
import { iconFile, resources } from '../platform/resources.js';
import { aboutPanelOptions } from './about.js';
import { ChannelHub } from './channels.js';
import { DaemonLink } from './daemon-link.js';
import { ChannelArgs, IPC, OpenConsoleArgs, OpenFileArgs, RevealArgs, type MenuCommand, type OpenPathCommand } from './ipc-contract.js';
import { JobWatcher } from './notifications.js';
import { OPENABLE, openRequestFor, openRequestsFromArgv, type OpenRequest } from './open-files.js';
import type { PortLike } from './port-relay.js';
import { APP_ORIGIN, APP_SCHEME, APP_SCHEME_PRIVILEGES, APP_URL, originOf, rendererResponse } from './protocol.js';
import { QUIT_BUTTONS, choiceFromButton, quitQuestion, runningVms, type QuitChoice } from './quit-flow.js';
import { trayMenuTemplate, trayTooltip, wantTray } from './tray-menu.js';
import { DEFAULT_WINDOW_STATE, fitToDisplays, loadWindowState, saveWindowState, windowStateFile, type WindowState } from './window-state.js';

export { originOf };
export const PRELOAD_PATH = resources().preload;

/** Permissions our own pages may use (Copy/Paste buttons, fullscreen console); everything else is refused. */
export const ALLOWED_PERMISSIONS = new Set(['clipboard-read', 'clipboard-sanitized-write', 'fullscreen']);

/**
 * No additionalArguments: they become the renderer process's command line, which /proc/<pid>/cmdline shows
 * to every local user. Nothing secret exists to hand over anyway: a window's channels are MessagePorts.
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

/**
 * ipcMain.handle with the sender checked (a main frame of our origin and, when `owns` is given, a web contents
 * of a window this app opened) and the arguments parsed by `schema` before `fn` sees them.
 */
export function validatedHandle<S extends z.ZodType<unknown[]>>(
  channel: string,
  schema: S,
  getOrigin: () => string,
  fn: (event: IpcMainInvokeEvent, args: z.output<S>) => unknown,
  owns?: (wc: WebContents) => boolean,
): void {
  ipcMain.handle(channel, (event, ...raw) => {
    if (!isTrustedSender(event, getOrigin()) || (owns && !owns(event.sender))) throw new Error(`refused ${channel} from an untrusted sender`);
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

/** Electron's MessagePortMain as port-relay.ts's PortLike (its 'message' events already carry { data }). */
function portLike(p: Electron.MessagePortMain): PortLike {
  return p as unknown as PortLike;
}

export class DesktopApp {
  /** The shell's own connection to the daemon (quit flow, tray, file opening, notifications). */
  core: { list(): Promise<VmInfo[]>; stop(id: string, opts: { timeoutMs: number }): Promise<unknown>; shutdown(): Promise<void>; home: string } | undefined;
  link: DaemonLink | undefined;
  hub: ChannelHub | undefined;
  mainWindow: BrowserWindow | undefined;
  tray: Tray | undefined;
  private consoleWindows = new Map<string, BrowserWindow>();
  private quitting: 'no' | 'asking' | 'done' = 'no';
  private stateFile = '';
  /** Files opened before a window could take them. */
  private pendingOpens: OpenRequest[] = [];
  private vmNames = new Map<string, string>();
  private readonly jobs = new JobWatcher();
  readonly origin = APP_ORIGIN;

  async boot(home?: string): Promise<void> {
    const lib = home ?? defaultHome();
    // Connected now, so a daemon of this build serves the library before the first window loads; calls
    // reconnect when that daemon has gone meanwhile (`vmdesk daemon stop`, an upgrade), so the quit question
    // still sees the running VMs and can shut them down.
    const link = new DaemonLink(lib);
    await link.start();
    this.link = link;
    this.core = {
      home: lib,
      list: () => link.call('vm.list', {}),
      stop: (id, opts) => link.call('vm.stop', { id, timeoutMs: opts.timeoutMs }),
      shutdown: async () => link.close(),
    };
    this.hub = new ChannelHub(lib, { vncSocket: async (vm) => (await link.call('vm.vncSocket', { id: vm })).path });
    this.stateFile = windowStateFile(lib);
    const rendererDir = resources().rendererDir;
    protocol.handle(APP_SCHEME, (request) => rendererResponse(rendererDir, request));
    installPermissionPolicy(session.defaultSession, this.origin);
    this.registerIpc();
    Menu.setApplicationMenu(Menu.buildFromTemplate(this.menuTemplate()));
    this.watchDaemon();
    this.setAbout();
  }

  private newWindow(opts: { width: number; height: number; x?: number; y?: number; title: string }): BrowserWindow {
    const win = new BrowserWindow({
      ...opts,
      minWidth: 640,
      minHeight: 420,
      show: false,
      backgroundColor: '#f3f4f6',
      // Linux takes the window icon from here (macOS from the bundle).
      ...(process.platform === 'linux' ? { icon: iconFile(resources(), 256) } : {}),
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
    win.webContents.on('did-finish-load', () => this.flushOpens());
    void win.loadURL(APP_URL);
    this.mainWindow = win;
    return win;
  }

  private async persistWindow(win: BrowserWindow): Promise<void> {
    if (win.isDestroyed()) return;
    const b = win.getNormalBounds();
    const state: WindowState = { ...DEFAULT_WINDOW_STATE, x: b.x, y: b.y, width: b.width, height: b.height, maximized: win.isMaximized() };
    await saveWindowState(this.stateFile, state).catch(() => {});
  }

  showMainWindow(): void {
    const w = this.mainWindow;
    if (!w || w.isDestroyed()) {
      this.createMainWindow();
      return;
    }
    if (w.isMinimized()) w.restore();
    w.show();
    w.focus();
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
    void win.loadURL(`${APP_URL}#/console/${encodeURIComponent(vmId)}`);
    return win;
  }

  /** True when wc belongs to one of the windows this app opened (the main window or a console window). */
  ownsWebContents(wc: WebContents | undefined): boolean {
    if (!wc) return false;
    const wins = [this.mainWindow, ...this.consoleWindows.values()];
    return wins.some((w) => !!w && !w.isDestroyed() && w.webContents === wc);
  }

  /**
   * A window asks for a channel (ipcRenderer.postMessage with one MessagePort). Only a main frame of app://vmdesk
   * in a window this app opened is served, with arguments the contract allows and exactly one port; anything
   * else closes the ports it brought. Returns why it was refused (tests), or undefined when relayed.
   */
  async onChannelRequest(event: Pick<IpcMainEvent, 'senderFrame' | 'sender' | 'ports'>, raw: unknown[]): Promise<string | undefined> {
    const ports = event.ports ?? [];
    const refuse = (why: string) => {
      for (const p of ports) p.close();
      return why;
    };
    if (!isTrustedSender(event, this.origin) || !this.ownsWebContents(event.sender)) return refuse(`refused ${IPC.channel} from an untrusted sender`);
    const parsed = ChannelArgs.safeParse(raw);
    if (!parsed.success) return refuse(`invalid arguments for ${IPC.channel}`);
    if (ports.length !== 1 || !this.hub) return refuse(`${IPC.channel} needs exactly one port`);
    await this.hub.openChannel(parsed.data[0], portLike(ports[0]!));
    return undefined;
  }

  registerIpc(): void {
    const origin = () => this.origin;
    const owns = (wc: WebContents) => this.ownsWebContents(wc);
    ipcMain.on(IPC.channel, (event, ...raw) => void this.onChannelRequest(event, raw));
    validatedHandle(IPC.openFile, OpenFileArgs, origin, async (event, [filters]) => {
      const win = BrowserWindow.fromWebContents(event.sender) ?? undefined;
      const opts = { properties: ['openFile' as const], filters: [...(filters ?? []), { name: 'All files', extensions: ['*'] }] };
      const r = win ? await dialog.showOpenDialog(win, opts) : await dialog.showOpenDialog(opts);
      return r.canceled ? null : (r.filePaths[0] ?? null);
    }, owns);
    validatedHandle(IPC.revealInFolder, RevealArgs, origin, (_event, [p]) => {
      shell.showItemInFolder(p);
    }, owns);
    validatedHandle(IPC.openConsole, OpenConsoleArgs, origin, (_event, [vmId]) => void this.openConsoleWindow(vmId), owns);
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
          { label: '&New…', accelerator: 'CmdOrCtrl+N', click: () => this.sendMenu('new-vm') },
          { label: '&Import Appliance…', accelerator: 'CmdOrCtrl+I', click: () => void this.chooseImport() },
          { label: '&Settings…', accelerator: 'CmdOrCtrl+S', click: () => this.sendMenu('settings') },
          { type: 'separator' },
          { role: 'close', accelerator: 'CmdOrCtrl+W' },
          ...(isMac ? [] : [{ role: 'quit' as const, accelerator: 'CmdOrCtrl+Q' }]),
        ],
      },
      { role: 'editMenu' },
      {
        label: '&View',
        submenu: [{ role: 'reload' }, { role: 'forceReload' }, { role: 'toggleDevTools' }, { type: 'separator' }, { role: 'resetZoom' }, { role: 'zoomIn' }, { role: 'zoomOut' }, { type: 'separator' }, { role: 'togglefullscreen' }],
      },
      { role: 'windowMenu' },
      {
        role: 'help',
        submenu: [
          { label: 'VMDesk on the web', click: () => void shell.openExternal('https://github.com/') },
          ...(isMac ? [] : [{ type: 'separator' as const }, { label: '&About VMDesk', click: () => app.showAboutPanel() }]),
        ],
      },
    ];
  }

  private setAbout(): void {
    const { version, build } = buildInfo();
    const h = this.link?.hello;
    app.setAboutPanelOptions(aboutPanelOptions({ version, build, versions: process.versions, daemon: h ? { app: h.app, build: h.build, pid: h.pid, version: h.version } : undefined }));
  }

  /** Tray, notifications and VM names from the daemon's events (refreshed after every reconnection). */
  private watchDaemon(): void {
    const link = this.link!;
    let timer: NodeJS.Timeout | undefined;
    const refresh = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        void link.call('vm.list', {}).then((vms) => {
          this.vmNames = new Map(vms.map((v) => [v.id, v.name]));
          this.updateTray(vms);
        }, () => {});
      }, 300);
    };
    link.onConnected(() => {
      refresh();
      this.setAbout();
    });
    link.onEvent((ev) => {
      // What the tray shows changed (not progress or statistics, which come often).
      if (ev.type === 'vm-created' || ev.type === 'vm-updated' || ev.type === 'vm-deleted' || ev.type === 'vm-state') refresh();
      const notice = this.jobs.onEvent(ev, (id) => this.vmNames.get(id));
      // Only when the user looks elsewhere: a focused VMDesk window shows the job's end itself.
      if (notice && !BrowserWindow.getFocusedWindow() && Notification.isSupported()) new Notification({ title: notice.title, body: notice.body }).show();
    });
    refresh();
  }

  private updateTray(vms: VmInfo[]): void {
    if (!wantTray(process.platform, process.env)) return;
    try {
      this.buildTray(vms);
    } catch (e) {
      // A desktop without a tray (or a broken icon) must not take the app down; the window does everything too.
      console.warn(`vmdesk: no tray icon: ${(e as Error).message}`);
    }
  }

  private buildTray(vms: VmInfo[]): void {
    if (!this.tray) {
      // Template-sized on macOS (menu bar), a little larger elsewhere; generated from assets/icon.svg.
      const icon = nativeImage.createFromPath(iconFile(resources(), process.platform === 'darwin' ? 16 : 32));
      this.tray = new Tray(icon);
      this.tray.on('click', () => this.showMainWindow());
    }
    const link = this.link!;
    const template = trayMenuTemplate(vms, {
      start: (id) => void link.call('vm.start', { id }).catch((e: Error) => dialog.showErrorBox('VMDesk', e.message)),
      stop: (id) => void link.call('vm.stop', { id, timeoutMs: 30_000 }).catch((e: Error) => dialog.showErrorBox('VMDesk', e.message)),
      console: (id) => this.openConsoleWindow(id),
      show: () => this.showMainWindow(),
      quit: () => app.quit(),
    });
    this.tray.setToolTip(trayTooltip(vms));
    this.tray.setContextMenu(Menu.buildFromTemplate(template as MenuItemConstructorOptions[]));
  }

  /** Machine → Import Appliance…: the same flow as double-clicking an .ova. */
  private async chooseImport(): Promise<void> {
    const exts = Object.keys(OPENABLE).filter((e) => OPENABLE[e] === 'import').map((e) => e.slice(1));
    const opts = { properties: ['openFile' as const], filters: [{ name: 'Appliances and VMDesk archives', extensions: exts }] };
    const r = this.mainWindow ? await dialog.showOpenDialog(this.mainWindow, opts) : await dialog.showOpenDialog(opts);
    const req = r.canceled ? undefined : openRequestFor(r.filePaths[0] ?? '', process.cwd());
    if (req) this.openFiles([req]);
  }

  /** Files opened with VMDesk: appliances and archives are imported (after asking), an ISO opens the New VM wizard. */
  openFiles(reqs: OpenRequest[]): void {
    if (!reqs.length) return;
    this.pendingOpens.push(...reqs);
    if (this.mainWindow && !this.mainWindow.webContents.isLoading()) this.flushOpens();
    else if (!this.mainWindow && this.link) this.createMainWindow();
  }

  private flushOpens(): void {
    const win = this.mainWindow;
    if (!win || win.isDestroyed()) return;
    for (const req of this.pendingOpens.splice(0)) {
      if (req.action === 'create') {
        const cmd: OpenPathCommand = { action: 'create', path: req.path };
        win.webContents.send(IPC.openPath, cmd);
      } else void this.importFile(req.path, win);
    }
    this.showMainWindow();
  }

  private async importFile(file: string, win: BrowserWindow): Promise<void> {
    const r = await dialog.showMessageBox(win, {
      type: 'question',
      buttons: ['Import', 'Cancel'],
      defaultId: 0,
      cancelId: 1,
      message: `Import “${path.basename(file)}” into VMDesk?`,
      detail: `${file}\n\nIts disks are checked and copied into your VM library; the file itself is not changed.`,
      noLink: true,
    });
    if (r.response !== 0 || !this.link) return;
    try {
      // An opId makes the daemon send progress events: the window shows a progress bar, a notification the end.
      await this.link.call('vm.import', { file }, { opId: `import-${Date.now().toString(36)}` });
    } catch (e) {
      await dialog.showMessageBox(win, { type: 'error', message: `Could not import “${path.basename(file)}”`, detail: (e as Error).message });
    }
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
      this.hub?.closeAll();
      this.tray?.destroy();
      await this.core.shutdown();
    } catch {
      /* quitting must not be blocked by a failure here */
    }
    this.quitting = 'done';
    app.quit();
  }
}

export async function main(): Promise<void> {
  // Before ready: app://vmdesk is a standard, secure origin (relative URLs, ES modules, a secure context).
  protocol.registerSchemesAsPrivileged([{ scheme: APP_SCHEME, privileges: { ...APP_SCHEME_PRIVILEGES } }]);
  if (!app.requestSingleInstanceLock()) {
    // The first instance gets our argv through 'second-instance' and opens the files there.
    app.quit();
    return;
  }
  const desk = new DesktopApp();
  const early: OpenRequest[] = openRequestsFromArgv(process.argv, process.cwd());
  app.on('second-instance', (_event, argv, workingDirectory) => {
    desk.showMainWindow();
    desk.openFiles(openRequestsFromArgv(argv, workingDirectory));
  });
  // macOS hands documents over by event, possibly before ready.
  app.on('open-file', (event, file) => {
    event.preventDefault();
    const req = openRequestFor(file, process.cwd());
    if (!req) return;
    if (desk.link) desk.openFiles([req]);
    else early.push(req);
  });
  app.on('web-contents-created', (_e, wc) => {
    wc.on('will-attach-webview', (event) => event.preventDefault());
  });
  app.on('before-quit', (event) => void desk.onBeforeQuit(event));
  // Closing the last window quits (and asks about running VMs); VMs can keep running without the app.
  app.on('window-all-closed', () => app.quit());
  app.on('activate', () => {
    if (!desk.mainWindow && desk.link) desk.createMainWindow();
  });
  await app.whenReady();
  try {
    await desk.boot(process.env.VMDESK_HOME);
  } catch (e) {
    // No daemon, no app: say why (its log has the rest) instead of running without a window.
    const err = e as Error & { details?: string[] };
    dialog.showErrorBox('VMDesk could not start', [err.message, ...(err.details ?? [])].join('\n'));
    app.exit(1);
    return;
  }
  desk.createMainWindow();
  desk.openFiles(early);
}

if (process.versions.electron) void main();
