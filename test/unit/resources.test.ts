// The resources module: every shipped path for the three layouts (a checkout's sources, dist/, a packaged app,
// and a packaged app run from an AppImage mount), the Node command that runs the daemon in each, the firmware
// lookups, the AppImage runtime copy, and a scan that no other module computes these paths.
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  buildInfoOf,
  detectLayout,
  ensureRuntimeCopy,
  firmwareCandidates,
  inAppImageMount,
  nodeCommand,
  resolveResources,
  resources,
  type ResourceContext,
} from '../../main/platform/resources.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tmps: string[] = [];
function tmp(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-res-'));
  tmps.push(d);
  return d;
}
afterEach(() => {
  for (const d of tmps.splice(0)) rmSync(d, { recursive: true, force: true });
});

function ctx(moduleDir: string, over: Partial<ResourceContext> = {}): ResourceContext {
  return { moduleDir, env: {}, execPath: '/usr/bin/node', platform: 'linux', homedir: '/home/u', ...over };
}

describe('layouts', () => {
  it('repo: the TypeScript sources of a checkout', () => {
    const r = resolveResources(ctx('/src/vmdesk/main/platform'));
    expect(r.layout).toBe('repo');
    expect(r.appRoot).toBe('/src/vmdesk');
    expect(r.daemonRoot).toBe('/src/vmdesk');
    expect(r.rendererDir).toBe('/src/vmdesk/dist/renderer');
    expect(r.preload).toBe('/src/vmdesk/dist/main/electron/preload/index.js');
    expect(r.nativeAddon).toBe('/src/vmdesk/native/build/Release/vmdesk_native.node');
    expect(r.microvmExecutable).toBe('/src/vmdesk/native/build/Release/vmdesk-microvm');
    expect(r.buildInfoFile).toBeUndefined();
    expect(r.node).toEqual({ path: '/usr/bin/node', electronAsNode: false });
  });

  it('dist: compiled in a checkout (or a copy of one); Electron in development runs the daemon as Node', () => {
    const r = resolveResources(ctx('/src/vmdesk/dist/main/platform', { electron: '39.0.0', execPath: '/src/vmdesk/node_modules/electron/dist/electron' }));
    expect(r.layout).toBe('dist');
    expect(r.appRoot).toBe('/src/vmdesk');
    expect(r.buildInfoFile).toBe('/src/vmdesk/dist/main/build-info.json');
    expect(r.nativeAddon).toBe('/src/vmdesk/native/build/Release/vmdesk_native.node');
    expect(r.node).toEqual({ path: '/src/vmdesk/node_modules/electron/dist/electron', electronAsNode: true });
    const cmd = nodeCommand(r, 'daemon/main', {}, { PATH: '/bin', NODE_OPTIONS: '--inspect' });
    expect(cmd).toEqual({ command: r.node.path, args: ['/src/vmdesk/dist/main/daemon/main.js'], env: { PATH: '/bin', ELECTRON_RUN_AS_NODE: '1' } });
  });

  it('packaged: the app from app.asar, the daemon from the payload beside it on the shipped Node', () => {
    const res = '/opt/VMDesk/resources';
    const r = resolveResources(ctx(`${res}/app.asar/dist/main/platform`, { resourcesPath: res, electron: '39.0.0', execPath: '/opt/VMDesk/vmdesk' }));
    expect(r.layout).toBe('packaged');
    expect(r.appRoot).toBe(`${res}/app.asar`);
    expect(r.resourcesDir).toBe(res);
    expect(r.rendererDir).toBe(`${res}/app.asar/dist/renderer`);
    expect(r.preload).toBe(`${res}/app.asar/dist/main/electron/preload/index.js`);
    expect(r.daemonRoot).toBe(`${res}/daemon`);
    expect(r.nativeAddon).toBe(`${res}/daemon/native/build/Release/vmdesk_native.node`);
    expect(r.microvmExecutable).toBe(`${res}/daemon/native/build/Release/vmdesk-microvm`);
    // Never Electron's binary: the RunAsNode fuse is off in a package.
    expect(r.node).toEqual({ path: `${res}/node/bin/node`, electronAsNode: false });
    const cmd = nodeCommand(r, 'daemon/main', {}, { ELECTRON_RUN_AS_NODE: '1', HOME: '/home/u' });
    expect(cmd.command).toBe(`${res}/node/bin/node`);
    expect(cmd.args).toEqual([`${res}/daemon/dist/main/daemon/main.js`]);
    expect(cmd.env).toEqual({ HOME: '/home/u' });
    expect(r.runtimeCopy).toBeUndefined();
  });

  it('the daemon payload of a package is a dist layout of its own (its code finds its natives beside it)', () => {
    const res = '/opt/VMDesk/resources';
    const r = resolveResources(ctx(`${res}/daemon/dist/main/platform`, { execPath: `${res}/node/bin/node` }));
    expect(r.layout).toBe('dist');
    expect(r.daemonRoot).toBe(`${res}/daemon`);
    expect(r.nativeAddon).toBe(`${res}/daemon/native/build/Release/vmdesk_native.node`);
    expect(nodeCommand(r, 'daemon/main', {}, {}).command).toBe(`${res}/node/bin/node`);
  });

  it('an app built without an archive (asar: false) is still the packaged layout', () => {
    expect(detectLayout({ moduleDir: '/opt/X/resources/app/dist/main/platform', resourcesPath: '/opt/X/resources' }).kind).toBe('packaged');
    expect(detectLayout({ moduleDir: '/home/u/app/dist/main/platform' }).kind).toBe('dist');
  });

  it('overrides: VMDESK_NATIVE_ADDON, VMDESK_MICROVM_EXE and VMDESK_NODE (a system Node)', () => {
    const r = resolveResources(ctx('/opt/VMDesk/resources/app.asar/dist/main/platform', { resourcesPath: '/opt/VMDesk/resources', env: { VMDESK_NATIVE_ADDON: '/a.node', VMDESK_MICROVM_EXE: '/m', VMDESK_NODE: '/usr/bin/node' } }));
    expect(r.nativeAddon).toBe('/a.node');
    expect(r.microvmExecutable).toBe('/m');
    expect(r.node).toEqual({ path: '/usr/bin/node', electronAsNode: false });
  });

  it('repo: a child runs the TypeScript entry through tsx', () => {
    const r = resources();
    expect(r.layout).toBe('repo');
    expect(r.appRoot).toBe(repo);
    const cmd = nodeCommand(r, 'daemon/main', {}, {});
    expect(cmd.args[0]).toBe('--import');
    expect(cmd.args[1]).toMatch(/^file:.*tsx/);
    expect(cmd.args[2]).toBe(path.join(repo, 'main', 'daemon', 'main.ts'));
    expect(buildInfoOf(r).build).toBe('source');
  });
});

describe('AppImage', () => {
  function appImage() {
    const root = tmp();
    const mount = path.join(root, '.mount_VMDeskXY');
    const res = path.join(mount, 'resources');
    mkdirSync(path.join(res, 'app.asar', 'dist', 'main', 'platform'), { recursive: true });
    writeFileSync(path.join(res, 'app.asar', 'dist', 'main', 'build-info.json'), JSON.stringify({ version: '1.2.3', build: 'abcdef0123456789' }));
    mkdirSync(path.join(res, 'daemon', 'dist', 'main', 'daemon'), { recursive: true });
    writeFileSync(path.join(res, 'daemon', 'dist', 'main', 'daemon', 'main.js'), '// daemon');
    mkdirSync(path.join(res, 'node', 'bin'), { recursive: true });
    writeFileSync(path.join(res, 'node', 'bin', 'node'), '#!/bin/sh\n', { mode: 0o755 });
    const data = path.join(root, 'data');
    const c = ctx(path.join(res, 'app.asar', 'dist', 'main', 'platform'), { resourcesPath: res, env: { APPIMAGE: path.join(root, 'VMDesk.AppImage'), APPDIR: mount, XDG_DATA_HOME: data } });
    return { root, res, data, c };
  }

  it('knows a mount from an installed app', () => {
    expect(inAppImageMount('/tmp/.mount_X/resources', { APPIMAGE: '/a.AppImage', APPDIR: '/tmp/.mount_X' })).toBe(true);
    expect(inAppImageMount('/opt/VMDesk/resources', { APPIMAGE: '/a.AppImage', APPDIR: '/tmp/.mount_X' })).toBe(false);
    expect(inAppImageMount('/tmp/.mount_X/resources', { APPDIR: '/tmp/.mount_X' })).toBe(false);
    expect(inAppImageMount('/tmp/.mount_Xy/resources', { APPIMAGE: '/a', APPDIR: '/tmp/.mount_X' })).toBe(false);
  });

  it('runs the daemon from a versioned copy in the data dir, never from the mount', () => {
    const { res, data, c } = appImage();
    const r = resolveResources(c);
    const dir = path.join(data, 'vmdesk', 'runtime', '1.2.3-abcdef0123456789');
    expect(r.runtimeCopy).toEqual({ dir, source: res });
    expect(r.daemonRoot).toBe(path.join(dir, 'daemon'));
    expect(r.nativeAddon.startsWith(dir + path.sep)).toBe(true);
    const cmd = nodeCommand(r, 'daemon/main', {}, {});
    expect(cmd.command).toBe(path.join(dir, 'node', 'bin', 'node'));
    expect(cmd.args).toEqual([path.join(dir, 'daemon', 'dist', 'main', 'daemon', 'main.js')]);
    expect(cmd.command.startsWith(res)).toBe(false);
    // The renderer and preload stay in the mount: only the app itself uses them, and it lives as long as the mount.
    expect(r.rendererDir.startsWith(res)).toBe(true);

    ensureRuntimeCopy(r);
    expect(readFileSync(path.join(dir, 'daemon', 'dist', 'main', 'daemon', 'main.js'), 'utf8')).toBe('// daemon');
    expect(existsSync(path.join(dir, 'node', 'bin', 'node'))).toBe(true);
    expect(existsSync(path.join(dir, '.complete'))).toBe(true);
    // A second start uses the copy as it is.
    writeFileSync(path.join(dir, 'daemon', 'marker'), 'kept');
    ensureRuntimeCopy(r);
    expect(readFileSync(path.join(dir, 'daemon', 'marker'), 'utf8')).toBe('kept');
    expect(readdirSync(path.dirname(dir)).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('starts the daemon without the mount in its environment (PATH, LD_LIBRARY_PATH, the AppImage variables)', () => {
    const { root, c } = appImage();
    const mount = c.env.APPDIR!;
    const r = resolveResources(c);
    const cmd = nodeCommand(r, 'daemon/main', {}, {
      PATH: `${mount}/usr/bin:/usr/local/bin:/usr/bin`,
      LD_LIBRARY_PATH: `${mount}/usr/lib:${mount}/lib`,
      APPDIR: mount,
      APPIMAGE: path.join(root, 'VMDesk.AppImage'),
      OWD: '/home/u',
      GSETTINGS_SCHEMA_DIR: `${mount}/usr/share/glib-2.0/schemas`,
      HOME: '/home/u',
      XDG_RUNTIME_DIR: '/run/user/1000',
    });
    expect(cmd.env).toEqual({ PATH: '/usr/local/bin:/usr/bin', HOME: '/home/u', XDG_RUNTIME_DIR: '/run/user/1000' });
  });

  it('redoes an incomplete copy and keeps only the three most recently used builds', () => {
    const { data, c } = appImage();
    const parent = path.join(data, 'vmdesk', 'runtime');
    mkdirSync(parent, { recursive: true });
    const old = ['0.9.0-a', '1.0.0-b', '1.1.0-c', '1.2.0-d'];
    old.forEach((n, i) => {
      mkdirSync(path.join(parent, n));
      const t = new Date(Date.now() - (10 - i) * 60_000);
      utimesSync(path.join(parent, n), t, t);
    });
    const r = resolveResources(c);
    mkdirSync(r.runtimeCopy!.dir, { recursive: true }); // a copy that crashed before it was complete
    writeFileSync(path.join(r.runtimeCopy!.dir, 'junk'), '');
    rmSync(r.runtimeCopy!.dir, { recursive: true });
    ensureRuntimeCopy(r);
    expect(readdirSync(parent).sort()).toEqual(['1.1.0-c', '1.2.0-d', path.basename(r.runtimeCopy!.dir)].sort());
  });

  it('says so when the package lacks the payload', () => {
    const { res, c } = appImage();
    rmSync(path.join(res, 'node'), { recursive: true });
    expect(() => ensureRuntimeCopy(resolveResources(c))).toThrow(/packaged node is missing/);
  });
});

describe('firmware', () => {
  it('lists the override, the distributions\' packages and QEMU\'s own prefix', () => {
    const c = firmwareCandidates('/opt/qemu-9/bin/qemu-system-x86_64', { VMDESK_OVMF_CODE: '/fw/code.fd', VMDESK_OVMF_VARS: '/fw/vars.fd' });
    expect(c[0]).toEqual({ code: '/fw/code.fd', varsTemplate: '/fw/vars.fd' });
    expect(c).toContainEqual({ code: '/usr/share/OVMF/OVMF_CODE_4M.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd' });
    expect(c).toContainEqual({ code: '/opt/qemu-9/share/qemu/edk2-x86_64-code.fd', varsTemplate: '/opt/qemu-9/share/qemu/edk2-i386-vars.fd' });
    expect(c).toContainEqual({ code: '/opt/homebrew/share/qemu/edk2-x86_64-code.fd', varsTemplate: '/opt/homebrew/share/qemu/edk2-i386-vars.fd' });
    expect(new Set(c.map((x) => x.code)).size).toBe(c.length);
  });
});

describe('one place', () => {
  it('no other module computes where shipped things are', () => {
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && p !== path.join(repo, 'main', 'platform', 'resources.ts')) {
          // Code only: comments may say where things are.
          const src = readFileSync(p, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:])\/\/.*$/gm, '$1');
          const bad = [/'build',\s*'Release'/, /build\/Release/, /app\.asar/, /resourcesPath/, /\bOVMF_CODE/, /'dist',\s*'renderer'|dist\/renderer'/, /nodeEntry\(import\.meta\.url/];
          for (const re of bad) if (re.test(src)) offenders.push(`${path.relative(repo, p)}: ${re}`);
        }
      }
    };
    walk(path.join(repo, 'main'));
    expect(offenders).toEqual([]);
  });
});
