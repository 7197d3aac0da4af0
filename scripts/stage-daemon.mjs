// Stages what a package ships beside app.asar (electron-builder.yml's extraResources), from a built tree:
//
//   build/daemon/  the daemon payload, a dist layout of its own (main/platform/resources.ts): package.json, bin/,
//                  dist/main (all but the Electron shell), dist/renderer (for `vmdesk serve`), the natives in
//                  native/build/Release, and node_modules with the runtime dependencies (node-pty among them,
//                  which `vmdesk shell` loads in the daemon at run time)
//   build/node/    the Node runtime the daemon runs on: this Node (process.execPath), or VMDESK_DIST_NODE (a Node
//                  binary for the target; electron-builder packages for the platform it runs on)
//
// The daemon is a plain Node program so that it can outlive the app; Electron's binary is not used as Node
// (the RunAsNode fuse stays off). Every native module of the payload is loaded with the staged Node before this
// script ends, so an ABI mismatch fails the build, not the user's first start.
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative, sep } from 'node:path';

const root = process.cwd();
// VMDESK_STAGE_DIR: somewhere else than build/ (the packaging test stages into a temporary directory).
const out = process.env.VMDESK_STAGE_DIR || join(root, 'build');
const daemon = join(out, 'daemon');
const nodeDir = join(out, 'node');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const fail = (msg) => {
  console.error(`vmdesk stage: ${msg}`);
  process.exit(1);
};

if (!existsSync(join(root, 'dist', 'main', 'build-info.json'))) fail('dist/ is not built: run npm run build first');
rmSync(daemon, { recursive: true, force: true });
rmSync(nodeDir, { recursive: true, force: true });
mkdirSync(daemon, { recursive: true });

// package.json: what Node needs to run the tree (ESM) and what a reader needs to know what it is.
const runtimeDeps = Object.fromEntries(Object.entries(pkg.dependencies ?? {}).filter(([name]) => name !== 'node-addon-api'));
writeFileSync(
  join(daemon, 'package.json'),
  JSON.stringify({ name: pkg.name, version: pkg.version, description: `${pkg.description} (daemon and CLI payload)`, license: pkg.license, private: true, type: 'module', bin: pkg.bin, engines: pkg.engines, dependencies: runtimeDeps }, null, 2) + '\n',
);
cpSync(join(root, 'bin'), join(daemon, 'bin'), { recursive: true });
const noMaps = (src) => !src.endsWith('.map');
cpSync(join(root, 'dist', 'main'), join(daemon, 'dist', 'main'), { recursive: true, filter: (src) => noMaps(src) && !src.startsWith(join(root, 'dist', 'main', 'electron')) });
if (existsSync(join(root, 'dist', 'renderer'))) cpSync(join(root, 'dist', 'renderer'), join(daemon, 'dist', 'renderer'), { recursive: true, filter: noMaps });

// Natives: the addon (flock, posix_spawn, KVM probe) and, on Linux, the micro-VM executable.
const natives = join(root, 'native', 'build', 'Release');
const wanted = ['vmdesk_native.node', ...(process.platform === 'linux' ? ['vmdesk-microvm'] : [])];
for (const f of wanted) {
  if (!existsSync(join(natives, f))) fail(`native/build/Release/${f} is missing: run npm run build:native`);
  mkdirSync(join(daemon, 'native', 'build', 'Release'), { recursive: true });
  cpSync(join(natives, f), join(daemon, 'native', 'build', 'Release', f));
}
chmodSync(join(daemon, 'native', 'build', 'Release', 'vmdesk_native.node'), 0o755);
if (wanted.includes('vmdesk-microvm')) chmodSync(join(daemon, 'native', 'build', 'Release', 'vmdesk-microvm'), 0o755);

// node_modules: the runtime dependencies and theirs, as installed (node-pty built by npm install for this Node).
const require = createRequire(join(root, 'package.json'));
const SKIP_DIRS = new Set(['obj.target', '.deps', 'test', 'tests', '__tests__', '.github']);
// node-pty: its sources and build tooling stay behind; of its prebuilt binaries (used where no compiler built
// build/Release, as on macOS) only this platform's come along.
const SKIP_PTY = new Set(['deps', 'src', 'third_party', 'scripts']);
const PTY_PREBUILD = `${process.platform}-${process.arch}`;
const copied = new Map();
// Where packages are, relative to node_modules (node_modules itself may be a symlink: resolution gives real paths).
const modulesRoot = realpathSync(join(root, 'node_modules'));
function packageDir(name, from) {
  const req = createRequire(join(from, 'package.json'));
  let p;
  try {
    p = req.resolve(`${name}/package.json`);
  } catch {
    // Packages whose exports hide package.json: walk up from their entry.
    let dir = dirname(req.resolve(name));
    while (!existsSync(join(dir, 'package.json')) || JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).name !== name) dir = dirname(dir);
    return dir;
  }
  return dirname(p);
}
function copyPackage(name, from) {
  const dir = packageDir(name, from);
  const rel = join('node_modules', relative(modulesRoot, realpathSync(dir)));
  if (rel.includes('..')) fail(`${name} is not under node_modules (${dir})`);
  if (copied.has(rel)) return;
  copied.set(rel, name);
  const isPty = name === 'node-pty';
  cpSync(dir, join(daemon, rel), {
    recursive: true,
    dereference: true,
    filter: (src) => {
      const r = relative(dir, src);
      const top = r.split(sep)[0];
      if (r.split(sep).some((part) => SKIP_DIRS.has(part))) return false;
      if (isPty && SKIP_PTY.has(top)) return false;
      if (isPty && top === 'prebuilds' && r.split(sep)[1] !== undefined && r.split(sep)[1] !== PTY_PREBUILD) return false;
      // Nested node_modules are copied as dependencies of their own, so only what is needed comes along.
      if (top === 'node_modules') return false;
      return !src.endsWith('.map');
    },
  });
  const deps = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).dependencies ?? {};
  for (const d of Object.keys(deps)) copyPackage(d, dir);
}
for (const name of Object.keys(runtimeDeps)) copyPackage(name, root);
void require;

// The Node runtime.
const nodeSrc = process.env.VMDESK_DIST_NODE || process.execPath;
mkdirSync(join(nodeDir, 'bin'), { recursive: true });
const nodeDst = join(nodeDir, 'bin', process.platform === 'win32' ? 'node.exe' : 'node');
cpSync(nodeSrc, nodeDst, { dereference: true });
chmodSync(nodeDst, 0o755);
const version = spawnSync(nodeDst, ['--version'], { encoding: 'utf8' }).stdout.trim();
const want = /(\d+)\.(\d+)/.exec(pkg.engines?.node ?? '')?.slice(1).map(Number) ?? [0, 0];
const have = /v(\d+)\.(\d+)/.exec(version)?.slice(1).map(Number);
if (!have || have[0] < want[0] || (have[0] === want[0] && have[1] < want[1])) fail(`the staged Node (${nodeSrc}, ${version || 'does not run'}) is older than ${pkg.engines?.node}`);
writeFileSync(join(nodeDir, 'VERSION'), `${version}\n${basename(nodeSrc)} from ${nodeSrc}\n`);

// Every native module loads in the staged Node.
const nodeFiles = [];
const walk = (d) => {
  for (const e of readdirSync(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.name.endsWith('.node')) nodeFiles.push(p);
  }
};
walk(daemon);
for (const f of nodeFiles) {
  const r = spawnSync(nodeDst, ['-e', `require(${JSON.stringify(f)})`], { encoding: 'utf8' });
  if (r.status !== 0) fail(`${relative(root, f)} does not load in the staged Node ${version}: ${r.stderr.trim().split('\n').slice(-1)[0]} (rebuild it for that Node)`);
}
const size = (d) => readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? size(join(d, e.name)) : statSync(join(d, e.name)).size), 0);
console.log(`vmdesk stage: ${relative(root, daemon) || daemon} (${(size(daemon) / 1048576).toFixed(1)} MiB, ${copied.size} packages, ${nodeFiles.length} native modules checked) and ${relative(root, nodeDir) || nodeDir} (Node ${version})`);
