// Engine benchmark: start → first serial byte through VMDesk vs the same QEMU argv run directly; core RSS with 10 VMs.
// Run with: npm run bench:engine   (needs the test guest: npm run test:guest)
import { mkdtemp, rm, stat, mkdir, readFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { Core } from '../dist/main/core/core.js';
import { buildQemuArgs } from '../dist/main/engines/qemu/args.js';
import { qemuCapabilities, requireQemuSystem } from '../dist/main/engines/qemu/host.js';
import { resolveAccel } from '../dist/main/engines/qemu/accel.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const guest = { kernel: path.resolve('.cache/guest/vmlinuz'), initrd: path.resolve('.cache/guest/initrd.cpio.gz') };

/** Polls a file until it has at least one byte; returns the time at which it did (ms since epoch, hi-res). */
async function firstByte(file, t0, timeoutMs = 120_000) {
  for (;;) {
    const s = await stat(file).catch(() => null);
    if (s && s.size > 0) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`no serial output in ${file}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const home = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-bench-'));
  const core = new Core({ home });
  await core.boot();
  const req = { name: 'bench', memoryMiB: 128, cpus: 1, accel: 'auto', network: [{ mode: 'none', forwards: [] }], directKernel: { ...guest, cmdline: 'console=ttyS0' } };
  const vm = await core.create(req);
  const accel = await resolveAccel('auto');
  console.log(`accelerator: ${accel.used} (${accel.reason})`);

  const through = [];
  const direct = [];
  const serialLog = path.join(vm.bundle, 'logs', 'serial.log');
  // The supervisor writes this record right after spawning QEMU: the delay VMDesk adds before the guest runs.
  const supervisorRecord = path.join(core.library.runtimeDir(vm.id), 'supervisor.json');
  const qemuSpawn = [];
  const caps = await qemuCapabilities(requireQemuSystem());
  for (let i = 0; i < ROUNDS; i++) {
    // Through VMDesk: core.start (supervisor process + QEMU) until the guest's first serial byte.
    await rm(serialLog, { force: true });
    let t0 = performance.now();
    const started = core.start('bench');
    const spawned = firstByte(supervisorRecord, t0);
    through.push(await firstByte(serialLog, t0));
    qemuSpawn.push(await spawned);
    await started;
    await core.kill('bench');

    // Direct: the same argv, spawned straight from this process.
    const bundleDir = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-bench-direct-'));
    await mkdir(path.join(bundleDir, 'logs'));
    const runtimeDir = await mkdtemp('/tmp/vbd-');
    const config = (await core.get('bench')).config;
    const argv = buildQemuArgs({ config, bundleDir, runtimeDir, accel: accel.used, capabilities: { sandbox: caps.sandbox } });
    t0 = performance.now();
    const q = spawn(requireQemuSystem(), argv, { stdio: 'ignore' });
    direct.push(await firstByte(path.join(bundleDir, 'logs', 'serial.log'), t0));
    q.kill('SIGKILL');
    await new Promise((r) => q.once('exit', r));
    await rm(bundleDir, { recursive: true, force: true });
    await rm(runtimeDir, { recursive: true, force: true });
    console.log(`round ${i + 1}: through VMDesk ${through.at(-1).toFixed(1)} ms (QEMU spawned after ${qemuSpawn.at(-1).toFixed(1)} ms), direct ${direct.at(-1).toFixed(1)} ms`);
  }
  const ratio = median(through) / median(direct);
  console.log(`start → first serial byte (median of ${ROUNDS}): VMDesk ${median(through).toFixed(1)} ms, QEMU direct ${median(direct).toFixed(1)} ms, ratio ${ratio.toFixed(3)} (goal ≤ 1.05)`);
  console.log(`time from core.start to QEMU's spawn (supervisor start-up; median): ${median(qemuSpawn).toFixed(1)} ms`);

  // Core RSS with 10 small VMs running (the core holds a connection to each VM's supervisor).
  const names = [];
  for (let i = 0; i < 10; i++) {
    const v = await core.create({ ...req, name: `small-${i}`, memoryMiB: 64 });
    names.push(v.name);
  }
  const rssBefore = process.memoryUsage().rss;
  for (const n of names) await core.start(n);
  await new Promise((r) => setTimeout(r, 3000));
  const list = await core.list();
  const running = list.filter((v) => v.state === 'running').length;
  const rss = process.memoryUsage().rss;
  console.log(`core process RSS with ${running} VMs running: ${(rss / 1024 / 1024).toFixed(1)} MiB (${((rss - rssBefore) / 1024 / 1024).toFixed(1)} MiB more than with none)`);
  const rssKiB = async (pid) => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''))?.[1] ?? 0);
  let supervisorsKiB = 0;
  let qemuKiB = 0;
  for (const v of list.filter((x) => x.pid)) {
    const record = JSON.parse(await readFile(path.join(core.library.runtimeDir(v.id), 'supervisor.json'), 'utf8'));
    supervisorsKiB += await rssKiB(record.pid);
    qemuKiB += await rssKiB(record.qemuPid);
  }
  console.log(`per VM, on average: supervisor process ${(supervisorsKiB / 1024 / running).toFixed(1)} MiB RSS, QEMU (64 MiB guest) ${(qemuKiB / 1024 / running).toFixed(1)} MiB RSS`);
  for (const n of names) await core.kill(n).catch(() => {});
  await core.shutdown();
  await rm(home, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
