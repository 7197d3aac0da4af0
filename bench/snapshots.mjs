// Snapshot benchmark: live save/restore through VMDesk vs the same QMP jobs issued directly to QEMU; listing 200 snapshots.
// Run with: npm run build:main && node bench/snapshots.mjs   (needs the test guest: npm run test:guest)
import { mkdtemp, rm, mkdir, readFile } from 'node:fs/promises';
import { spawn, execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { Core } from '../dist/main/core/core.js';
import { SnapshotManager } from '../dist/main/core/snapshots/manager.js';
import { buildQemuArgs } from '../dist/main/engines/qemu/args.js';
import { runtimeFiles } from '../dist/main/engines/qemu/layout.js';
import { QmpClient } from '../dist/main/engines/qemu/qmp.js';
import { qemuCapabilities, requireQemuSystem } from '../dist/main/engines/qemu/host.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SIZES = (process.env.BENCH_SIZES ?? '256,1024').split(',').map(Number);
const guest = { kernel: path.resolve('.cache/guest/vmlinuz'), initrd: path.resolve('.cache/guest/initrd.cpio.gz') };
const MARKER = 'VMDESK-GUEST-READY';
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitForFile(file, text, timeoutMs = 120_000) {
  const t0 = Date.now();
  for (;;) {
    if ((await readFile(file, 'utf8').catch(() => '')).includes(text)) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`${text} never appeared in ${file}`);
    await sleep(100);
  }
}

/** Direct: one QMP job, completion from JOB_STATUS_CHANGE events (the best a client can do), then dismiss. */
async function directJob(qmp, command, args) {
  const id = args['job-id'];
  const done = new Promise((resolve) => {
    const on = (ev) => {
      if (ev.event === 'JOB_STATUS_CHANGE' && ev.data?.id === id && ev.data?.status === 'concluded') {
        qmp.off('event', on);
        resolve();
      }
    };
    qmp.on('event', on);
  });
  await qmp.execute(command, args, 60_000);
  await done;
  const job = (await qmp.execute('query-jobs')).find((j) => j.id === id);
  await qmp.execute('job-dismiss', { id });
  if (job?.error) throw new Error(job.error);
}

async function benchSize(core, memoryMiB) {
  const name = `bench-${memoryMiB}`;
  const vm = await core.create({ name, memoryMiB, cpus: 1, accel: 'tcg', diskBytes: 64 * 1024 * 1024, network: [{ mode: 'none', forwards: [] }], directKernel: { ...guest, cmdline: 'console=ttyS0' } });
  const snaps = new SnapshotManager(core);

  // Both guests run side by side (2 at most); rounds alternate VMDesk and direct so that disk and cache
  // conditions are shared rather than favouring whichever goes second.
  await core.start(name);
  await waitForFile(path.join(vm.bundle, 'logs', 'serial.log'), MARKER);

  // ---- direct: the same argv, our own QMP connection, the same jobs ----
  const bundleDir = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-bench-snap-'));
  await mkdir(path.join(bundleDir, 'logs'));
  await mkdir(path.join(bundleDir, 'disks'));
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(bundleDir, 'disks', 'disk0.qcow2'), '64M']);
  const runtimeDir = await mkdtemp('/tmp/vbs-');
  const caps = await qemuCapabilities(requireQemuSystem());
  const argv = buildQemuArgs({ config: (await core.get(name)).config, bundleDir, runtimeDir, accel: 'tcg', capabilities: { sandbox: caps.sandbox } });
  const q = spawn(requireQemuSystem(), argv, { stdio: 'ignore' });
  let qmp;
  for (let i = 0; ; i++) {
    try {
      qmp = await QmpClient.connect(runtimeFiles(runtimeDir).qmp);
      break;
    } catch (e) {
      if (i > 200) throw e;
      await sleep(50);
    }
  }
  await waitForFile(path.join(bundleDir, 'logs', 'serial.log'), MARKER);

  const save = [];
  const load = [];
  const dsave = [];
  const dload = [];
  for (let i = 0; i < ROUNDS; i++) {
    let t0 = performance.now();
    const s = await snaps.take(name, { name: `r${i}` });
    save.push(performance.now() - t0);
    t0 = performance.now();
    await directJob(qmp, 'snapshot-save', { 'job-id': `s${i}`, tag: `d${i}`, vmstate: 'disk-disk0', devices: ['disk-disk0'] });
    dsave.push(performance.now() - t0);
    t0 = performance.now();
    await snaps.restore(name, s.id, { snapshotCurrent: false });
    load.push(performance.now() - t0);
    t0 = performance.now();
    await directJob(qmp, 'snapshot-load', { 'job-id': `l${i}`, tag: `d${i}`, vmstate: 'disk-disk0', devices: ['disk-disk0'] });
    dload.push(performance.now() - t0);
  }
  await core.kill(name).catch(() => {});
  const ramState = execFileSync('qemu-img', ['info', '-U', '--output=json', path.join(bundleDir, 'disks', 'disk0.qcow2')], { encoding: 'utf8' });
  const vmStateBytes = JSON.parse(ramState).snapshots?.[0]?.['vm-state-size'] ?? 0;
  qmp.close?.();
  q.kill('SIGKILL');
  await new Promise((r) => q.once('exit', r));
  await rm(bundleDir, { recursive: true, force: true });
  await rm(runtimeDir, { recursive: true, force: true });

  const f = (x) => `${x.toFixed(0)} ms`;
  console.log(`${memoryMiB} MiB guest (RAM state ${(vmStateBytes / 1024 / 1024).toFixed(1)} MiB), median of ${ROUNDS}:`);
  console.log(`  live save:    VMDesk ${f(median(save))}, QMP direct ${f(median(dsave))}, ratio ${(median(save) / median(dsave)).toFixed(2)}`);
  console.log(`  live restore: VMDesk ${f(median(load))}, QMP direct ${f(median(dload))}, ratio ${(median(load) / median(dload)).toFixed(2)}`);
  return { memoryMiB, save: median(save), directSave: median(dsave), load: median(load), directLoad: median(dload) };
}

async function benchList(core) {
  const vm = await core.create({ name: 'bench-list', memoryMiB: 128, diskBytes: 16 * 1024 * 1024, network: [{ mode: 'none', forwards: [] }] });
  const disk = path.join(vm.bundle, 'disks', 'disk0.qcow2');
  for (let i = 0; i < 200; i++) execFileSync('qemu-img', ['snapshot', '-c', `s${String(i).padStart(3, '0')}`, disk]);
  const snaps = new SnapshotManager(core);
  const first = performance.now();
  const adopted = await snaps.list('bench-list');
  const adoptMs = performance.now() - first;
  const times = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = performance.now();
    const l = await snaps.list('bench-list');
    times.push(performance.now() - t0);
    if (l.snapshots.length !== 200) throw new Error(`listed ${l.snapshots.length} snapshots`);
  }
  console.log(`list a tree of ${adopted.snapshots.length} snapshots (with reconciliation against the disk): median ${median(times).toFixed(1)} ms; first list adopting all 200: ${adoptMs.toFixed(0)} ms`);
}

async function main() {
  const home = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-bsnap-'));
  const core = new Core({ home });
  await core.boot();
  try {
    for (const m of SIZES) await benchSize(core, m);
    await benchList(core);
  } finally {
    for (const v of await core.list()) if (v.state !== 'stopped') await core.kill(v.id).catch(() => {});
    await core.shutdown();
    await rm(home, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
