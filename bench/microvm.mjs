// Micro-VMM benchmark: KVM self-test class, start to first serial byte of the tiny test guest, snapshot and
// restore times for 64 MiB and 512 MiB guests (idle and fully dirtied memory), and the same guest under
// qemu-system-x86_64 -machine microvm in the same run, as a ratio. Usage: node bench/microvm.mjs [--json]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureTestGuest } from '../test/native-guests/build.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addonFile = join(root, 'native', 'build', 'Release', 'vmdesk_native.node');
if (!existsSync(addonFile)) {
  const r = spawnSync(process.execPath, [join(root, 'native', 'build.mjs'), '--quiet'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('could not build the native addon');
}
const native = createRequire(import.meta.url)(addonFile);
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

/** Through the engine (detached host process, as the CLI runs it): start() until serial.log has a byte. */
async function engineFirstByte(runs = 5) {
  const enginePath = join(root, 'dist', 'main', 'engines', 'microvm', 'engine.js');
  if (!existsSync(enginePath)) return undefined;
  const { MicrovmEngine } = await import(enginePath);
  const engine = new MicrovmEngine();
  const times = [];
  for (let i = 0; i < runs; i++) {
    const stamp = new Date().toISOString();
    const dir = join(work, `engine-${i}`);
    const ctx = {
      config: { schemaVersion: 1, id: randomUUID(), name: `bench-${i}`, osType: 'linux', engine: 'microvm', accel: 'auto', firmware: 'bios', cpus: 1, memoryMiB: 64, disks: [], network: [], directKernel: { kernel, cmdline: 'mode=echo' }, createdAt: stamp, modifiedAt: stamp },
      bundleDir: join(dir, 'b'),
      runtimeDir: join(dir, 'r'),
    };
    if (i === 0) await engine.check(ctx); // the KVM self-test result is cached per process: keep it out of the timing
    const t0 = now();
    const { handle } = await engine.start(ctx);
    const log = join(ctx.bundleDir, 'logs', 'serial.log');
    while (!(existsSync(log) && statSync(log).size > 0)) await new Promise((r) => setTimeout(r, 2));
    times.push(ms(now() - t0));
    await handle.kill();
  }
  return { medianMs: median(times), minMs: Math.min(...times), runs };
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
results.engineFirstSerialByte = await engineFirstByte();
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
    console.log(`start -> first serial byte (engine: detached host process, 64 MiB): median ${f(e.medianMs)} ms, min ${f(e.minMs)} ms over ${e.runs} runs`);
  } else {
    console.log('engine path not measured: run npm run build:main first (needs dist/)');
  }
  for (const s of results.snapshots) {
    console.log(`snapshot ${s.memoryMiB} MiB (${s.memory}): save ${f(s.saveMs)} ms (${f(s.writtenMiB)} MiB written, ${f(s.fileOnDiskMiB)} MiB on disk); restore ${f(s.restoreMs)} ms; restore -> echo ${f(s.restoreToEchoMs)} ms`);
  }
  if (results.qemuMicrovm) {
    console.log(`qemu -machine microvm -accel ${results.qemuMicrovm.accel}: spawn -> first serial byte median ${f(results.qemuMicrovm.medianMs)} ms (${results.qemuMicrovm.runs} runs)`);
    console.log(`ratio qemu / vmdesk micro-VMM (first serial byte): ${results.qemuOverVmdeskFirstByte.toFixed(1)}x in-process` +
      (results.qemuOverEngineFirstByte ? `, ${results.qemuOverEngineFirstByte.toFixed(1)}x via the engine's host process` : ''));
  } else {
    console.log('qemu comparison: qemu-system-x86_64 did not produce output with kvm or tcg');
  }
}
