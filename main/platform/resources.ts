// Where every shipped thing is: the one module that computes the paths of VMDesk's own files (the daemon's
// entry and the Node that runs it, the native addon, the vmdesk-microvm executable, the renderer, the preload,
// the build stamp) and the firmware lookups, for the three layouts VMDesk runs from:
//
//   repo      a checkout, running the TypeScript sources (vitest, tsx):  <root>/main/platform/resources.ts
//   dist      compiled, in a checkout or in a package's daemon payload:   <root>/dist/main/platform/resources.js
//   packaged  the Electron app's own code inside its archive:              <resources>/app.asar/dist/main/platform/resources.js
//
// A packaged app (electron-builder.yml) is laid out as
//   <resources>/app.asar             main process, preload and renderer (integrity-checked, nothing native)
//   <resources>/daemon/              the daemon payload: a dist layout (package.json, bin/, dist/main, dist/renderer,
//                                    native/build/Release/{vmdesk_native.node,vmdesk-microvm}, node_modules with node-pty)
//   <resources>/node/bin/node        the Node runtime the daemon (and the CLI) run on
// The daemon is a plain Node program outside the archive: it must outlive the app, so it cannot be Electron's
// child (utilityProcess), and running it on Electron's binary would need the RunAsNode fuse (ARCHITECTURE.md).
// From an AppImage, whose files vanish when the app quits (the mount goes with it), the payload and the
// runtime are copied first to a versioned directory in the user's data dir, and the daemon runs from there.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export type LayoutKind = 'repo' | 'dist' | 'packaged';

/** What the resolution depends on; tests pass their own to resolve layouts built in a temporary directory. */
export interface ResourceContext {
  /** Directory of this module (main/platform or dist/main/platform). */
  moduleDir: string;
  env: NodeJS.ProcessEnv;
  /** process.resourcesPath inside Electron; undefined under Node. */
  resourcesPath?: string;
  /** process.versions.electron: set when this process is Electron (main process or run as Node). */
  electron?: string;
  execPath: string;
  platform: NodeJS.Platform;
  homedir: string;
}

export function processContext(): ResourceContext {
  return {
    moduleDir: path.dirname(fileURLToPath(import.meta.url)),
    env: process.env,
    resourcesPath: (process as { resourcesPath?: string }).resourcesPath,
    electron: process.versions.electron,
    execPath: process.execPath,
    platform: process.platform,
    homedir: os.homedir(),
  };
}

/** UEFI firmware: the code image and the template of the per-VM variable store. */
export interface FirmwarePaths {
  code: string;
  varsTemplate: string;
}

/** How to run one of VMDesk's Node entry points as a process of its own. */
export interface NodeCommand {
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

export interface Resources {
  layout: LayoutKind;
  /** The package root this code runs from: the checkout, the daemon payload, or <resources>/app.asar. */
  appRoot: string;
  /** <resources> of a packaged app. */
  resourcesDir?: string;
  /** The built renderer (index.html, assets/). */
  rendererDir: string;
  /** The sandboxed preload script (compiled; Electron only). */
  preload: string;
  /** PNG icons at every size, generated from assets/icon.svg by scripts/icons.mjs (<size>x<size>.png). */
  iconsDir: string;
  /** dist/main/build-info.json; undefined when running sources (build "source"). */
  buildInfoFile?: string;
  /** The tree the daemon runs from: a repo or dist layout (in a package, the payload or its copy). */
  daemonRoot: string;
  nativeAddon: string;
  microvmExecutable: string;
  /** The Node binary the daemon runs on, and whether it is Electron's binary run as Node (development only). */
  node: { path: string; electronAsNode: boolean };
  /** Set when the app runs from an AppImage mount: the copy the daemon runs from instead. */
  runtimeCopy?: { dir: string; source: string };
}

const NATIVE_DIR = ['native', 'build', 'Release'];
const ADDON = 'vmdesk_native.node';
const MICROVM = 'vmdesk-microvm';

/** The layout of the code at moduleDir, and its package root. */
export function detectLayout(ctx: Pick<ResourceContext, 'moduleDir' | 'resourcesPath'>): { kind: LayoutKind; appRoot: string; resourcesDir?: string } {
  const here = path.resolve(ctx.moduleDir);
  const main = path.dirname(here);
  const above = path.dirname(main);
  if (path.basename(above) !== 'dist') return { kind: 'repo', appRoot: above };
  const appRoot = path.dirname(above);
  const base = path.basename(appRoot);
  const inResources = !!ctx.resourcesPath && path.dirname(appRoot) === path.resolve(ctx.resourcesPath);
  // The app's own code sits in <resources>/app.asar (or <resources>/app when built without an archive); the
  // daemon payload, <resources>/daemon, is a dist layout like a checkout.
  if (base === 'app.asar' || (inResources && base === 'app')) return { kind: 'packaged', appRoot, resourcesDir: path.dirname(appRoot) };
  return { kind: 'dist', appRoot };
}

/** The Node runtime shipped in a package (scripts/stage-daemon.mjs puts it there). */
export function bundledNode(resourcesDir: string, platform: NodeJS.Platform): string {
  return path.join(resourcesDir, 'node', 'bin', platform === 'win32' ? 'node.exe' : 'node');
}

/** $XDG_DATA_HOME (or ~/.local/share) on Linux, ~/Library/Application Support on macOS. */
export function userDataDir(ctx: Pick<ResourceContext, 'env' | 'platform' | 'homedir'>): string {
  if (ctx.platform === 'darwin') return path.join(ctx.homedir, 'Library', 'Application Support');
  const xdg = ctx.env.XDG_DATA_HOME;
  return xdg && path.isAbsolute(xdg) ? xdg : path.join(ctx.homedir, '.local', 'share');
}

/**
 * True when resourcesDir is inside the mount of a running AppImage: the AppImage runtime sets APPDIR to its
 * mount point (/tmp/.mount_XXXX) and APPIMAGE to the image file, and unmounts when the app exits.
 */
export function inAppImageMount(resourcesDir: string, env: NodeJS.ProcessEnv): boolean {
  const appDir = env.APPDIR;
  if (!env.APPIMAGE || !appDir || !path.isAbsolute(appDir)) return false;
  const rel = path.relative(path.resolve(appDir), path.resolve(resourcesDir));
  return !!rel && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/** Where an AppImage's daemon payload and runtime are copied: one directory per version and build. */
export function runtimeCopyDir(ctx: Pick<ResourceContext, 'env' | 'platform' | 'homedir'>, version: string, build: string): string {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64);
  return path.join(userDataDir(ctx), 'vmdesk', 'runtime', `${safe(version)}-${safe(build)}`);
}

function readBuildInfo(file: string | undefined): { version: string; build: string } | undefined {
  if (!file) return undefined;
  try {
    const j = JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown; build?: unknown };
    if (typeof j.version === 'string' && typeof j.build === 'string' && j.version && j.build) return { version: j.version, build: j.build };
  } catch {
    /* absent or unreadable */
  }
  return undefined;
}

export function resolveResources(ctx: ResourceContext): Resources {
  const { kind, appRoot, resourcesDir } = detectLayout(ctx);
  const rendererDir = path.join(appRoot, 'dist', 'renderer');
  const preload = path.join(appRoot, 'dist', 'main', 'electron', 'preload', 'index.js');
  const buildInfoFile = kind === 'repo' ? undefined : path.join(appRoot, 'dist', 'main', 'build-info.json');
  let daemonRoot = appRoot;
  let node = { path: ctx.execPath, electronAsNode: !!ctx.electron };
  let runtimeCopy: Resources['runtimeCopy'];
  if (kind === 'packaged') {
    daemonRoot = path.join(resourcesDir!, 'daemon');
    node = { path: bundledNode(resourcesDir!, ctx.platform), electronAsNode: false };
    if (inAppImageMount(resourcesDir!, ctx.env)) {
      const info = readBuildInfo(buildInfoFile) ?? { version: '0.0.0', build: 'unknown' };
      const dir = runtimeCopyDir(ctx, info.version, info.build);
      runtimeCopy = { dir, source: resourcesDir! };
      daemonRoot = path.join(dir, 'daemon');
      node = { path: bundledNode(dir, ctx.platform), electronAsNode: false };
    }
  }
  // An explicit Node (a system Node of the right version, say) wins over the shipped one.
  if (ctx.env.VMDESK_NODE) node = { path: ctx.env.VMDESK_NODE, electronAsNode: false };
  const natives = path.join(daemonRoot, ...NATIVE_DIR);
  return {
    layout: kind,
    appRoot,
    ...(resourcesDir ? { resourcesDir } : {}),
    rendererDir,
    preload,
    iconsDir: path.join(appRoot, 'dist', 'icons'),
    ...(buildInfoFile ? { buildInfoFile } : {}),
    daemonRoot,
    nativeAddon: ctx.env.VMDESK_NATIVE_ADDON || path.join(natives, ADDON),
    microvmExecutable: ctx.env.VMDESK_MICROVM_EXE || path.join(natives, MICROVM),
    node,
    ...(runtimeCopy ? { runtimeCopy } : {}),
  };
}

/** The generated icon of that size (scripts/icons.mjs makes 16 to 1024). */
export function iconFile(r: Resources, size: 16 | 24 | 32 | 48 | 64 | 128 | 256 | 512 | 1024): string {
  return path.join(r.iconsDir, `${size}x${size}.png`);
}

/** The TypeScript loader for running sources as a child (repo layout): tsx from the nearest node_modules. */
function sourceLoader(from: string): string | undefined {
  for (let dir = from; ; dir = path.dirname(dir)) {
    for (const loader of ['tsx/dist/loader.mjs', 'jiti/lib/jiti-register.mjs']) {
      const p = path.join(dir, 'node_modules', loader);
      if (existsSync(p)) return pathToFileURL(p).href;
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

export class MissingResourceError extends Error {
  constructor(what: string, where: string, hint: string) {
    super(`VMDesk's ${what} is missing (${where}); ${hint}`);
    this.name = 'MissingResourceError';
  }
}

/**
 * How to run an entry point of VMDesk's Node side ("daemon/main", "cli/main") as a separate process: with the
 * daemon's Node, from the daemon's tree (compiled JS, or the TypeScript source through tsx in a checkout).
 */
export function nodeCommand(r: Resources, entry: 'daemon/main' | 'cli/main', extraEnv: NodeJS.ProcessEnv = {}, baseEnv: NodeJS.ProcessEnv = process.env): NodeCommand {
  const env: NodeJS.ProcessEnv = { ...baseEnv, ...extraEnv };
  // The caller's loaders and inspectors are not the child's business.
  delete env.NODE_OPTIONS;
  delete env.ELECTRON_RUN_AS_NODE;
  if (r.node.electronAsNode) env.ELECTRON_RUN_AS_NODE = '1';
  if (r.runtimeCopy) withoutMount(env, env.APPDIR);
  const js = path.join(r.daemonRoot, 'dist', 'main', `${entry}.js`);
  if (r.layout !== 'repo' || r.runtimeCopy) {
    return { command: r.node.path, args: [js], env };
  }
  const ts = path.join(r.daemonRoot, 'main', `${entry}.ts`);
  const loader = existsSync(ts) ? sourceLoader(r.daemonRoot) : undefined;
  if (loader) return { command: r.node.path, args: ['--import', loader, ts], env };
  return { command: r.node.path, args: [js], env };
}

/**
 * Removes an AppImage mount from a child's environment: the runtime puts it in PATH, LD_LIBRARY_PATH and the like,
 * and a daemon (and the QEMU it starts) that loaded libraries from there would lose them with the mount.
 */
export function withoutMount(env: NodeJS.ProcessEnv, mount: string | undefined): NodeJS.ProcessEnv {
  if (!mount || !path.isAbsolute(mount)) return env;
  const inside = (p: string) => p === mount || p.startsWith(mount.endsWith('/') ? mount : `${mount}/`);
  for (const k of ['APPDIR', 'APPIMAGE', 'ARGV0', 'OWD']) delete env[k];
  for (const [k, v] of Object.entries(env)) {
    if (typeof v !== 'string') continue;
    if (v.includes(':')) {
      const kept = v.split(':').filter((p) => !inside(p));
      if (kept.length) env[k] = kept.join(':');
      else delete env[k];
    } else if (inside(v)) delete env[k];
  }
  return env;
}

/** Which code this is: the build stamp of `npm run build:main`, or "source" for the TypeScript sources. */
export function buildInfoOf(r: Resources): { version: string; build: string } {
  const stamped = readBuildInfo(r.buildInfoFile);
  if (stamped) return stamped;
  let version = '0.0.0';
  try {
    version = (JSON.parse(readFileSync(path.join(r.appRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    /* keep 0.0.0 */
  }
  return { version, build: 'source' };
}

/**
 * UEFI firmware candidates, in order: VMDESK_OVMF_CODE/VMDESK_OVMF_VARS, the distributions' packages (Debian's
 * ovmf, Fedora's edk2-ovmf), then the edk2 images QEMU installs under its own prefix (Homebrew, /usr/local,
 * or wherever the qemu-system binary lives). VMDesk ships no firmware: it is the host's, like QEMU.
 */
export function firmwareCandidates(qemuBinary?: string, env: NodeJS.ProcessEnv = process.env): FirmwarePaths[] {
  const out: FirmwarePaths[] = [];
  if (env.VMDESK_OVMF_CODE && env.VMDESK_OVMF_VARS) out.push({ code: env.VMDESK_OVMF_CODE, varsTemplate: env.VMDESK_OVMF_VARS });
  out.push(
    { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd' },
    { code: '/usr/share/OVMF/OVMF_CODE.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS.fd' },
    { code: '/usr/share/edk2/ovmf/OVMF_CODE.fd', varsTemplate: '/usr/share/edk2/ovmf/OVMF_VARS.fd' },
  );
  const prefixes = ['/opt/homebrew', '/usr/local'];
  if (qemuBinary && path.isAbsolute(qemuBinary)) prefixes.unshift(path.dirname(path.dirname(qemuBinary)));
  for (const prefix of [...new Set(prefixes)]) {
    out.push({ code: path.join(prefix, 'share', 'qemu', 'edk2-x86_64-code.fd'), varsTemplate: path.join(prefix, 'share', 'qemu', 'edk2-i386-vars.fd') });
  }
  return out;
}

export const SECURE_BOOT_MISSING =
  "Secure Boot needs OVMF built for it, with Microsoft's keys (OVMF_CODE_4M.secboot.fd and OVMF_VARS_4M.ms.fd); install it with: sudo apt install ovmf";

/**
 * Secure Boot firmware: OVMF built with Secure Boot and SMM, and a variable store template with Microsoft's keys
 * enrolled, where distributions put them (Debian/Ubuntu's ovmf, Fedora's edk2-ovmf);
 * $VMDESK_OVMF_SECBOOT_CODE/_VARS first.
 */
export function secureBootFirmwareCandidates(env: NodeJS.ProcessEnv = process.env): FirmwarePaths[] {
  const out: FirmwarePaths[] = [];
  if (env.VMDESK_OVMF_SECBOOT_CODE && env.VMDESK_OVMF_SECBOOT_VARS) out.push({ code: env.VMDESK_OVMF_SECBOOT_CODE, varsTemplate: env.VMDESK_OVMF_SECBOOT_VARS });
  out.push(
    { code: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.ms.fd' },
    { code: '/usr/share/OVMF/OVMF_CODE.secboot.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS.ms.fd' },
    { code: '/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd', varsTemplate: '/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd' },
  );
  return out;
}

/**
 * Makes sure the AppImage's runtime copy exists and is complete (payload and Node, copied to a temporary
 * directory and renamed into place, so a crash halfway leaves no half copy), marks it used, and removes
 * copies of other builds beyond the `keep` most recently used. No-op outside an AppImage.
 */
export function ensureRuntimeCopy(r: Resources, keep = 3): void {
  const copy = r.runtimeCopy;
  if (!copy) return;
  const done = path.join(copy.dir, '.complete');
  if (!existsSync(done)) {
    const parent = path.dirname(copy.dir);
    mkdirSync(parent, { recursive: true, mode: 0o700 });
    const tmp = `${copy.dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    for (const part of ['daemon', 'node']) {
      const from = path.join(copy.source, part);
      if (!existsSync(from)) throw new MissingResourceError(`packaged ${part}`, from, 'the app package is incomplete; reinstall VMDesk');
      cpSync(from, path.join(tmp, part), { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
    }
    writeFileSync(path.join(tmp, '.complete'), `${new Date().toISOString()}\n`);
    try {
      renameSync(tmp, copy.dir);
    } catch (e) {
      // Another instance won the race (its copy is complete: it was renamed whole), or a stale incomplete one is there.
      rmSync(tmp, { recursive: true, force: true });
      if (!existsSync(done)) {
        rmSync(copy.dir, { recursive: true, force: true });
        throw e;
      }
    }
  }
  const now = new Date();
  try {
    utimesSync(copy.dir, now, now);
  } catch {
    /* marking is best effort */
  }
  pruneRuntimeCopies(path.dirname(copy.dir), copy.dir, keep);
}

/** Removes other builds' copies past the `keep` most recently used (a daemon of an old build may still run from one). */
export function pruneRuntimeCopies(parent: string, current: string, keep: number): string[] {
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return [];
  }
  const copies = names
    .map((n) => path.join(parent, n))
    .filter((p) => p !== current && !/\.tmp-\d+$/.test(p))
    .map((p) => ({ p, t: (() => { try { return statSync(p).mtimeMs; } catch { return 0; } })() }))
    .sort((a, b) => b.t - a.t);
  const removed: string[] = [];
  for (const { p } of copies.slice(Math.max(0, keep - 1))) {
    rmSync(p, { recursive: true, force: true });
    removed.push(p);
  }
  return removed;
}

/** This process's resources; resolved on each call (cheap), so VMDESK_* overrides set later are seen. */
export function resources(): Resources {
  return resolveResources(processContext());
}
