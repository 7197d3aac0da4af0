// Stats overhead benchmark (issue 11): the daemon's CPU time with 20 VMs while one client is subscribed to all
// of them (stats.subscribe, as `vmdesk stats --watch` and the GUI's live charts do: a vm-stats event per VM
// per second, each sample from QMP and /proc of its QEMU), against the same daemon with the same client
// connected and no subscription, before and after. CPU time is utime+stime of the daemon process from
// /proc/PID/stat over each window, printed as percent of one core.
// The VMs are tiny (test guest kernel + initramfs, 64 MiB, 1 vCPU, no network) and started paused by default
// (QEMU up, QMP answering, vCPUs stopped), so 20 TCG guests booting on this machine's 2 cores do not crowd
// the daemon being measured; sampling a paused VM takes the same queries as a running one.
// BENCH_VMS (20), BENCH_SECONDS per window (30), BENCH_PAUSED=0 to let the guests boot and run.
// Everything runs from a copy of dist/ in a temporary home, removed with its VMs whatever happens.
// Run with: npm run bench:stats
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { snapshotApp, snapshotGuest } from './network.mjs';

const run = promisify(execFile);
const VMS = Number(process.env.BENCH_VMS ?? 20);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 30);
const PAUSED = process.env.BENCH_PAUSED !== '0';
const MEMORY_MIB = 64;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid, tck) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) in parentheses: state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / tck;
}

/** The daemon's CPU over one window, as percent of one core. */
async function window(pid, tck, seconds) {
  const c0 = cpuSeconds(pid, tck);
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const c1 = cpuSeconds(pid, tck);
  const wall = (performance.now() - t0) / 1000;
  return { cpu: c1 - c0, wall, percent: ((c1 - c0) / wall) * 100 };
}

/** Runs fn over items, at most n at once. */
async function pool(items, n, fn) {
  const queue = [...items];
  await Promise.all(Array.from({ length: n }, async () => {
    while (queue.length) await fn(queue.shift());
  }));
}

async function main() {
  const load0 = os.loadavg();
  const work = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-bench-stats-'));
  const home = path.join(work, 'home');
  mkdirSync(home);
  let bin;
  let client;
  const vmdesk = (args) => run(process.execPath, [bin, '--home', home, ...args], { maxBuffer: 16 * 1024 * 1024 });
  const cleanup = async () => {
    client?.close();
    if (bin) {
      const list = await vmdesk(['list', '--json']).then((r) => JSON.parse(r.stdout), () => []);
      await pool(list, 4, (v) => vmdesk(['kill', v.name]).catch(() => {}));
      await vmdesk(['daemon', 'stop']).catch(() => {});
    }
    await rm(work, { recursive: true, force: true });
  };
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    console.error('interrupted: cleaning up');
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    bin = await snapshotApp(work);
    const { kernel, initrd } = await snapshotGuest(work);
    const tck = Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100;
    const names = Array.from({ length: VMS }, (_, i) => `s${String(i + 1).padStart(2, '0')}`);
    const tStart = performance.now();
    await pool(names, 4, async (name) => {
      await vmdesk(['create', name, '--memory', String(MEMORY_MIB), '--cpus', '1', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0 quiet no_timer_check', '--net', 'none']);
      await vmdesk(['start', name, ...(PAUSED ? ['--paused'] : [])]);
    });
    const list = JSON.parse((await vmdesk(['list', '--json'])).stdout);
    const want = PAUSED ? 'paused' : 'running';
    const alive = list.filter((v) => v.state === want);
    if (alive.length !== VMS) throw new Error(`${alive.length} of ${VMS} VMs are ${want}: ${list.map((v) => `${v.name} ${v.state}`).join(', ')}`);
    const status = JSON.parse((await vmdesk(['daemon', 'status', '--json'])).stdout);
    const pid = status.pid;
    const qemuRss = alive.reduce((n, v) => n + (() => {
      try {
        return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${v.pid}/status`, 'utf8'))[1]) * 1024;
      } catch {
        return 0;
      }
    })(), 0);
    console.log(`${VMS} VMs ${want} (${MEMORY_MIB} MiB, 1 vCPU, TCG, no network) in ${((performance.now() - tStart) / 1000).toFixed(0)} s; QEMU RSS total ${(qemuRss / 1048576).toFixed(0)} MiB; daemon pid ${pid}`);

    // One client for all windows (a daemon with no client and no VM may exit when idle; this one has both).
    const { connectDaemon } = await import(pathToFileURL(path.join(path.dirname(bin), '..', 'dist', 'main', 'client', 'daemon-client.js')).href);
    client = await connectDaemon(home);
    const events = { count: 0, ids: new Set() };
    client.onEvent((ev) => {
      if (ev.type === 'vm-stats') {
        events.count++;
        events.ids.add(ev.id);
      }
    });
    const ids = alive.map((v) => v.id);
    await sleep(5000);
    const before = await window(pid, tck, SECONDS);
    await client.call('stats.subscribe', { ids });
    await sleep(3000);
    const e0 = events.count;
    const during = await window(pid, tck, SECONDS);
    const samples = events.count - e0;
    await client.call('stats.unsubscribe', {});
    await sleep(2000);
    const e1 = events.count;
    const after = await window(pid, tck, SECONDS);
    if (events.count !== e1) throw new Error(`${events.count - e1} samples arrived after unsubscribing`);
    if (events.ids.size !== VMS) throw new Error(`samples came for ${events.ids.size} of ${VMS} VMs`);
    const rss = JSON.parse((await vmdesk(['daemon', 'status', '--json'])).stdout).rssBytes;
    const load1 = os.loadavg();

    const idle = (before.percent + after.percent) / 2;
    console.log(`\ndaemon CPU (utime+stime from /proc/${pid}/stat, CLK_TCK ${tck}), ${SECONDS} s windows, one client connected throughout:`);
    const rows = [
      ['window', 'CPU s', 'wall s', '% of one core', 'vm-stats events'],
      ['no subscription (before)', before.cpu.toFixed(2), before.wall.toFixed(1), before.percent.toFixed(2), '0'],
      [`subscribed to all ${VMS} VMs, 1 Hz`, during.cpu.toFixed(2), during.wall.toFixed(1), during.percent.toFixed(2), `${samples} (${(samples / during.wall).toFixed(1)}/s)`],
      ['no subscription (after)', after.cpu.toFixed(2), after.wall.toFixed(1), after.percent.toFixed(2), '0'],
    ];
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    for (const r of rows) console.log('  ' + r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '));
    console.log(`  overhead of the feed: ${(during.percent - idle).toFixed(2)} % of one core (subscribed minus the mean of before and after); ${samples ? (((during.cpu - (idle / 100) * during.wall) / samples) * 1000).toFixed(2) : '-'} ms of daemon CPU per sample`);
    console.log(`  daemon RSS ${(rss / 1048576).toFixed(0)} MiB at the end`);
    console.log(`load average (1/5/15 min) at start ${load0.map((x) => x.toFixed(2)).join(' ')}, at end ${load1.map((x) => x.toFixed(2)).join(' ')}; ${os.cpus().length} CPUs`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (!interrupted) await cleanup();
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exitCode = 1;
});
