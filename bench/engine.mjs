// Daemon and engine benchmark (issue: one daemon per library, no Node process per VM). Prints:
//  - RSS of VMDesk's own processes: the idle daemon, and what each extra running VM adds (plus passt per NAT VM)
//  - daemon request received -> QEMU spawned (warm daemon), from the daemon's trace marks
//  - start -> guest's first serial byte: through `vmdesk start`, through one RPC on a warm connection, and
//    the same QEMU argv spawned directly, alternating rounds, with the ratios
//  - `vmdesk list --json` with 500 VMs, warm daemon
// Run with: npm run bench:engine   (needs the test guest: npm run test:guest)
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, stat, mkdir, readFile, writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { connectDaemon } from '../dist/main/client/daemon-client.js';

const run = promisify(execFile);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const guest = { kernel: path.resolve('.cache/guest/vmlinuz'), initrd: path.resolve('.cache/guest/initrd.cpio.gz') };
const BIN = path.resolve('bin/vmdesk.js');
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mib = (b) => `${(b / 1024 / 1024).toFixed(1)} MiB`;

function vmdesk(home, args, env = {}) {
  return run(process.execPath, [BIN, '--home', home, ...args], { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 });
}

/** Resident set of a process, from /proc (kB -> bytes). */
async function rss(pid) {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(s)[1]) * 1024;
}

/** Polls a file until it has grown past `from` bytes; returns the time (performance.now) it did. */
async function firstByte(file, from, timeoutMs = 120_000) {
  const t0 = performance.now();
  for (;;) {
    const s = await stat(file).catch(() => null);
    if (s && s.size > from) return performance.now();
    if (performance.now() - t0 > timeoutMs) throw new Error(`no serial output in ${file}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function size(file) {
  return (await stat(file).catch(() => ({ size: 0 }))).size;
}

async function main() {
  const home = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-bench-'));
  const env = { VMDESK_TRACE: '1', VMDESK_DAEMON_IDLE_MS: '0' };
  process.env.VMDESK_TRACE = '1';
  try {
    // The first command starts the daemon (with the trace marks on).
    await vmdesk(home, ['list'], env);
    const client = await connectDaemon(home);
    const status0 = await client.call('daemon.status', {});
    console.log(`daemon: pid ${status0.pid}, idle RSS ${mib(await rss(status0.pid))}`);

    // ---- RSS per running VM -------------------------------------------------------------------------
    const N = Number(process.env.BENCH_VMS ?? 10);
    const samples = [await rss(status0.pid)];
    const names = [];
    for (let i = 0; i < N; i++) {
      const name = `rss${i}`;
      names.push(name);
      await client.call('vm.create', { name, memoryMiB: 64, cpus: 1, network: [{ mode: 'none', forwards: [] }], directKernel: { ...guest, cmdline: 'console=ttyS0 quiet' } });
      await client.call('vm.start', { id: name });
      await new Promise((r) => setTimeout(r, 300));
      samples.push(await rss(status0.pid));
    }
    await new Promise((r) => setTimeout(r, 2000));
    samples.push(await rss(status0.pid));
    const perVm = (samples.at(-1) - samples[0]) / N;
    const list = await client.call('vm.list', {});
    const qemuRss = [];
    for (const v of list.filter((x) => x.pid)) qemuRss.push(await rss(v.pid));
    console.log(`RSS of VMDesk's own processes: daemon ${mib(samples[0])} idle -> ${mib(samples.at(-1))} with ${N} running VMs: ${mib(perVm)} per extra VM (no other VMDesk process per VM)`);
    console.log(`  (each QEMU, not VMDesk's: median ${mib(median(qemuRss))} for a 64 MiB TCG guest)`);
    // A NAT VM also has a passt process (from Debian's passt package), not VMDesk code; measured for the record.
    await client.call('vm.create', { name: 'natvm', memoryMiB: 64, cpus: 1, directKernel: { ...guest, cmdline: 'console=ttyS0 quiet' } });
    await client.call('vm.start', { id: 'natvm' });
    const { stdout: ps } = await run('ps', ['-eo', 'pid,rss,comm']);
    const passt = ps.split('\n').filter((l) => /\bpasst\b/.test(l)).map((l) => Number(l.trim().split(/\s+/)[1]) * 1024);
    if (passt.length) console.log(`  passt per NAT adapter: ${mib(median(passt))} RSS`);
    for (const n of [...names, 'natvm']) await client.call('vm.kill', { id: n });

    // ---- start -> first serial byte ------------------------------------------------------------------
    await client.call('vm.create', { name: 'bench', memoryMiB: 128, cpus: 1, network: [{ mode: 'none', forwards: [] }], directKernel: { ...guest, cmdline: 'console=ttyS0' } });
    const vm = await client.call('vm.get', { id: 'bench' });
    const serialLog = path.join(vm.bundle, 'logs', 'serial.log');
    const daemonLog = path.join(home, 'logs', 'daemon.log');
    const cli = [];
    const api = [];
    const direct = [];
    const spawnDelay = [];
    let argv;
    let qemu;
    for (let i = 0; i < ROUNDS; i++) {
      // 1. `vmdesk start` (a CLI process, warm daemon) until the guest's first serial byte.
      let from = await size(serialLog);
      let t0 = performance.now();
      const started = vmdesk(home, ['start', 'bench']);
      cli.push((await firstByte(serialLog, from)) - t0);
      await started;
      await client.call('vm.kill', { id: 'bench' });

      // 2. One RPC on a warm connection (what the GUI does).
      from = await size(serialLog);
      const logFrom = await size(daemonLog);
      t0 = performance.now();
      const p = client.call('vm.start', { id: 'bench' });
      api.push((await firstByte(serialLog, from)) - t0);
      await p;
      await client.call('vm.kill', { id: 'bench' });
      const text = (await readFile(daemonLog, 'utf8')).slice(logFrom);
      const call = /trace call vm\.start ([\d.]+)/.exec(text);
      const spawned = /trace qemu-spawned ([\d.]+)/.exec(text);
      if (call && spawned) spawnDelay.push(Number(spawned[1]) - Number(call[1]));

      // 3. The same QEMU argv, spawned straight from this process.
      if (!argv) {
        const qlog = await readFile(path.join(vm.bundle, 'logs', 'qemu.log'), 'utf8');
        const line = qlog.split('\n').filter((l) => / starting /.test(l)).at(-1);
        const parts = JSON.parse(`[${line.slice(line.indexOf(' starting ') + 10).split(' ').slice(1).join(',')}]`);
        qemu = line.slice(line.indexOf(' starting ') + 10).split(' ')[0];
        argv = parts;
      }
      from = await size(serialLog);
      t0 = performance.now();
      const child = spawn(qemu, argv, { stdio: 'ignore', cwd: vm.bundle });
      direct.push((await firstByte(serialLog, from)) - t0);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    const f = (xs) => `${median(xs).toFixed(0)} ms`;
    console.log(`daemon request received -> QEMU spawned (warm daemon): median ${median(spawnDelay).toFixed(2)} ms over ${spawnDelay.length} starts`);
    console.log(`start -> first serial byte, median of ${ROUNDS}: vmdesk start ${f(cli)}, one RPC ${f(api)}, QEMU direct ${f(direct)}`);
    console.log(`  ratio vmdesk start / direct: ${(median(cli) / median(direct)).toFixed(3)}; RPC / direct: ${(median(api) / median(direct)).toFixed(3)}`);

    // ---- vmdesk list --json with 500 VMs --------------------------------------------------------------
    client.close();
    await vmdesk(home, ['daemon', 'stop']);
    const vmsDir = path.join(home, 'vms');
    const now = new Date().toISOString();
    for (let i = 0; i < 500; i++) {
      const id = randomUUID();
      await mkdir(path.join(vmsDir, id, 'logs'), { recursive: true });
      await writeFile(
        path.join(vmsDir, id, 'vm.json'),
        JSON.stringify({ schemaVersion: 1, id, name: `many-${String(i).padStart(3, '0')}`, cpus: 1, memoryMiB: 64, disks: [], network: [{ mode: 'none', forwards: [] }], createdAt: now, modifiedAt: now }),
      );
    }
    await vmdesk(home, ['list'], env);
    const t = [];
    for (let i = 0; i < 11; i++) {
      const t0 = performance.now();
      const { stdout } = await vmdesk(home, ['list', '--json']);
      t.push(performance.now() - t0);
      if (i === 0 && JSON.parse(stdout).length < 500) throw new Error('list did not return 500 VMs');
    }
    const t0 = performance.now();
    await run(process.execPath, ['-e', '0']);
    const bare = performance.now() - t0;
    console.log(`vmdesk list --json with ${500 + N + 2} VMs, warm daemon: median ${median(t).toFixed(0)} ms (a bare "node -e 0" takes ${bare.toFixed(0)} ms here)`);
  } finally {
    await vmdesk(home, ['daemon', 'stop']).catch(() => {});
    await rm(home, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
