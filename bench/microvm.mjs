// Micro-VMM benchmark: KVM self-test class; start to first serial byte of the tiny test guest in-process (the
// addon's Vm), through the micro-VM engine module (vmdesk-microvm, one process per guest, as the daemon runs
// it) and under qemu-system-x86_64 -machine microvm, in the same run; the vmdesk-microvm process's memory with
// an idle guest; snapshot and restore times for 64 MiB and 512 MiB guests (idle and fully dirtied memory).
// Targets (the daemon issue): engine first byte <= 1.3x in-process and faster than QEMU's microvm; the
// process's RSS <= 8 MiB plus the guest pages it touched. Usage: node bench/microvm.mjs [--json]
// Needs /dev/kvm; the engine figures need dist/ (npm run build:main).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureTestGuest } from '../test/native-guests/build.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addonFile = join(root, 'native', 'build', 'Release', 'vmdesk_native.node');
const exeFile = join(root, 'native', 'build', 'Release', 'vmdesk-microvm');
if (!existsSync(addonFile) || (process.platform === 'linux' && !existsSync(exeFile))) {
  const r = spawnSync(process.execPath, [join(root, 'native', 'build.mjs'), '--quiet'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('could not build native/ (the addon and vmdesk-microvm)');
}
const native = createRequire(import.meta.url)(addonFile);
{
  const probe = native.probe();
  if (!probe.available) {
    console.log(`micro-VM benchmark: no figures, KVM is not usable here: ${probe.reason}`);
    process.exit(0);
  }
}
const kernel = ensureTestGuest();
const work = mkdtempSync(join(tmpdir(), 'vmdesk-bench-'));
const ms = (ns) => Number(ns) / 1e6;
const now = () => process.hrtime.bigint();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Boots (or restores) a VM; resolves helpers to wait for output and to stop it. */
function vmSession(opts) {
  let out = '';
  let waiters = [];
  let exitResolve;
  const exited = new Promise((r) => (exitResolve = r));
  const vm = new native.Vm({
    ...opts,
    onSerial: (b) => {
      out += b.toString('latin1');
      waiters = waiters.filter((w) => (out.includes(w.text) ? (w.resolve(now()), false) : true));
    },
    onExit: (e) => { vm.close(); exitResolve(e); },
  });
  const waitFor = (text, timeoutMs = 60_000) => new Promise((resolve, reject) => {
    if (out.includes(text)) return resolve(now());
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${text}; got ${JSON.stringify(out.slice(-300))}`)), timeoutMs);
    waiters.push({ text, resolve: (v) => { clearTimeout(t); resolve(v); } });
  });
  const stop = async () => { vm.stop('killed'); await exited; };
  return { vm, waitFor, stop, get out() { return out; } };
}

async function firstByte(runs = 10) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = now();
    const s = vmSession({ cpus: 1, memoryMiB: 64, kernel, cmdline: 'mode=echo' });
    s.vm.start();
    const t1 = await s.waitFor('V'); // first byte of the banner
    times.push(ms(t1 - t0));
    await s.stop();
  }
  return { medianMs: median(times), minMs: Math.min(...times), runs };
}

async function snapshotCycle(memoryMiB, fill) {
  const snap = join(work, `snap-${memoryMiB}-${fill ? 'full' : 'idle'}.bin`);
  const s = vmSession({ cpus: 1, memoryMiB, kernel, cmdline: fill ? 'mode=fill' : 'mode=echo' });
  s.vm.start();
  await s.waitFor(fill ? 'FILLED' : 'ECHO-READY', 600_000);
  const t0 = now();
  const saved = await s.vm.snapshot(snap);
  const saveMs = ms(now() - t0);
  await s.stop();
  const diskBytes = statSync(snap).blocks * 512;

  const t1 = now();
  const r = vmSession({ restoreFrom: snap });
  const restoreMs = ms(now() - t1);
  r.vm.start();
  const t2 = now();
  r.vm.writeSerial(Buffer.from('Z'));
  const t3 = await r.waitFor('Z');
  const restoreToEchoMs = ms(t3 - t1);
  const echoMs = ms(t3 - t2);
  await r.stop();
  rmSync(snap, { force: true });
  return { memoryMiB, memory: fill ? 'dirtied' : 'idle', saveMs, writtenMiB: saved.bytes / 2 ** 20, fileOnDiskMiB: diskBytes / 2 ** 20, restoreMs, restoreToEchoMs, echoAfterStartMs: echoMs };
}

function engineContext(name, memoryMiB, cmdline) {
  const stamp = new Date().toISOString();
  const dir = join(work, name);
  return {
    config: { schemaVersion: 1, id: randomUUID(), name, osType: 'linux', engine: 'microvm', accel: 'auto', firmware: 'bios', cpus: 1, memoryMiB, disks: [], network: [], directKernel: { kernel, cmdline }, createdAt: stamp, modifiedAt: stamp },
    bundleDir: join(dir, 'b'),
    runtimeDir: join(dir, 'r'),
  };
}

async function loadEngine() {
  const modulePath = join(root, 'dist', 'main', 'engines', 'microvm', 'module.js');
  if (!existsSync(modulePath)) return undefined;
  return (await import(modulePath)).microvmEngine;
}

/**
 * Through the engine module, as the daemon starts a guest: from calling start() to the first byte of guest
 * output in serial.log (which vmdesk-microvm writes itself, so this does not wait for the daemon's sockets),
 * and to start() resolving with a connected runtime.
 */
async function engineFirstByte(engine, runs = 10) {
  const times = [];
  const ready = [];
  for (let i = 0; i < runs; i++) {
    const ctx = engineContext(`engine-${i}`, 64, 'mode=echo');
    if (i === 0) await engine.check(ctx); // the KVM self-test is cached per process: keep it out of the timing
    const log = join(ctx.bundleDir, 'logs', 'serial.log');
    const t0 = now();
    let resolved;
    const started = engine.start(ctx).then((rt) => ((resolved = now()), rt));
    let t1;
    while (t1 === undefined) {
      try {
        if (statSync(log).size > 0) t1 = now();
      } catch {
        // not created yet
      }
      if (t1 === undefined) await new Promise((r) => setImmediate(r));
    }
    const rt = await started;
    times.push(ms(t1 - t0));
    ready.push(ms(resolved - t0));
    await rt.kill();
  }
  return { medianMs: median(times), minMs: Math.min(...times), startResolvedMedianMs: median(ready), runs };
}

/** VmRSS of a vmdesk-microvm with an idle guest, and how much of it is guest memory the guest touched. */
async function engineMemory(engine, memoryMiB = 256) {
  const ctx = engineContext('rss', memoryMiB, 'mode=echo');
  const rt = await engine.start(ctx);
  const log = join(ctx.bundleDir, 'logs', 'serial.log');
  for (let i = 0; i < 500 && !(existsSync(log) && readFileSync(log, 'latin1').includes('ECHO-READY')); i++) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 500));
  const rssKiB = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${rt.pid}/status`, 'utf8'))[1]);
  let guestKiB = 0;
  for (const m of readFileSync(`/proc/${rt.pid}/smaps`, 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    if (Number(/\nSize:\s+(\d+) kB/.exec(m)?.[1]) === memoryMiB * 1024) guestKiB += Number(/\nRss:\s+(\d+) kB/.exec(m)?.[1] ?? 0);
  }
  await rt.kill();
  return { memoryMiB, rssKiB, guestTouchedKiB: guestKiB, processKiB: rssKiB - guestKiB };
}

/** Time from spawning QEMU to the first serial byte on its stdout; accel kvm first, tcg if that fails. */
async function qemuFirstByte(accel) {
  return new Promise((resolve) => {
    const t0 = now();
    const p = spawn('qemu-system-x86_64', ['-machine', 'microvm', '-accel', accel, '-m', '64', '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-kernel', kernel, '-append', 'mode=echo'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    let done = false;
    const finish = (v) => { if (done) return; done = true; clearTimeout(timer); p.kill('SIGKILL'); resolve(v); };
    const timer = setTimeout(() => finish({ ok: false, error: `no serial output within 20 s ${err.slice(0, 200)}` }), 20_000);
    p.stdout.once('data', () => finish({ ok: true, ms: ms(now() - t0) }));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => finish({ ok: false, error: `exited with ${code}: ${err.split('\n').slice(0, 3).join(' | ')}` }));
    p.on('error', (e) => finish({ ok: false, error: e.message }));
  });
}

async function qemu(runs = 3) {
  for (const accel of ['kvm', 'tcg']) {
    const first = await qemuFirstByte(accel);
    if (!first.ok) { console.error(`qemu -accel ${accel}: ${first.error}`); continue; }
    const times = [first.ms];
    for (let i = 1; i < runs; i++) {
      const r = await qemuFirstByte(accel);
      if (r.ok) times.push(r.ms);
    }
    return { accel, medianMs: median(times), runs: times.length };
  }
  return undefined;
}

const selfTest = await native.selfTest();
const probe = native.probe();
const results = { accelerator: { class: selfTest.class, loopsPerSecond: selfTest.loopsPerSecond, module: probe.module, reason: selfTest.reason } };
results.firstSerialByte = await firstByte();
const engine = await loadEngine();
if (engine) {
  results.engineFirstSerialByte = await engineFirstByte(engine);
  results.engineMemory = await engineMemory(engine);
  results.engineOverInProcessFirstByte = results.engineFirstSerialByte.medianMs / results.firstSerialByte.medianMs;
}
results.snapshots = [];
for (const mem of [64, 512]) for (const fill of [false, true]) results.snapshots.push(await snapshotCycle(mem, fill));
results.qemuMicrovm = await qemu();
if (results.qemuMicrovm) {
  results.qemuOverVmdeskFirstByte = results.qemuMicrovm.medianMs / results.firstSerialByte.medianMs;
  if (results.engineFirstSerialByte) results.qemuOverEngineFirstByte = results.qemuMicrovm.medianMs / results.engineFirstSerialByte.medianMs;
}
rmSync(work, { recursive: true, force: true });

if (process.argv.includes('--json')) {
  console.log(JSON.stringify(results, null, 2));
} else {
  const f = (v) => v.toFixed(1);
  console.log(`accelerator class: ${results.accelerator.class} (${results.accelerator.module}, ${results.accelerator.loopsPerSecond.toExponential(2)} loops/s)`);
  console.log(`start -> first serial byte (in-process, 64 MiB): median ${f(results.firstSerialByte.medianMs)} ms, min ${f(results.firstSerialByte.minMs)} ms over ${results.firstSerialByte.runs} runs`);
  if (results.engineFirstSerialByte) {
    const e = results.engineFirstSerialByte;
    const m = results.engineMemory;
    console.log(`start -> first serial byte (engine: vmdesk-microvm process, 64 MiB): median ${f(e.medianMs)} ms, min ${f(e.minMs)} ms over ${e.runs} runs; start() resolved after ${f(e.startResolvedMedianMs)} ms`);
    console.log(`engine / in-process first byte: ${results.engineOverInProcessFirstByte.toFixed(2)}x (target <= 1.3x)`);
    console.log(`vmdesk-microvm memory, idle ${m.memoryMiB} MiB guest: VmRSS ${(m.rssKiB / 1024).toFixed(1)} MiB = ${(m.guestTouchedKiB / 1024).toFixed(1)} MiB guest pages touched + ${(m.processKiB / 1024).toFixed(1)} MiB for the process (target <= 8 MiB)`);
  } else {
    console.log('engine path not measured: run npm run build:main first (needs dist/main/engines/microvm/module.js)');
  }
  for (const s of results.snapshots) {
    console.log(`snapshot ${s.memoryMiB} MiB (${s.memory}): save ${f(s.saveMs)} ms (${f(s.writtenMiB)} MiB written, ${f(s.fileOnDiskMiB)} MiB on disk); restore ${f(s.restoreMs)} ms; restore -> echo ${f(s.restoreToEchoMs)} ms`);
  }
  if (results.qemuMicrovm) {
    console.log(`qemu -machine microvm -accel ${results.qemuMicrovm.accel}: spawn -> first serial byte median ${f(results.qemuMicrovm.medianMs)} ms (${results.qemuMicrovm.runs} runs)`);
    console.log(`ratio qemu / vmdesk micro-VMM (first serial byte): ${results.qemuOverVmdeskFirstByte.toFixed(1)}x in-process` +
      (results.qemuOverEngineFirstByte ? `, ${results.qemuOverEngineFirstByte.toFixed(1)}x through the engine (target > 1x)` : ''));
  } else {
    console.log('qemu comparison: qemu-system-x86_64 did not produce output with kvm or tcg');
  }
}
