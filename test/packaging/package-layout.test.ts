// The packaged app, built offline: electron-builder --dir (electron-builder.yml as it is, only the output, the
// staging directory and the Electron distribution changed) against a stub Electron distribution whose "binary"
// carries Electron 39's fuse wire. Checked: every path main/platform/resources.ts resolves for the packaged layout
// exists in the package (inside app.asar or beside it), nothing native is in the archive and the natives are plain
// executable files outside it, the shell's imports all resolve inside the archive, the fuses are as configured;
// then the daemon is started from the package the way the shell starts it (the packaged Node running the packaged
// payload) and creates, starts and stops a real VM (QEMU, TCG, the test guest); and an AppImage's runtime copy runs.
// What needs a real Electron binary (the window, app://, IPC, the fuses' effect) is not checked here.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, cpSync, existsSync, symlinkSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FrameClient } from '../../main/api/frame-client.js';
import { socketTransport } from '../../main/client/daemon-client.js';
import { daemonSocketPath, runtimeRoot } from '../../main/platform/paths.js';
import { connectUnixSocket } from '../../main/platform/process.js';
import { ensureRuntimeCopy, nodeCommand, resolveResources, type ResourceContext } from '../../main/platform/resources.js';
import { guestPaths, GUEST_READY_MARKER } from '../guest/guest.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(path.join(repo, 'package.json'));
const asar = require('@electron/asar') as typeof import('@electron/asar');
const fuses = require('@electron/fuses') as { getCurrentFuseWire(exe: string): Promise<Record<string, unknown>> };
const yaml = require('js-yaml') as { load(s: string): unknown };

const SENTINEL = 'dL7pKGdnNz796PbbjQWNKmHXBZaB9tsX';
/** Electron 39's fuse wire as shipped: version 1, nine fuses ('1' on, '0' off). */
const ELECTRON_39_WIRE = '101100011';
const FUSE_NAMES = ['runAsNode', 'enableCookieEncryption', 'enableNodeOptionsEnvironmentVariable', 'enableNodeCliInspectArguments', 'enableEmbeddedAsarIntegrityValidation', 'onlyLoadAppFromAsar', 'loadBrowserProcessSpecificV8Snapshot', 'grantFileProtocolExtraPrivileges'];

let tmp: string;
let res: string;
let appOut: string;
const config = yaml.load(readFileSync(path.join(repo, 'electron-builder.yml'), 'utf8')) as { electronFuses: Record<string, boolean>; linux: { executableName: string } };

/** A directory electron-builder takes for an unpacked Electron: the binary (a script carrying the fuse wire) and its usual neighbours. */
function stubElectron(dir: string): void {
  mkdirSync(path.join(dir, 'locales'), { recursive: true });
  mkdirSync(path.join(dir, 'resources'), { recursive: true });
  const wire = Buffer.concat([Buffer.from(SENTINEL), Buffer.from([1, ELECTRON_39_WIRE.length]), Buffer.from(ELECTRON_39_WIRE)]);
  writeFileSync(path.join(dir, 'electron'), Buffer.concat([Buffer.from('#!/bin/sh\necho "stub Electron: not runnable"\nexit 1\n# '), wire, Buffer.from('\n')]), { mode: 0o755 });
  writeFileSync(path.join(dir, 'locales', 'en-US.pak'), '');
  writeFileSync(path.join(dir, 'version'), '39');
  writeFileSync(path.join(dir, 'LICENSE'), 'stub');
}

/** The build stamp scripts/build-info.mjs computes for a tree's dist/main. */
function stampOf(root: string): string {
  const hash = createHash('sha256');
  const walk = (rel: string) => {
    for (const name of readdirSync(path.join(root, rel)).sort()) {
      const r = path.join(rel, name);
      if (statSync(path.join(root, r)).isDirectory()) walk(r);
      else if (name.endsWith('.js')) hash.update(r).update(readFileSync(path.join(root, r)));
    }
  };
  walk(path.join('dist', 'main'));
  return hash.digest('hex').slice(0, 16);
}

function isElf(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    return readSync(fd, b, 0, 4, 0) === 4 && b.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  } finally {
    closeSync(fd);
  }
}

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Inside app.asar: the archive answers for it (a file or a directory listed in its header). */
function inArchive(archive: string, p: string): boolean {
  const rel = path.relative(archive, p);
  if (rel.startsWith('..')) return false;
  try {
    asar.statFile(archive, rel, false);
    return true;
  } catch {
    return false;
  }
}

function ctxFor(moduleDir: string, over: Partial<ResourceContext> = {}): ResourceContext {
  return { moduleDir, env: {}, execPath: '/nonexistent/electron', platform: process.platform, homedir: os.homedir(), ...over };
}

beforeAll(async () => {
  for (const f of ['dist/main/build-info.json', 'dist/main/electron/main.js', 'dist/main/electron/preload/index.js', 'dist/renderer/index.html']) {
    if (!existsSync(path.join(repo, f))) throw new Error(`${f} is missing: run npm run build first`);
  }
  if (!existsSync(path.join(repo, 'dist', 'icons', '1024x1024.png'))) {
    const r = spawnSync(process.execPath, ['scripts/icons.mjs'], { cwd: repo, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`icons: ${r.stderr}`);
  }
  tmp = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-pkg-'));
  // A frozen copy of the built tree to package: others may rebuild dist/ meanwhile, and the shell and the daemon
  // payload must come from one build (its stamp checked, as test/helpers/cli.ts does).
  const proj = path.join(tmp, 'project');
  for (let attempt = 0; ; attempt++) {
    rmSync(proj, { recursive: true, force: true });
    mkdirSync(proj);
    for (const f of ['package.json', 'package-lock.json']) cpSync(path.join(repo, f), path.join(proj, f));
    for (const d of ['bin', 'dist', 'packaging', 'assets']) cpSync(path.join(repo, d), path.join(proj, d), { recursive: true, filter: (src) => !src.endsWith('.map') });
    symlinkSync(path.join(repo, 'node_modules'), path.join(proj, 'node_modules'));
    symlinkSync(path.join(repo, 'native'), path.join(proj, 'native'));
    if (stampOf(proj) === (JSON.parse(readFileSync(path.join(proj, 'dist', 'main', 'build-info.json'), 'utf8')) as { build: string }).build || attempt >= 20) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  const stage = path.join(tmp, 'stage');
  // Icons from assets/icon.svg into the copy's dist/icons and build/icons (the script the build runs).
  const icons = spawnSync(process.execPath, [path.join(repo, 'scripts', 'icons.mjs')], { cwd: proj, encoding: 'utf8' });
  if (icons.status !== 0) throw new Error(`icons: ${icons.stderr}`);
  const staged = spawnSync(process.execPath, [path.join(repo, 'scripts', 'stage-daemon.mjs')], { cwd: proj, encoding: 'utf8', env: { ...process.env, VMDESK_STAGE_DIR: stage } });
  if (staged.status !== 0) throw new Error(`stage-daemon: ${staged.stderr}${staged.stdout}`);
  stubElectron(path.join(tmp, 'electron'));
  const { build, Platform } = require('electron-builder') as typeof import('electron-builder');
  // electron-builder.yml as it is, but for where things come from and go. Written to a file of its own: a config
  // object is merged with the project's electron-builder.yml (its extraResources would be copied too).
  const cfg = {
    ...(yaml.load(readFileSync(path.join(repo, 'electron-builder.yml'), 'utf8')) as object),
    electronDist: path.join(tmp, 'electron'),
    directories: { output: path.join(tmp, 'out'), buildResources: 'packaging' },
    extraResources: [
      { from: path.join(stage, 'daemon'), to: 'daemon' },
      { from: path.join(stage, 'daemon', 'node_modules'), to: 'daemon/node_modules' },
      { from: path.join(stage, 'node'), to: 'node' },
    ],
    publish: null,
  };
  // After packing, electron-builder's own Linux helper says what the deb, rpm and AppImage would get as their
  // .desktop file, MIME types and icons (those targets need tools fetched from the network to finish).
  const cfgFile = path.join(tmp, 'electron-builder.cjs');
  writeFileSync(
    cfgFile,
    `const fs = require('node:fs');
const { LinuxTargetHelper } = require(${JSON.stringify(require.resolve('app-builder-lib/out/targets/LinuxTargetHelper'))});
module.exports = { ...${JSON.stringify(cfg)}, async afterPack(ctx) {
  const h = new LinuxTargetHelper(ctx.packager);
  fs.writeFileSync(${JSON.stringify(path.join(tmp, 'desktop-entry'))}, await h.computeDesktopEntry(ctx.packager.platformSpecificBuildOptions));
  fs.copyFileSync(await h.mimeTypeFiles, ${JSON.stringify(path.join(tmp, 'mime.xml'))});
  fs.writeFileSync(${JSON.stringify(path.join(tmp, 'icons.json'))}, JSON.stringify(await h.icons));
} };
`,
  );
  await build({ projectDir: proj, targets: Platform.LINUX.createTarget('dir'), publish: 'never', config: cfgFile });
  appOut = path.join(tmp, 'out', 'linux-unpacked');
  res = path.join(appOut, 'resources');
}, 600_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('the package electron-builder makes', () => {
  it('has every path the resources module resolves for the app and for its daemon', () => {
    const archive = path.join(res, 'app.asar');
    const app = resolveResources(ctxFor(path.join(archive, 'dist', 'main', 'platform'), { resourcesPath: res, electron: '39.0.0' }));
    expect(app.layout).toBe('packaged');
    for (const p of [app.rendererDir, path.join(app.rendererDir, 'index.html'), app.preload, app.buildInfoFile!, path.join(app.iconsDir, '32x32.png'), path.join(app.iconsDir, '256x256.png')]) {
      expect(inArchive(archive, p), p).toBe(true);
    }
    // Outside the archive: the daemon's tree, its natives and the Node that runs it, as real executable files.
    expect(existsSync(path.join(app.daemonRoot, 'package.json'))).toBe(true);
    for (const exe of [app.node.path, app.microvmExecutable]) expect(executable(exe), exe).toBe(true);
    expect(isElf(app.nativeAddon)).toBe(true);
    expect(isElf(app.microvmExecutable)).toBe(true);
    expect(app.node.electronAsNode).toBe(false);
    const cmd = nodeCommand(app, 'daemon/main', {}, {});
    expect(cmd.command).toBe(path.join(res, 'node', 'bin', 'node'));
    expect(existsSync(cmd.args[0]!)).toBe(true);
    expect(cmd.env.ELECTRON_RUN_AS_NODE).toBeUndefined();

    // The daemon's own code resolves the same natives, beside it (a dist layout), and the renderer for `vmdesk serve`.
    const daemon = resolveResources(ctxFor(path.join(res, 'daemon', 'dist', 'main', 'platform'), { execPath: app.node.path }));
    expect(daemon.layout).toBe('dist');
    expect(daemon.nativeAddon).toBe(app.nativeAddon);
    expect(daemon.microvmExecutable).toBe(app.microvmExecutable);
    expect(existsSync(path.join(daemon.rendererDir, 'index.html'))).toBe(true);
    // One build: the shell's stamp is the daemon's (a client of another build would restart the daemon).
    const stamp = (f: string) => JSON.parse(f) as { build: string };
    expect(stamp(readFileSync(daemon.buildInfoFile!, 'utf8')).build).toBe(stamp(asar.extractFile(archive, 'dist/main/build-info.json').toString()).build);
  });

  it('ships node-pty with the daemon, working on the packaged Node (vmdesk shell opens terminals in the daemon)', () => {
    const node = path.join(res, 'node', 'bin', 'node');
    const pty = path.join(res, 'daemon', 'node_modules', 'node-pty');
    const script = `const pty = require(${JSON.stringify(pty)}); const p = pty.spawn('/bin/sh', ['-c', 'tty >/dev/null && echo pty-ok'], {}); let out = ''; p.onData((d) => (out += d)); p.onExit(() => { process.stdout.write(out); process.exit(0); });`;
    const r = spawnSync(node, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('pty-ok');
  });

  it('keeps everything native out of the archive, and everything the shell imports in it', () => {
    const archive = path.join(res, 'app.asar');
    const files = asar.listPackage(archive, { isPack: false }).map((f) => f.replace(/^[/\\]/, ''));
    expect(files.some((f) => f.endsWith('.node'))).toBe(false);
    expect(files.some((f) => f.includes('node-pty'))).toBe(false);
    expect(files.some((f) => f.endsWith('.map'))).toBe(false);
    expect(existsSync(path.join(res, 'app.asar.unpacked'))).toBe(false);
    const header = JSON.stringify(asar.getRawHeader(archive).header);
    expect(header).not.toMatch(/"unpacked":true|"link":/);
    const extracted = path.join(tmp, 'asar');
    asar.extractAll(archive, extracted);
    const elves: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (isElf(p)) elves.push(p);
      }
    };
    walk(extracted);
    expect(elves).toEqual([]);
    // Every module the shell's main process can reach, and every package it imports, is in the archive.
    const seen = new Set<string>();
    const bare = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      expect(existsSync(file), path.relative(extracted, file)).toBe(true);
      const src = readFileSync(file, 'utf8');
      for (const m of src.matchAll(/(?:import|export)\s[^'"]*?from\s+'([^']+)'|import\('([^']+)'\)/g)) {
        const spec = m[1] ?? m[2]!;
        if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), spec));
        else bare.add(spec);
      }
    };
    visit(path.join(extracted, 'dist', 'main', 'electron', 'main.js'));
    const packages = [...bare].filter((s) => !s.startsWith('node:') && s !== 'electron');
    expect(packages.length).toBeGreaterThan(0);
    const fromApp = createRequire(path.join(extracted, 'dist', 'main', 'electron', 'main.js'));
    for (const p of packages) expect(() => fromApp.resolve(p), p).not.toThrow();
    for (const p of packages) expect(fromApp.resolve(p).startsWith(extracted + path.sep), p).toBe(true);
  });

  it('gives Linux a .desktop file that takes files, the MIME types of what VMDesk opens, and icons at every size', () => {
    const entry = readFileSync(path.join(tmp, 'desktop-entry'), 'utf8');
    expect(entry).toMatch(/^\[Desktop Entry\]$/m);
    expect(entry).toMatch(/^Name=VMDesk$/m);
    expect(entry).toMatch(/^Exec=\/opt\/VMDesk\/vmdesk %U$/m); // files (and file:// URLs) reach main.ts's argv
    expect(entry).toMatch(/^Categories=System;Emulator;$/m);
    expect(entry).toMatch(/^StartupWMClass=VMDesk$/m);
    const mimeLine = /^MimeType=(.*)$/m.exec(entry)?.[1] ?? '';
    expect(mimeLine.split(';').filter(Boolean).sort()).toEqual(['application/x-cd-image', 'application/x-virtualbox-ova', 'application/x-virtualbox-ovf', 'application/x-vmdesk']);
    const mime = readFileSync(path.join(tmp, 'mime.xml'), 'utf8');
    for (const [type, ext] of [['application/x-virtualbox-ova', 'ova'], ['application/x-virtualbox-ovf', 'ovf'], ['application/x-vmdesk', 'vmdesk'], ['application/x-cd-image', 'iso']]) {
      expect(mime).toContain(`<mime-type type="${type}">`);
      expect(mime).toContain(`<glob pattern="*.${ext}"/>`);
    }
    const icons = JSON.parse(readFileSync(path.join(tmp, 'icons.json'), 'utf8')) as { file: string; size: number }[];
    expect(icons.map((i) => i.size).sort((a, b) => a - b)).toEqual([16, 24, 32, 48, 64, 128, 256, 512, 1024]);
    // The same sizes inside the app, for the window and the tray.
    for (const size of [16, 32, 256]) expect(inArchive(path.join(res, 'app.asar'), path.join(res, 'app.asar', 'dist', 'icons', `${size}x${size}.png`))).toBe(true);
  });

  it('sets the fuses as electron-builder.yml says', async () => {
    const exe = path.join(appOut, config.linux.executableName);
    const wire = await fuses.getCurrentFuseWire(exe);
    const on = (i: number) => wire[i as keyof typeof wire] === 0x31; // '1'
    FUSE_NAMES.forEach((name, i) => expect(on(i), name).toBe(config.electronFuses[name]));
    expect(config.electronFuses).toMatchObject({ runAsNode: false, enableEmbeddedAsarIntegrityValidation: true, onlyLoadAppFromAsar: true, enableNodeOptionsEnvironmentVariable: false, enableNodeCliInspectArguments: false });
  });

  it('runs the daemon from the package with its Node: a real VM is created, started and stopped', async () => {
    const { kernel, initrd } = guestPaths();
    const home = path.join(tmp, 'home');
    mkdirSync(home, { recursive: true, mode: 0o700 });
    const app = resolveResources(ctxFor(path.join(res, 'app.asar', 'dist', 'main', 'platform'), { resourcesPath: res, electron: '39.0.0' }));
    // As main/client/daemon-client.ts spawnDaemon does in the packaged shell.
    const cmd = nodeCommand(app, 'daemon/main', {}, { PATH: process.env.PATH, HOME: process.env.HOME, ...(process.env.XDG_RUNTIME_DIR ? { XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR } : {}) });
    const child = spawn(cmd.command, [...cmd.args, '--home', home], { env: cmd.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let log = '';
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    let client: FrameClient | undefined;
    try {
      const sock = daemonSocketPath(home);
      for (let i = 0; !client; i++) {
        if (i > 300) throw new Error(`the packaged daemon did not listen: ${log}`);
        const s = await connectUnixSocket(sock).catch(() => undefined);
        if (s) client = new FrameClient(socketTransport(s));
        else await new Promise((r) => setTimeout(r, 100));
      }
      const hello = await client.waitHello();
      expect(hello.pid).toBe(child.pid);
      // It is the packaged Node running the packaged payload.
      expect(readFileSyncSafe(`/proc/${child.pid}/cmdline`).split('\0')).toContain(path.join(res, 'daemon', 'dist', 'main', 'daemon', 'main.js'));
      expect(path.resolve(readLink(`/proc/${child.pid}/exe`))).toBe(path.join(res, 'node', 'bin', 'node'));
      expect(hello.build).toBe((JSON.parse(asar.extractFile(path.join(res, 'app.asar'), 'dist/main/build-info.json').toString()) as { build: string }).build);

      const vm = await client.call('vm.create', { name: 'packaged', memoryMiB: 256, cpus: 1, accel: 'tcg', directKernel: { kernel, initrd, cmdline: 'console=ttyS0 quiet' }, network: [{ mode: 'none', forwards: [] }] });
      expect(vm.state).toBe('stopped');
      const started = await client.call('vm.start', { id: vm.id });
      expect(['starting', 'running']).toContain(started.state);
      // The guest boots to its ready marker (its serial log, through the daemon).
      const deadline = Date.now() + 120_000;
      for (;;) {
        const { data } = await client.call('vm.serialLog', { id: vm.id });
        if (Buffer.from(data, 'base64').toString('utf8').includes(GUEST_READY_MARKER)) break;
        if (Date.now() > deadline) throw new Error('the guest did not boot within 120 s');
        await new Promise((r) => setTimeout(r, 500));
      }
      expect((await client.call('vm.get', { id: vm.id })).state).toBe('running');
      const stopped = await client.call('vm.stop', { id: vm.id, timeoutMs: 60_000 });
      expect(stopped.state).toBe('stopped');
      await client.call('daemon.stop', {});
    } finally {
      client?.close();
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
      rmSync(runtimeRoot(home), { recursive: true, force: true });
    }
  }, 240_000);

  it('from an AppImage mount, copies the payload and Node to a versioned directory and runs the daemon there', async () => {
    // The package as an AppImage would mount it: APPDIR is the mount, APPIMAGE the image.
    const data = path.join(tmp, 'data');
    const env = { APPIMAGE: path.join(tmp, 'VMDesk.AppImage'), APPDIR: appOut, XDG_DATA_HOME: data };
    const app = resolveResources(ctxFor(path.join(res, 'app.asar', 'dist', 'main', 'platform'), { resourcesPath: res, electron: '39.0.0', env }));
    expect(app.runtimeCopy).toBeDefined();
    ensureRuntimeCopy(app);
    expect(app.daemonRoot.startsWith(path.join(data, 'vmdesk', 'runtime') + path.sep)).toBe(true);
    for (const p of [app.nativeAddon, app.microvmExecutable, app.node.path]) {
      expect(existsSync(p), p).toBe(true);
      expect(p.startsWith(appOut)).toBe(false);
    }
    expect(executable(app.microvmExecutable)).toBe(true);
    const cmd = nodeCommand(app, 'daemon/main', {}, { PATH: process.env.PATH, HOME: process.env.HOME });
    expect(cmd.command.startsWith(appOut)).toBe(false);
    expect(cmd.args.every((a) => !a.startsWith(appOut))).toBe(true);
    // The copy runs: its CLI (its Node, its payload) answers.
    const r = spawnSync(cmd.command, [path.join(app.daemonRoot, 'bin', 'vmdesk.js'), '--version'], { encoding: 'utf8', env: cmd.env, timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\d+\.\d+\.\d+/);
  });
});

function readFileSyncSafe(p: string): string {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}

function readLink(p: string): string {
  try {
    return require('node:fs').readlinkSync(p) as string;
  } catch {
    return '';
  }
}
