// The built-in micro-VM engine: each guest runs in its own detached host process (host.ts) on the native
// KVM micro-VMM; handles talk to it over a JSON-lines control socket in the VM's runtime directory.
//
// Snapshots: handle.command('snapshot-save', { path }) writes a full snapshot (vCPU + device state and
// sparse guest memory) and keeps the guest running; handle.command('snapshot-load', { path, paused? })
// replaces the running guest with the snapshot's (memory mapped copy-on-write). Both take absolute paths.
// Other commands: 'info', 'state'. A micro-VM has no ACPI: shutdown(timeoutMs) presses Ctrl-Alt-Del on the
// i8042 keyboard and forces the guest off after timeoutMs (reason "shutdown" either way, the detail says
// which); a guest-initiated reboot (i8042 reset, Linux reboot=k) powers it off (reason guest-poweroff).
// reset() boots the kernel afresh inside the same host process.
import { spawn } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { AccelChoice, ExitRecord, VmState } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { Duplex, Engine, EngineContext, StartResult, VmHandle } from '../engine.js';
import { kvmReport } from './native.js';
import { bundlePaths, runtimePaths, SOCKET_PATH_MAX, type ControlEvent, type ControlReply, type HostRecord, type HostState, type LaunchSpec } from './protocol.js';
import { writeFileAtomicSync as writeFileAtomic } from '../../platform/atomic.js';
import { connectUnixSocket, pidAlive } from '../../platform/process.js';
import { openControlStream } from '../control-stream.js';

const START_TIMEOUT_MS = 30_000;
const COMMAND_TIMEOUT_MS = 60_000;

/** node arguments that run the host: compiled JS beside this module, else the TS source through a loader. */
export function hostCommand(): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const js = join(here, 'host-main.js');
  if (existsSync(js)) return [js];
  const ts = join(here, 'host-main.ts');
  for (let dir = here; ; dir = dirname(dir)) {
    // Running from source (vitest): tsx when installed, else jiti (a vite dependency) as the TS loader.
    for (const loader of ['tsx/dist/loader.mjs', 'jiti/lib/jiti-register.mjs']) {
      const p = join(dir, 'node_modules', loader);
      if (existsSync(ts) && existsSync(p)) return ['--import', pathToFileURL(p).href, ts];
    }
    const mirrored = join(dir, 'dist', ...here.slice(dir.length + 1).split('/'), 'host-main.js');
    if (existsSync(join(dir, 'package.json')) && existsSync(mirrored)) return [mirrored];
    if (dirname(dir) === dir) break;
  }
  throw new VmdeskError(ErrorCode.internal, `micro-VM host entry not found next to ${here} (run npm run build)`);
}

function toVmState(s: HostState): VmState {
  return s === 'starting' ? 'starting' : s === 'stopped' ? 'stopped' : s;
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

class MicrovmHandle implements VmHandle {
  readonly vncSocket = undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private readonly listeners = new Set<(name: string, data: unknown) => void>();
  private buf = '';
  private exitRecord: ExitRecord | undefined;
  private readonly exitWaiters: ((r: ExitRecord) => void)[] = [];
  private closed = false;

  constructor(
    private readonly sock: Socket,
    readonly pid: number,
    readonly accel: AccelChoice,
    private readonly ctx: EngineContext,
  ) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('error', () => {});
    sock.on('close', () => this.onClose());
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (!line.trim()) continue;
      let msg: ControlReply | ControlEvent;
      try {
        msg = JSON.parse(line) as ControlReply | ControlEvent;
      } catch {
        continue;
      }
      if ('event' in msg) {
        if (msg.event === 'exit') this.setExit(msg.data as ExitRecord);
        for (const fn of this.listeners) fn(msg.event, msg.data);
        continue;
      }
      const p = this.pending.get(msg.id);
      if (!p) continue;
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new VmdeskError((msg.error.code as ErrorCode) ?? ErrorCode.engine, msg.error.message, msg.error.details ?? []));
    }
  }

  private setExit(r: ExitRecord): void {
    if (this.exitRecord) return;
    this.exitRecord = r;
    for (const w of this.exitWaiters.splice(0)) w(r);
  }

  private onClose(): void {
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new VmdeskError(ErrorCode.state, 'the micro-VM host closed the connection (the guest has stopped)'));
    }
    this.pending.clear();
    if (this.closed || this.exitRecord) return;
    // The host went away without an exit event reaching us: take its record from disk once it is gone.
    void this.waitForRecord();
  }

  private async waitForRecord(): Promise<void> {
    for (let i = 0; i < 100 && pidAlive(this.pid); i++) await new Promise((r) => setTimeout(r, 50));
    const rec = await readJson<ExitRecord>(bundlePaths(this.ctx.bundleDir).lastExit);
    this.setExit(rec ?? { at: new Date().toISOString(), reason: 'unknown', detail: 'the micro-VM host exited without a record', exitCode: null, signal: null, logTail: [] });
  }

  command(execute: string, args?: Record<string, unknown>, timeoutMs = COMMAND_TIMEOUT_MS): Promise<unknown> {
    if (this.sock.destroyed) return Promise.reject(new VmdeskError(ErrorCode.state, 'the micro-VM is not running'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new VmdeskError(ErrorCode.timeout, `micro-VM command "${execute}" timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.sock.write(JSON.stringify({ id, cmd: execute, args }) + '\n');
    });
  }

  async state(): Promise<VmState> {
    if (this.exitRecord) return this.exitRecord.reason === 'crashed' ? 'crashed' : 'stopped';
    try {
      const r = (await this.command('state')) as { state: HostState };
      return toVmState(r.state);
    } catch {
      return 'stopped';
    }
  }

  async pause(): Promise<void> {
    await this.command('pause');
  }

  async resume(): Promise<void> {
    await this.command('resume');
  }

  async reset(): Promise<void> {
    await this.command('reset');
  }

  async shutdown(timeoutMs: number): Promise<ExitRecord> {
    await this.command('shutdown', { timeoutMs }, 10_000).catch((e) => {
      if (!this.exitRecord) throw e;
    });
    return this.exited();
  }

  async kill(): Promise<ExitRecord> {
    try {
      await this.command('kill', {}, 10_000);
    } catch (e) {
      if (this.exitRecord) return this.exitRecord;
      // The host does not answer: end it by pid; its signal handler or our record covers the exit.
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      const record: ExitRecord = { at: new Date().toISOString(), reason: 'killed', detail: `micro-VM host did not answer (${(e as Error).message}); SIGKILL sent`, exitCode: null, signal: 'SIGKILL', logTail: [] };
      writeFileAtomic(bundlePaths(this.ctx.bundleDir).lastExit, JSON.stringify(record, null, 2));
      this.setExit(record);
    }
    return this.exited();
  }

  exited(): Promise<ExitRecord> {
    if (this.exitRecord) return Promise.resolve(this.exitRecord);
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }

  async openSerial(): Promise<Duplex> {
    return openControlStream(runtimePaths(this.ctx.runtimeDir).control, { id: 0, cmd: 'serial' }, 'serial console');
  }


  onEvent(fn: (name: string, data: unknown) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close(): void {
    this.closed = true;
    this.sock.end();
  }
}

export class MicrovmEngine implements Engine {
  readonly kind = 'microvm' as const;

  async check(ctx: EngineContext): Promise<AccelChoice> {
    const c = ctx.config;
    if (c.accel !== 'auto' && c.accel !== 'kvm') {
      throw new VmdeskError(ErrorCode.invalid, `the microvm engine runs on KVM only; accel "${c.accel}" needs the qemu engine`);
    }
    if (!c.directKernel) throw new VmdeskError(ErrorCode.invalid, 'the microvm engine boots a kernel directly: set a kernel (and initrd)');
    if (c.firmware === 'uefi') throw new VmdeskError(ErrorCode.invalid, 'the microvm engine has no firmware: use firmware "bios" (ignored) with a direct kernel');
    if (c.cdrom) throw new VmdeskError(ErrorCode.invalid, 'the microvm engine has no CD-ROM drive');
    for (const d of c.disks) {
      if (d.format !== 'raw') throw new VmdeskError(ErrorCode.invalid, `disk "${d.id}" is ${d.format}: the microvm engine reads raw images only (convert with qemu-img convert -O raw)`);
    }
    for (const p of [c.directKernel.kernel, c.directKernel.initrd]) {
      if (p && !existsSync(p)) throw new VmdeskError(ErrorCode.invalid, `${p} does not exist`);
    }
    const rt = runtimePaths(ctx.runtimeDir);
    if (Buffer.byteLength(rt.control) >= SOCKET_PATH_MAX) {
      throw new VmdeskError(ErrorCode.host, `runtime directory path is too long for a unix socket (${rt.control})`);
    }
    const report = await kvmReport();
    if (!report.available) throw new VmdeskError(ErrorCode.host, `KVM is not usable here: ${report.reason}`);
    if (report.class === 'slow') {
      return { requested: c.accel, used: 'kvm', reason: `built-in micro-VMM on KVM (slow: ${report.reason})` };
    }
    return { requested: c.accel, used: 'kvm', reason: 'built-in micro-VMM on KVM' };
  }

  async start(ctx: EngineContext, opts: { paused?: boolean; restoreFrom?: string } = {}): Promise<StartResult> {
    const accel = await this.check(ctx);
    if (await this.attach(ctx)) throw new VmdeskError(ErrorCode.state, `VM "${ctx.config.name}" is already running`);
    const rt = runtimePaths(ctx.runtimeDir);
    const bp = bundlePaths(ctx.bundleDir);
    mkdirSync(ctx.runtimeDir, { recursive: true, mode: 0o700 });
    chmodSync(ctx.runtimeDir, 0o700);
    mkdirSync(bp.logs, { recursive: true });
    rmSync(rt.startError, { force: true });
    if (opts.restoreFrom && !isAbsolute(opts.restoreFrom)) throw new VmdeskError(ErrorCode.invalid, 'restoreFrom must be an absolute path');
    const spec: LaunchSpec = { config: ctx.config, bundleDir: ctx.bundleDir, runtimeDir: ctx.runtimeDir, paused: !!opts.paused, accel, restoreFrom: opts.restoreFrom };
    writeFileAtomic(rt.launch, JSON.stringify(spec));

    const log = openSync(bp.hostLog, 'a');
    let child;
    try {
      // Detached in its own session: the guest outlives the CLI or app that started it.
      child = spawn(process.execPath, [...hostCommand(), rt.launch], { detached: true, stdio: ['ignore', log, log], env: process.env });
    } finally {
      closeSync(log);
    }
    const pid = child.pid;
    if (!pid) throw new VmdeskError(ErrorCode.engine, 'could not start the micro-VM host process');
    let exitedEarly: number | null | undefined;
    child.once('exit', (code) => (exitedEarly = code));
    child.unref();

    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (existsSync(rt.startError)) {
        const err = await readJson<{ code: ErrorCode; message: string; details?: string[] }>(rt.startError);
        throw new VmdeskError(err?.code ?? ErrorCode.engine, err?.message ?? 'the micro-VM failed to start', err?.details ?? []);
      }
      const rec = await readJson<HostRecord>(rt.record);
      if (rec && rec.pid === pid) {
        const sock = await connectUnixSocket(rt.control).catch(() => undefined);
        if (sock) return { handle: new MicrovmHandle(sock, pid, accel, ctx), accel };
      }
      if (exitedEarly !== undefined) {
        const tail = existsSync(bp.hostLog) ? readFileSync(bp.hostLog, 'utf8').split('\n').filter(Boolean).slice(-10) : [];
        throw new VmdeskError(ErrorCode.engine, `the micro-VM host exited during start (code ${exitedEarly})`, tail);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    throw new VmdeskError(ErrorCode.timeout, `the micro-VM did not start within ${START_TIMEOUT_MS / 1000} s`);
  }

  async attach(ctx: EngineContext): Promise<VmHandle | null> {
    const rt = runtimePaths(ctx.runtimeDir);
    const rec = await readJson<HostRecord>(rt.record);
    if (!rec || !pidAlive(rec.pid)) return null;
    const sock = await connectUnixSocket(rt.control).catch(() => undefined);
    if (!sock) return null;
    return new MicrovmHandle(sock, rec.pid, rec.accel, ctx);
  }
}
