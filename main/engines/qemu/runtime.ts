// A running QEMU as the daemon holds it: QEMU is the daemon's own child (or adopted from a daemon that died),
// spawned detached so it outlives the daemon. The daemon owns the only QMP connection and the serial socket;
// QEMU writes the serial log itself, so history survives any gap. How a guest ended is classified from QMP
// events, and from QEMU's exit status where this process is its parent, then written to logs/last-exit.json.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { AccelChoice, ExitRecord, PortForward, ResourceLimits, VmState } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { EngineContext, EngineUsage, LimitKind, NetPort, SerialPort, VmRuntime } from '../engine.js';
import { writeFileAtomicSync } from '../../platform/atomic.js';
import { connectUnixSocket, processRunning, processStartTime } from '../../platform/process.js';
import { bundleFiles, runtimeFiles } from './layout.js';
import { QmpClient, type QmpEvent } from './qmp.js';
import { passtForwardWarning, startPasst } from './passt.js';
import { tcpListening } from '../../platform/ports.js';
import { logTail, RUN_HEADER } from './records.js';
import { trace } from '../../platform/trace.js';
import { loadAddon } from '../../platform/native-addon.js';
import type { ActiveShare, GuestAgentAnswer } from '../engine.js';
import { agentReport } from './guest-agent.js';
import { agentSocket } from './guest-devices.js';
import { activeShares, readSharesRecord } from './shares.js';
import type { Progress } from '../engine.js';
import type { UsbPassthrough } from '../../api/schema.js';
import { endHelper, type HelperProcess } from './tpm.js';
import { describeSavedState, writeSavedState } from './savestate.js';
import { usbHotplug, usbUnplug } from './usb.js';

interface NativeSpawn {
  spawnDetached(file: string, argv: string[], outputFd: number): { pid: number; readyFd: number };
  waitChild(pid: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: string }>;
}

/** posix_spawn + a reaper thread from the native addon (Linux), unless VMDESK_NODE_SPAWN=1 or it is not built. */
function nativeSpawn(): NativeSpawn | undefined {
  if (process.env.VMDESK_NODE_SPAWN === '1') return undefined;
  const m = loadAddon().module as Partial<NativeSpawn> | undefined;
  return m && typeof m.spawnDetached === 'function' && typeof m.waitChild === 'function' ? (m as NativeSpawn) : undefined;
}

const LOG_TAIL_LINES = 20;
const START_TIMEOUT_MS = 90_000;

/** <runtimeDir>/qemu.json: what a later daemon needs to find and adopt this QEMU. */
export interface QemuRecord {
  vmId: string;
  pid: number;
  /** Kernel start time of the process: a reused pid is not our QEMU. */
  startTime: string;
  startedAt: string;
  accel: AccelChoice;
  warnings: string[];
  /** Size of logs/serial.log when this QEMU started: its output begins there. */
  serialLogOffset: number;
  /** Adapters whose QEMU socket has a passt (re-connected if the daemon restarts passt). */
  passt?: { path: string; adapters: { index: number; forwards: PortForward[] }[] };
  /** The passt processes serving this QEMU (pid, start time, adapter): ended with it, so its ports are free at once. */
  passtPids?: { pid: number; startTime: string; adapter?: number }[];
  /** Adapters on internal networks: QEMU listens on their sockets for the daemon's switch. */
  internal?: { index: number; network: string }[];
  /** The forwards in force now per nat/nat-host adapter index (changed live by setForwards). */
  forwards?: Record<string, PortForward[]>;
  /** Adapters whose link was set down (set_link), so an adopting daemon still knows. */
  linksDown?: number[];
  /** The VM's swtpm (config.tpm): ended with QEMU. */
  swtpm?: HelperProcess;
  /** Digest of the hardware on the command line (savestate.ts hardwareDigest), kept with a saved state. */
  hardware?: string;
}

export interface LaunchSpec {
  qemuPath: string;
  args: string[];
  accel: AccelChoice;
  paused: boolean;
  warnings: string[];
  passt?: QemuRecord['passt'];
  internal?: QemuRecord['internal'];
  forwards?: QemuRecord['forwards'];
  swtpm?: HelperProcess;
  hardware?: string;
}

/** save: the guest's state was written to the bundle (vmdesk suspend) and QEMU was told to quit. */
type StopIntent = 'shutdown' | 'kill' | 'save';

/** Keeps logs from growing forever: one previous generation is kept as <name>.1. */
function rotateLog(path: string, maxBytes = 2 * 1024 * 1024): void {
  try {
    if (statSync(path).size > maxBytes) renameSync(path, `${path}.1`);
  } catch {
    // absent: nothing to rotate
  }
}

function readRecord(ctx: EngineContext): QemuRecord | undefined {
  try {
    const r = JSON.parse(readFileSync(runtimeFiles(ctx.runtimeDir).record, 'utf8')) as QemuRecord;
    return r.vmId === ctx.config.id && Number.isSafeInteger(r.pid) && r.pid > 0 ? r : undefined;
  } catch {
    return undefined;
  }
}

function clearRuntimeFiles(ctx: EngineContext): void {
  const rt = runtimeFiles(ctx.runtimeDir);
  for (const p of [rt.qmp, rt.serial, rt.vnc, rt.record, rt.net(0), rt.net(1), rt.net(2), rt.net(3)]) rmSync(p, { force: true });
}

async function retry<T>(what: string, fn: () => Promise<T>, alive: () => boolean, deadline: number): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      // QEMU binds a socket a moment before it listens: refused/absent means "not yet" while it lives.
      const retryable = /ECONNREFUSED|ENOENT/.test((e as Error).message);
      if (!retryable || !alive() || Date.now() > deadline) throw new VmdeskError(ErrorCode.engine, `${what}: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 15));
    }
  }
}

export class QemuRuntime extends EventEmitter implements VmRuntime {
  state: VmState;
  readonly vncSocket: string;
  readonly serial: SerialPort;
  qmp: QmpClient | undefined;
  private serialSock: Socket | undefined;
  private readonly serialListeners = new Set<(chunk: Buffer) => void>();
  private exitRecord: ExitRecord | undefined;
  private settle!: (r: ExitRecord) => void;
  readonly exited: Promise<ExitRecord>;
  private stopIntent: StopIntent | undefined;
  private forcedOff: { afterMs: number } | undefined;
  private shutdownEvent: { guest: boolean; reason: string } | undefined;
  private detached = false;
  private child: ChildProcess | undefined;
  /** This process is QEMU's parent: its exit status will come (not read from events alone). */
  private parent = false;
  private readonly files: ReturnType<typeof bundleFiles>;
  private readonly rt: ReturnType<typeof runtimeFiles>;

  private constructor(
    private readonly ctx: EngineContext,
    private readonly record: QemuRecord,
    readonly adopted: boolean,
  ) {
    super();
    this.files = bundleFiles(ctx.bundleDir);
    this.rt = runtimeFiles(ctx.runtimeDir);
    this.vncSocket = this.rt.vnc;
    this.state = 'starting';
    this.exited = new Promise((r) => (this.settle = r));
    const listeners = this.serialListeners;
    const self = this;
    this.serial = {
      logFile: this.files.serialLog,
      logStart: record.serialLogOffset ?? 0,
      write(data: Buffer) {
        return self.serialSock ? self.serialSock.write(data) : true;
      },
      onceDrain(fn: () => void) {
        if (self.serialSock && self.serialSock.writableNeedDrain) self.serialSock.once('drain', fn);
        else queueMicrotask(fn);
      },
      onData(fn) {
        listeners.add(fn);
        return () => listeners.delete(fn);
      },
    };
  }

  get pid(): number {
    return this.record.pid;
  }

  get accel(): AccelChoice {
    return this.record.accel;
  }

  get startedAt(): string {
    return this.record.startedAt;
  }

  get warnings(): readonly string[] {
    return this.record.warnings;
  }

  /** Spawns QEMU (detached: it survives the daemon), connects passt, serial and QMP; resolves once it runs. */
  static async launch(ctx: EngineContext, spec: LaunchSpec): Promise<QemuRuntime> {
    const files = bundleFiles(ctx.bundleDir);
    mkdirSync(ctx.runtimeDir, { recursive: true, mode: 0o700 });
    mkdirSync(files.logs, { recursive: true, mode: 0o700 });
    for (const log of [files.qemuLog, files.serialLog]) rotateLog(log);
    clearRuntimeFiles(ctx);
    let serialLogOffset = 0;
    try {
      serialLogOffset = statSync(files.serialLog).size;
    } catch {
      // first run: no log yet
    }
    const logFd = openSync(files.qemuLog, 'a');
    let pid: number | undefined;
    let child: ChildProcess | undefined;
    const early: { code?: number | null; signal?: NodeJS.Signals | null; error?: string } = {};
    let gone = false;
    let exitWatch: Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: string }> | undefined;
    try {
      writeSync(logFd, `${RUN_HEADER}${new Date().toISOString()} starting ${spec.qemuPath} ${spec.args.map((a) => JSON.stringify(a)).join(' ')}\n`);
      // Its own session (no terminal signals from the daemon's), output to its log file (a pipe to us would
      // break when we go), no pdeathsig: a guest must not die with the daemon. posix_spawn through the addon
      // where it is built: Node's spawn forks the whole daemon first, which costs milliseconds per start.
      const fast = nativeSpawn();
      if (fast) {
        const r = fast.spawnDetached(spec.qemuPath, spec.args, logFd);
        closeSync(r.readyFd);
        pid = r.pid;
        exitWatch = fast.waitChild(pid);
      } else {
        child = spawn(spec.qemuPath, spec.args, { detached: true, stdio: ['ignore', logFd, logFd], cwd: ctx.bundleDir });
        child.once('error', (e) => {
          early.error = e.message;
          gone = true;
        });
        child.once('exit', (code, signal) => {
          early.code = code;
          early.signal = signal;
          gone = true;
        });
        child.unref();
        pid = child.pid;
      }
      trace('qemu-spawned');
    } catch (e) {
      throw new VmdeskError(ErrorCode.host, `QEMU could not be started: ${(e as Error).message}`);
    } finally {
      closeSync(logFd);
    }
    if (!pid) {
      await new Promise((r) => setImmediate(r));
      throw new VmdeskError(ErrorCode.host, `QEMU could not be started: ${early.error ?? 'no process'}`);
    }
    const record: QemuRecord = {
      vmId: ctx.config.id,
      pid,
      startTime: processStartTime(pid) ?? '',
      startedAt: new Date().toISOString(),
      accel: spec.accel,
      warnings: spec.warnings,
      serialLogOffset,
      ...(spec.passt ? { passt: spec.passt } : {}),
      ...(spec.internal?.length ? { internal: spec.internal } : {}),
      ...(spec.forwards ? { forwards: spec.forwards } : {}),
      ...(spec.swtpm ? { swtpm: spec.swtpm } : {}),
      ...(spec.hardware ? { hardware: spec.hardware } : {}),
    };
    const runtime = new QemuRuntime(ctx, record, false);
    runtime.parent = true;
    if (exitWatch) {
      void exitWatch.then((r) => runtime.onExit(r.code, r.signal, r.error));
    } else if (child) {
      runtime.child = child;
      child.removeAllListeners('exit');
      child.on('exit', (code, signal) => runtime.onExit(code, signal));
      if (gone) runtime.onExit(early.code ?? null, early.signal ?? null, early.error);
    }
    writeFileAtomicSync(runtime.rt.record, JSON.stringify(record, null, 2) + '\n');
    const alive = () => !runtime.exitRecord;
    try {
      await runtime.attach(Date.now() + START_TIMEOUT_MS, alive);
      runtime.setState(spec.paused ? 'paused' : 'running');
    } catch (e) {
      // QEMU's own complaint ("-device ...: reason") says more than our socket error.
      if (alive()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      const rec = await runtime.exited;
      // A network helper that failed says so itself (QEMU only died of the kill that followed).
      if (e instanceof NetworkStartError) throw new VmdeskError(ErrorCode.engine, `the VM could not start: ${e.message}`);
      throw new VmdeskError(ErrorCode.engine, `QEMU failed to start: ${rec.detail ?? (e as Error).message}`, rec.logTail);
    }
    return runtime;
  }

  /** Finds a QEMU a previous daemon started; null when its record is absent or the process is gone. */
  static async adopt(ctx: EngineContext): Promise<QemuRuntime | null> {
    const record = readRecord(ctx);
    if (!record || !processRunning(record.pid, record.startTime || undefined)) return null;
    const runtime = new QemuRuntime(ctx, record, true);
    const alive = () => processRunning(record.pid, record.startTime || undefined);
    try {
      await runtime.attach(Date.now() + 10_000, alive);
    } catch {
      runtime.detach();
      return null;
    }
    // QEMU's monitor does not answer during a snapshot save (seconds for a big guest): adopt it now as
    // running and correct the state when it answers; QMP events keep it current from here on.
    const status = runtime.qmp!.execute<{ status: string; running: boolean }>('query-status', undefined, 10 * 60_000);
    const early = await Promise.race([status.then((s) => s, () => undefined), new Promise<undefined>((r) => setTimeout(() => r(undefined), 2000))]);
    const apply = (s: { status: string; running: boolean } | undefined) => {
      if (s) runtime.setState(s.status === 'shutdown' ? 'stopping' : s.running ? 'running' : 'paused');
    };
    if (early) {
      apply(early);
      // A daemon that died in the middle of vmdesk suspend: QEMU waits after the migration. With the state
      // complete on disk it only has to quit; without (cut short before its metadata) the guest runs on.
      if (early.status === 'postmigrate') {
        if (describeSavedState(ctx)) void runtime.quitAfterSave().catch(() => undefined);
        else void runtime.resume().catch(() => undefined);
      }
    } else {
      runtime.setState('running');
      void status.then(apply, () => undefined);
    }
    return runtime;
  }

  /** A record whose QEMU ended while no daemon watched: one exit record, and the runtime files cleared. */
  static async reapOrphan(ctx: EngineContext): Promise<ExitRecord | undefined> {
    const record = readRecord(ctx);
    if (!record || processRunning(record.pid, record.startTime || undefined)) return undefined;
    const files = bundleFiles(ctx.bundleDir);
    const exit: ExitRecord = {
      at: new Date().toISOString(),
      reason: 'unknown',
      detail: 'QEMU stopped while no VMDesk daemon was watching it (see logs/qemu.log)',
      exitCode: null,
      signal: null,
      logTail: logTail(files.qemuLog, LOG_TAIL_LINES, true),
    };
    writeFileAtomicSync(files.lastExit, JSON.stringify(exit, null, 2) + '\n');
    clearRuntimeFiles(ctx);
    // --terminate ends swtpm with QEMU's connection, and passt quits when QEMU's socket closes, but neither at
    // once: one still there goes now, so the VM's forwarded host ports are free when this returns.
    await Promise.allSettled([endHelper(record.swtpm), ...(record.passtPids ?? []).map((p) => endHelper(p, 250))]);
    return exit;
  }

  /** Connects passt (fresh start only), serial and QMP. */
  private async attach(deadline: number, alive: () => boolean): Promise<void> {
    if (this.record.passt && !this.adopted) await this.startNetwork(alive, deadline);
    await retry('serial console socket', () => this.connectSerial(), alive, deadline);
    const qmp = await retry('QMP socket', () => QmpClient.connect(this.rt.qmp, { timeoutMs: Math.max(1000, deadline - Date.now()) }), alive, deadline);
    this.qmp = qmp;
    qmp.on('event', (ev: QmpEvent) => this.onQmpEvent(ev));
    qmp.on('close', () => this.onQmpClose());
    if (!alive()) throw new VmdeskError(ErrorCode.engine, 'QEMU exited during start-up');
  }

  /** One passt per "nat" adapter, connected to QEMU's netdev socket; each quits when QEMU does. */
  private async startNetwork(alive: () => boolean, deadline: number): Promise<void> {
    const spec = this.record.passt!;
    const log = openSync(join(this.files.logs, 'passt.log'), 'a');
    try {
      const pids: NonNullable<QemuRecord['passtPids']> = [];
      for (const a of spec.adapters) {
        const child = await startPasst({ passt: spec.path, socket: this.rt.net(a.index), forwards: a.forwards, log, alive, timeoutMs: Math.max(1000, deadline - Date.now()) });
        child.unref();
        if (child.pid) pids.push({ pid: child.pid, startTime: processStartTime(child.pid) ?? '', adapter: a.index });
        // A passt that quits at once (refused arguments, a host port taken since the check) would leave the
        // guest running with a dead network card: the start fails instead, saying where to look.
        await passtReady(child, a.forwards, a.index, 'at start', false);
      }
      this.record.passtPids = pids;
      writeFileAtomicSync(this.rt.record, JSON.stringify(this.record, null, 2) + '\n');
    } finally {
      closeSync(log);
    }
  }

  private async connectSerial(): Promise<void> {
    const sock = await connectUnixSocket(this.rt.serial);
    this.serialSock = sock;
    sock.on('data', (chunk: Buffer) => {
      for (const fn of this.serialListeners) fn(chunk);
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      if (this.serialSock === sock) this.serialSock = undefined;
    });
  }

  private onQmpEvent(ev: QmpEvent): void {
    if (ev.event === 'SHUTDOWN') {
      const d = ev.data as { guest?: boolean; reason?: string };
      this.shutdownEvent = { guest: d.guest === true, reason: d.reason ?? 'unknown' };
      this.setState('stopping');
    } else if (ev.event === 'STOP' && this.state === 'running') {
      this.setState('paused');
    } else if (ev.event === 'RESUME' && (this.state === 'paused' || this.state === 'starting')) {
      this.setState('running');
    }
    this.emit('qmp-event', ev);
  }

  /** QMP closes when QEMU exits; an adopted QEMU's exit status is not ours to read: wait for it to be gone. */
  private onQmpClose(): void {
    if (this.detached || this.exitRecord || this.parent) return;
    void (async () => {
      for (let i = 0; i < 200 && processRunning(this.record.pid, this.record.startTime || undefined); i++) await new Promise((r) => setTimeout(r, 50));
      this.onExit(null, null);
    })();
  }

  private setState(state: VmState): void {
    if (this.state === state || this.exitRecord) return;
    this.state = state;
    this.emit('state', state);
  }

  onState(fn: (state: VmState) => void): () => void {
    this.on('state', fn);
    return () => this.off('state', fn);
  }

  private requireQmp(): QmpClient {
    if (this.exitRecord) throw new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" has stopped`);
    if (!this.qmp || this.qmp.isClosed) throw new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" is not reachable (its QMP connection is closed)`);
    return this.qmp;
  }

  /** Raw QMP for this engine's own modules (snapshots): not part of VmRuntime. */
  command<T = unknown>(execute: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T> {
    return this.requireQmp().execute<T>(execute, args, timeoutMs);
  }

  async pause(): Promise<void> {
    await this.command('stop');
    this.setState('paused');
  }

  async resume(): Promise<void> {
    await this.command('cont');
    this.setState('running');
  }

  async reset(): Promise<void> {
    await this.command('system_reset');
  }

  /** The CD drive (qdev id cdrom0, only there when the VM started with a disc): eject, or eject and insert. */
  async changeMedium(file: string | null): Promise<void> {
    try {
      // force: a guest that locked the tray (a mounted disc) would otherwise keep it closed.
      await this.command('eject', { id: 'cdrom0', force: true }, 5000);
      if (file !== null) await this.command('blockdev-change-medium', { id: 'cdrom0', filename: file, format: 'raw', 'read-only-mode': 'read-only' }, 10_000);
    } catch (e) {
      const msg = (e as Error).message;
      if (/cdrom0' not found/.test(msg)) throw new VmdeskError(ErrorCode.invalid, `"${this.ctx.config.name}" started without a CD drive; shut it down, then insert the disc`);
      throw new VmdeskError(ErrorCode.engine, `QEMU could not change the disc: ${msg}`);
    }
  }

  private requireAttached(): void {
    if (this.detached) throw new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" is watched by another VMDesk daemon now`);
  }

  async shutdown(timeoutMs: number): Promise<ExitRecord> {
    if (this.exitRecord) return this.exitRecord;
    this.requireAttached();
    if (this.stopIntent) return this.exited;
    this.stopIntent = 'shutdown';
    const ms = Number.isFinite(timeoutMs) && timeoutMs >= 0 ? timeoutMs : 60_000;
    const force = setTimeout(() => {
      this.forcedOff = { afterMs: ms };
      this.signal('SIGKILL');
    }, ms);
    void this.exited.finally(() => clearTimeout(force));
    this.setState('stopping');
    try {
      // A paused guest cannot see the power button.
      const status = await this.command<{ running: boolean }>('query-status', undefined, 5000);
      if (!status.running) await this.command('cont', undefined, 5000);
      await this.command('system_powerdown', undefined, 5000);
    } catch {
      // QEMU not answering: the timeout forces it off.
    }
    return this.exited;
  }

  /**
   * Save state (savestate.ts): the guest is paused and its state written to the bundle, then QEMU quits. On
   * failure nothing is kept and a guest that was running runs on.
   */
  async saveState(progress: Progress): Promise<ExitRecord> {
    if (this.exitRecord) throw new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" has stopped`);
    this.requireAttached();
    if (this.stopIntent) throw new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" is already stopping`);
    const v = this.qmp?.greeting?.QMP.version.qemu;
    await writeSavedState(this, this.ctx, { hardware: this.record.hardware, qemuVersion: v ? `${v.major}.${v.minor}.${v.micro}` : undefined }, progress);
    return this.quitAfterSave();
  }

  /** The state is on disk: QEMU goes, and the exit says 'saved' (also for an adopted QEMU whose daemon died right there). */
  async quitAfterSave(): Promise<ExitRecord> {
    this.stopIntent = 'save';
    this.setState('stopping');
    // QEMU answers quit by closing the monitor, which may read as an error here.
    await this.command('quit', undefined, 10_000).catch(() => undefined);
    const forced = setTimeout(() => this.signal('SIGKILL'), 15_000);
    void this.exited.finally(() => clearTimeout(forced));
    return this.exited;
  }

  /** Hot-plugs a host USB device (usb.ts). */
  async usbAttach(device: UsbPassthrough): Promise<void> {
    this.requireAttached();
    await usbHotplug(this, device);
  }

  async usbDetach(device: UsbPassthrough): Promise<void> {
    this.requireAttached();
    await usbUnplug(this, device);
  }

  async kill(): Promise<ExitRecord> {
    if (this.exitRecord) return this.exitRecord;
    this.requireAttached();
    if (this.stopIntent === 'shutdown') this.forcedOff = { afterMs: 0 };
    else this.stopIntent = 'kill';
    this.setState('stopping');
    this.signal('SIGKILL');
    return this.exited;
  }

  private signal(sig: NodeJS.Signals): void {
    try {
      process.kill(this.record.pid, sig);
    } catch {
      /* already gone */
    }
  }

  async screenshot(): Promise<Buffer> {
    const file = join(this.ctx.runtimeDir, `screen-${process.pid}-${Date.now()}.png`);
    await this.command('screendump', { filename: file, format: 'png' }, 10_000);
    try {
      return readFileSync(file);
    } finally {
      rmSync(file, { force: true });
    }
  }

  // ---- networks and limits while the guest runs (issue 11) ------------------------------------------------

  get netPorts(): NetPort[] {
    return (this.record.internal ?? []).map((a) => ({ adapter: a.index, network: a.network, socket: this.rt.net(a.index) }));
  }

  linksDown(): number[] {
    return [...(this.record.linksDown ?? [])];
  }

  private saveRecord(): void {
    if (this.exitRecord || this.detached) return;
    writeFileAtomicSync(this.rt.record, JSON.stringify(this.record, null, 2) + '\n');
  }

  /** The forwards in force on a nat/nat-host adapter (from the record; a record of an older daemon: the config). */
  private currentForwards(adapter: number): PortForward[] {
    return this.record.forwards?.[String(adapter)] ?? this.ctx.config.network[adapter]?.forwards ?? [];
  }

  /**
   * Replaces an adapter's forwards. passt: a new passt with the new set takes over QEMU's socket (QEMU accepts
   * the next client once the old one has gone; the old passt must go first, as it holds the ports that stay).
   * Open connections through that adapter's NAT are reset. QEMU's user network: hostfwd_remove/hostfwd_add.
   */
  async setForwards(adapter: number, forwards: PortForward[]): Promise<string[]> {
    this.requireAttached();
    const mode = this.ctx.config.network[adapter]?.mode;
    if (mode !== 'nat' && mode !== 'nat-host') throw new VmdeskError(ErrorCode.invalid, `network adapter ${adapter} of "${this.ctx.config.name}" is not a nat or nat-host adapter`);
    const before = this.currentForwards(adapter);
    const viaPasst = this.record.passt?.adapters.find((a) => a.index === adapter);
    if (viaPasst) {
      await this.replacePasst(adapter, forwards);
      viaPasst.forwards = forwards;
    } else {
      await this.hostfwd(adapter, before, forwards);
    }
    this.record.forwards = { ...(this.record.forwards ?? {}), [String(adapter)]: forwards };
    this.saveRecord();
    // The same warning a start gives for these forwards (an old passt and a service that speaks first).
    const warning = viaPasst ? passtForwardWarning(this.record.passt!.path, forwards) : undefined;
    return warning ? [warning] : [];
  }

  private async replacePasst(adapter: number, forwards: PortForward[]): Promise<void> {
    const spec = this.record.passt!;
    const all = this.record.passtPids ?? [];
    // Records of an older daemon list the pids in adapter order without the index.
    const old = all.find((p) => p.adapter === adapter) ?? (all.every((p) => p.adapter === undefined) ? all[spec.adapters.findIndex((a) => a.index === adapter)] : undefined);
    if (old && processRunning(old.pid, old.startTime || undefined)) {
      try {
        process.kill(old.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      for (let i = 0; i < 120 && processRunning(old.pid, old.startTime || undefined); i++) {
        if (i === 80) {
          try {
            process.kill(old.pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    const log = openSync(join(this.files.logs, 'passt.log'), 'a');
    let child: ChildProcess;
    try {
      child = await startPasst({ passt: spec.path, socket: this.rt.net(adapter), forwards, log, alive: () => !this.exitRecord, timeoutMs: 10_000 });
      child.unref();
    } finally {
      closeSync(log);
    }
    const entry = child.pid ? { pid: child.pid, startTime: processStartTime(child.pid) ?? '', adapter } : undefined;
    this.record.passtPids = [...all.filter((p) => p !== old), ...(entry ? [entry] : [])];
    this.saveRecord();
    // A new passt knows the guest's MAC address only from a frame the guest sends: until then a connection
    // to a forward goes nowhere. Ask the card to announce itself (virtio-net makes the guest send gratuitous
    // ARP; other models send RARP from QEMU, which passt ignores, so there the guest's next packet teaches it).
    await this.command('announce-self', { initial: 50, max: 550, rounds: 3, step: 100, interfaces: [`nic${adapter}`] }, 5000).catch(() => undefined);
    await passtReady(child, forwards, adapter, 'when restarted with the new forwards', true);
  }

  private async hostfwd(adapter: number, before: PortForward[], after: PortForward[]): Promise<void> {
    const key = (f: PortForward) => `${f.protocol}:${f.hostPort}:${f.guestPort}`;
    const keep = new Set(after.map(key));
    const had = new Set(before.map(key));
    const hmp = async (line: string) => {
      const out = (await this.command<string>('human-monitor-command', { 'command-line': line }, 5000)).trim();
      // HMP answers errors as text: an empty answer is success, as is hostfwd_remove's "removed".
      if (out && !/removed/i.test(out)) throw new VmdeskError(ErrorCode.engine, `QEMU refused "${line}": ${out.split('\n')[0]}`);
    };
    for (const f of before) if (!keep.has(key(f))) await hmp(`hostfwd_remove net${adapter} ${f.protocol}:127.0.0.1:${f.hostPort}`);
    for (const f of after) if (!had.has(key(f))) await hmp(`hostfwd_add net${adapter} ${f.protocol}:127.0.0.1:${f.hostPort}-:${f.guestPort}`);
  }

  async setLink(adapter: number, up: boolean): Promise<void> {
    this.requireAttached();
    const n = this.ctx.config.network[adapter];
    if (!n || n.mode === 'none') throw new VmdeskError(ErrorCode.invalid, `"${this.ctx.config.name}" has no network card ${adapter}`);
    await this.command('set_link', { name: `nic${adapter}`, up }, 5000);
    const down = new Set(this.record.linksDown ?? []);
    if (up) down.delete(adapter);
    else down.add(adapter);
    this.record.linksDown = [...down].sort();
    this.saveRecord();
  }

  /** Memory target (balloon) and disk I/O limits (one throttle group over every disk), for the kinds given. */
  async applyLimits(limits: ResourceLimits, kinds: readonly LimitKind[]): Promise<void> {
    this.requireAttached();
    const cfg = this.ctx.config;
    if (kinds.includes('memoryTarget')) {
      if (!cfg.balloon) {
        if (limits.memoryTargetMiB !== undefined) {
          throw new VmdeskError(ErrorCode.state, `"${cfg.name}" runs without a memory balloon (it was made before VMDesk had one): set --memory-target while it is stopped, which adds the balloon for its next start`);
        }
      } else {
        await this.command('balloon', { value: (limits.memoryTargetMiB ?? cfg.memoryMiB) * 1024 * 1024 }, 5000);
      }
    }
    if (kinds.includes('diskIo')) {
      const iops = limits.diskIops ?? 0;
      const bps = limits.diskBytesPerSec ?? 0;
      // QEMU takes iops_size as the size one operation counts for: without it a guest could get past an IOPS
      // limit with huge requests; the bandwidth limit bounds those anyway when set.
      // The throttle sits on the device's block backend: for virtio-blk that is the inner virtio device
      // (/machine/peripheral/vd-X/virtio-backend), which query-block names.
      const blocks = await this.command<{ qdev?: string }[]>('query-block', undefined, 5000);
      for (const d of cfg.disks) {
        const qdev = blocks.map((b) => b.qdev ?? '').find((q) => q === `vd-${d.id}` || new RegExp(`/vd-${d.id}(/|$)`).test(q));
        if (!qdev) throw new VmdeskError(ErrorCode.engine, `disk ${d.id} has no block device in QEMU to throttle`);
        await this.command('block_set_io_throttle', { id: qdev, bps, bps_rd: 0, bps_wr: 0, iops, iops_rd: 0, iops_wr: 0, group: 'vmdesk-io' }, 5000);
      }
    }
  }

  /** Disk counters (query-blockstats) and the balloon's actual size (query-balloon); /proc is the core's. */
  async usage(): Promise<EngineUsage> {
    const notes: string[] = [];
    const cfg = this.ctx.config;
    const out: EngineUsage = { notes };
    try {
      const stats = await this.command<{ qdev?: string; device?: string; stats: { rd_bytes: number; wr_bytes: number; rd_operations: number; wr_operations: number } }[]>('query-blockstats', undefined, 1500);
      const disk = { readBytes: 0, writeBytes: 0, readOps: 0, writeOps: 0 };
      for (const b of stats) {
        // Guest disks and the CD-ROM (not the firmware's flash).
        if (!/\/(vd-[a-z0-9-]+|cdrom0)(\/|$)/.test(b.qdev ?? '')) continue;
        disk.readBytes += b.stats.rd_bytes;
        disk.writeBytes += b.stats.wr_bytes;
        disk.readOps += b.stats.rd_operations;
        disk.writeOps += b.stats.wr_operations;
      }
      out.disk = disk;
    } catch (e) {
      notes.push(`disk counters: ${busyOr(e)}`);
    }
    if (!cfg.balloon) {
      out.memoryGuestBytes = cfg.memoryMiB * 1024 * 1024;
      notes.push('guest memory: the configured size (this VM has no balloon)');
    } else {
      try {
        out.memoryGuestBytes = (await this.command<{ actual: number }>('query-balloon', undefined, 1500)).actual;
      } catch (e) {
        notes.push(`guest memory: ${busyOr(e)}`);
      }
    }
    return out;
  }

  // ---- guest integration (issue 12): guest-agent.ts and shares.ts do the work ---------------------------------

  /** The guest agent's report (host name, addresses), or why there is none. */
  async guestAgent(): Promise<GuestAgentAnswer> {
    this.requireAttached();
    if (!this.ctx.config.guestAgent) return { ok: false, reason: `"${this.ctx.config.name}" has no guest agent channel (vmdesk set NAME --guest-agent on, then restart it)` };
    return agentReport(agentSocket(this.ctx.runtimeDir), (c, a, t) => this.command(c, a, t));
  }

  activeShares(): ActiveShare[] {
    return activeShares(readSharesRecord(this.ctx.runtimeDir, this.ctx.config.id));
  }

  detach(): void {
    if (this.exitRecord) return;
    this.detached = true;
    this.qmp?.close();
    this.serialSock?.destroy();
    this.child?.removeAllListeners('exit');
  }

  private classify(code: number | null, signal: NodeJS.Signals | null, spawnError?: string): Pick<ExitRecord, 'reason' | 'detail'> {
    const how = signal ? `signal ${signal}` : code === null ? 'exit status unknown' : `exit code ${code}`;
    if (spawnError) return { reason: 'crashed', detail: `QEMU could not be started: ${spawnError}` };
    if (this.state === 'starting' && !this.stopIntent) {
      const complaint = logTail(this.files.qemuLog, LOG_TAIL_LINES, true)
        .filter((l) => /qemu-system[^:]*: /.test(l))
        .at(-1)
        ?.replace(/^\S+Z qemu-system[^:]*: /, '')
        .replace(/^qemu-system[^:]*: /, '');
      return { reason: 'crashed', detail: complaint ? `${complaint} (${how})` : `QEMU exited during start-up (${how})` };
    }
    if (this.stopIntent === 'kill') return { reason: 'killed', detail: 'forced off' };
    if (this.stopIntent === 'save') return { reason: 'saved', detail: "the guest's memory and device state were saved to disk; the next start resumes it" };
    if (this.stopIntent === 'shutdown') {
      if (this.forcedOff) return { reason: 'killed', detail: `the guest did not power off within ${this.forcedOff.afterMs} ms; forced off` };
      return { reason: 'shutdown', detail: this.shutdownEvent ? `ACPI power-down; guest shut down (${this.shutdownEvent.reason})` : `QEMU exited (${how})` };
    }
    if (this.shutdownEvent?.reason === 'guest-panic') return { reason: 'crashed', detail: 'the guest kernel panicked' };
    if (this.shutdownEvent?.guest) return { reason: 'guest-poweroff', detail: `the guest powered off (${this.shutdownEvent.reason})` };
    if (this.shutdownEvent?.reason === 'host-signal') return { reason: 'host-signal', detail: `QEMU stopped by a host signal (${how})` };
    if (this.shutdownEvent) return { reason: 'shutdown', detail: `stopped by the host (${this.shutdownEvent.reason})` };
    if (signal || (code !== null && code !== 0)) return { reason: 'crashed', detail: `QEMU died unexpectedly (${how})` };
    if (code === null) return { reason: 'crashed', detail: 'QEMU exited without telling why (its exit status was not ours to read)' };
    return { reason: 'unknown', detail: 'QEMU exited without saying why' };
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null, spawnError?: string): void {
    if (this.exitRecord || this.detached) return;
    const { reason, detail } = this.classify(code, signal, spawnError);
    const at = new Date().toISOString();
    try {
      const fd = openSync(this.files.qemuLog, 'a');
      writeSync(fd, `${RUN_HEADER}${at} QEMU exited (${signal ? `signal ${signal}` : `exit code ${code}`}): ${reason}: ${detail}\n`);
      closeSync(fd);
    } catch {
      // the log is a courtesy; the record below is what counts
    }
    const record: ExitRecord = { at, reason, detail, exitCode: code, signal, logTail: logTail(this.files.qemuLog, LOG_TAIL_LINES, true) };
    this.exitRecord = record;
    try {
      writeFileAtomicSync(this.files.lastExit, JSON.stringify(record, null, 2) + '\n');
    } catch {
      /* a full disk: the daemon still reports it */
    }
    clearRuntimeFiles(this.ctx);
    this.qmp?.close();
    this.serialSock?.destroy();
    this.state = reason === 'crashed' ? 'crashed' : 'stopped';
    void Promise.allSettled([this.endPasst(), endHelper(this.record.swtpm)]).finally(() => {
      this.emit('state', this.state);
      this.settle(record);
    });
  }

  /** passt quits when QEMU's socket closes; make sure it has, so the forwarded ports are free at once. */
  private async endPasst(): Promise<void> {
    const pids = (this.record.passtPids ?? []).filter((p) => processRunning(p.pid, p.startTime || undefined));
    if (!pids.length) return;
    for (let i = 0; i < 20 && pids.some((p) => processRunning(p.pid, p.startTime || undefined)); i++) await new Promise((r) => setTimeout(r, 25));
    for (const p of pids) {
      if (!processRunning(p.pid, p.startTime || undefined)) continue;
      try {
        process.kill(p.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
    for (let i = 0; i < 40 && pids.some((p) => processRunning(p.pid, p.startTime || undefined)); i++) await new Promise((r) => setTimeout(r, 25));
  }
}

function busyOr(e: unknown): string {
  const msg = (e as Error).message;
  return /timed out/.test(msg) ? "QEMU's monitor did not answer in time (busy saving a snapshot?)" : msg;
}

/** True when a record says a QEMU of this VM may still run (used before starting a second one). */
export function recordedQemuRuns(ctx: EngineContext): boolean {
  const r = readRecord(ctx);
  return !!r && processRunning(r.pid, r.startTime || undefined);
}

/** A network helper (passt) that failed while the guest started or its forwards changed. */
class NetworkStartError extends VmdeskError {}

/**
 * passt binds its forwards as it starts: waits (up to 3 s) until it holds every TCP one, and at least one
 * moment. Throws when it exited meanwhile, and, if `strict`, when a port is still not taken (a fresh start
 * only needs it alive: its ports were checked free just before, and a loaded machine may bind them late).
 */
async function passtReady(child: ChildProcess, forwards: PortForward[], adapter: number, when: string, strict: boolean): Promise<void> {
  const tcp = forwards.filter((f) => f.protocol === 'tcp');
  const ended = () => child.exitCode !== null || child.signalCode !== null;
  for (let i = 0; i < 200 && (i === 0 || tcp.some((f) => tcpListening(f.hostPort) === false)); i++) {
    if (ended()) break;
    await new Promise((r) => setTimeout(r, 15));
  }
  if (ended()) throw new NetworkStartError(ErrorCode.engine, `passt for network adapter ${adapter} exited (${child.signalCode ? `signal ${child.signalCode}` : `code ${child.exitCode}`}) ${when}; see logs/passt.log`);
  const missing = tcp.filter((f) => tcpListening(f.hostPort) === false);
  if (strict && missing.length) throw new VmdeskError(ErrorCode.engine, `passt did not take host port${missing.length > 1 ? 's' : ''} ${missing.map((f) => f.hostPort).join(', ')}; see logs/passt.log`);
}
