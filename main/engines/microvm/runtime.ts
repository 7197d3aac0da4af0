// A running micro-VM as the daemon holds it: one vmdesk-microvm process (no Node in it), the daemon's own
// detached child or adopted from a daemon that went away. The executable writes the serial log and the exit
// record itself, so nothing is lost while no daemon watches; the daemon adds what only a parent knows (the
// exit status) and what only it can do when the executable no longer answers (SIGKILL by pid).
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { AccelChoice, ExitRecord, VmState } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { EngineContext, SerialPort, VmRuntime } from '../engine.js';
import { writeFileAtomicSync } from '../../platform/atomic.js';
import { connectUnixSocket, processRunning } from '../../platform/process.js';
import { diskFile, microvmArgv } from './argv.js';
import { ControlClient, isExitRecord, type MicrovmState } from './control.js';
import { microvmBundleFiles, microvmExecutable, microvmRuntimeFiles } from './layout.js';
import { nativeSpawn, type ChildExit } from './native.js';

const LOG_TAIL_LINES = 20;
/** Opens each run's section of logs/microvm.log. */
const RUN_HEADER = '=== ';

/** How long the runtime waits for things. Tests shorten them; nothing else should change them. */
export const microvmTimeouts = {
  /** From spawn to "running" on the ready pipe (restoring a large snapshot included). */
  startMs: 60_000,
  /** For an answer to pause, resume, state, info. */
  replyMs: 30_000,
  /** For reset and snapshot-load, which build a whole new VM. */
  rebuildMs: 120_000,
  /** For snapshot-save, which writes guest memory. */
  snapshotSaveMs: 30 * 60_000,
  /** For an answer to kill before the process is ended by pid instead. */
  killReplyMs: 3_000,
  /** After an answered kill, for the process to be gone (it ends stuck vCPUs itself after 5 s). */
  stopGraceMs: 8_000,
  /** Beyond a shutdown's own timeout, before the daemon forces it. */
  shutdownSlackMs: 10_000,
  /** For the process to be gone once its sockets closed (adopted: no exit status to wait for). */
  goneMs: 10_000,
  /** For the greeting on a new control connection. */
  helloMs: 5_000,
};

/** <runtimeDir>/microvm.json as vmdesk-microvm writes it once it runs. */
export interface MicrovmRecord {
  protocol: number;
  vmId: string;
  pid: number;
  /** Kernel start time of the process: a reused pid is not our executable. */
  startTime: string;
  startedAt: string;
  accel: string;
  accelReason: string;
  control: string;
  serial: string;
  /** Size of serial.log when this run began: its output starts there. */
  serialLogStart?: number;
}

/** The runtime record, when it is one of this VM's (id and socket paths as this daemon would use them). */
export function readMicrovmRecord(ctx: EngineContext): MicrovmRecord | undefined {
  const rt = microvmRuntimeFiles(ctx.runtimeDir);
  let r: MicrovmRecord;
  try {
    const text = readFileSync(rt.record, 'utf8');
    if (text.length > 64 * 1024) return undefined;
    r = JSON.parse(text) as MicrovmRecord;
  } catch {
    return undefined;
  }
  if (typeof r !== 'object' || r === null) return undefined;
  if (r.vmId !== ctx.config.id || !Number.isSafeInteger(r.pid) || r.pid <= 1) return undefined;
  if (typeof r.startTime !== 'string' || typeof r.startedAt !== 'string') return undefined;
  // Sockets named by the file are only trusted where we would have put them.
  if (r.control !== rt.control || r.serial !== rt.serial) return undefined;
  return r;
}

/** True while a vmdesk-microvm recorded for this VM still runs. */
export function recordedMicrovmRuns(ctx: EngineContext): boolean {
  const r = readMicrovmRecord(ctx);
  return !!r && processRunning(r.pid, r.startTime || undefined);
}

function clearRuntimeFiles(ctx: EngineContext): void {
  const rt = microvmRuntimeFiles(ctx.runtimeDir);
  for (const p of [rt.control, rt.serial, rt.record]) rmSync(p, { force: true });
}

/** Keeps logs from growing across runs: one previous generation is kept as <name>.1. */
function rotateLog(path: string, maxBytes = 2 * 1024 * 1024): void {
  try {
    if (statSync(path).size > maxBytes) renameSync(path, `${path}.1`);
  } catch {
    // absent: nothing to rotate
  }
}

/** The last lines of a log (reads at most its final 64 KiB); sinceHeader keeps only the latest run's. */
function logTail(path: string, lines = LOG_TAIL_LINES, sinceHeader = false): string[] {
  try {
    const size = statSync(path).size;
    const fd = openSync(path, 'r');
    try {
      const length = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(length);
      readSync(fd, buf, 0, length, size - length);
      let all = buf.toString('utf8').split('\n').map((l) => l.trimEnd()).filter(Boolean);
      if (sinceHeader) {
        const start = all.map((l) => l.startsWith(RUN_HEADER)).lastIndexOf(true);
        if (start >= 0) all = all.slice(start + 1);
      }
      return all.slice(-lines);
    } finally {
      closeSync(fd);
    }
  } catch {
    return [];
  }
}

/** last-exit.json when it was written during the run that started at startedAt (not a previous run's). */
function exitRecordSince(ctx: EngineContext, startedAt: string): ExitRecord | undefined {
  try {
    const r = JSON.parse(readFileSync(microvmBundleFiles(ctx.bundleDir).lastExit, 'utf8')) as unknown;
    return isExitRecord(r) && r.at >= startedAt ? r : undefined;
  } catch {
    return undefined;
  }
}

function writeExitRecord(ctx: EngineContext, r: ExitRecord): void {
  try {
    writeFileAtomicSync(microvmBundleFiles(ctx.bundleDir).lastExit, JSON.stringify(r, null, 2) + '\n');
  } catch {
    // a full disk: the daemon still reports the exit it holds
  }
}

function signalName(sig: NodeJS.Signals | null): string | null {
  return sig ?? null;
}

/** Reads the executable's one-line report from the ready pipe: its text, or why there is none. */
function readReady(stream: Readable, timeoutMs: number): Promise<{ line?: string; timedOut?: boolean }> {
  return new Promise((resolve) => {
    let buf = '';
    let settled = false;
    const done = (v: { line?: string; timedOut?: boolean }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done({ timedOut: true }), timeoutMs);
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) done({ line: buf.slice(0, nl) });
      else if (buf.length > 64 * 1024) done({});
    });
    stream.on('end', () => done(buf ? { line: buf } : {}));
    stream.on('error', () => done({}));
    stream.on('close', () => done(buf ? { line: buf } : {}));
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Spawned {
  pid: number;
  /** The read end of the executable's fd 3. */
  ready: Readable;
  /** Its exit status (this process is its parent). */
  exit: Promise<ChildExit>;
}

/**
 * Starts the executable detached: its own session (no terminal signals from the daemon's), output to its log
 * file (a pipe to the daemon would break when the daemon goes), fd 3 a pipe for the one-line ready report.
 * Through the addon's posix_spawn where it is built: forking a large Node process costs milliseconds of start-up.
 */
function spawnExecutable(exe: string, args: string[], logFd: number): Spawned {
  const fast = process.env.VMDESK_MICROVM_NODE_SPAWN ? undefined : nativeSpawn();
  if (fast) {
    const { pid, readyFd } = fast.spawnDetached(exe, args, logFd);
    return { pid, ready: new Socket({ fd: readyFd, readable: true, writable: false }), exit: fast.waitChild(pid) };
  }
  const child = spawn(exe, args, { detached: true, stdio: ['ignore', logFd, logFd, 'pipe'], cwd: '/' });
  child.unref();
  const exit = new Promise<ChildExit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (e) => resolve({ code: null, signal: null, error: e.message }));
  });
  const ready = child.stdio[3] as Readable | null;
  if (!child.pid || !ready) throw new VmdeskError(ErrorCode.host, `vmdesk-microvm could not be started (${exe})`);
  return { pid: child.pid, ready, exit };
}

/** Runtimes this process holds (not detached, not ended): disks in use, for DiskProvider.checkFree. */
export const activeMicrovms = new Set<MicrovmRuntime>();

export interface LaunchSpec {
  accel: AccelChoice;
  warnings: string[];
  paused?: boolean;
}

export class MicrovmRuntime extends EventEmitter implements VmRuntime {
  readonly serial: SerialPort;
  readonly exited: Promise<ExitRecord>;
  readonly vncSocket = undefined;
  private currentState: VmState = 'starting';
  private settle!: (r: ExitRecord) => void;
  private exitRecord: ExitRecord | undefined;
  private exitEvent: ExitRecord | undefined;
  private childExit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private forced: ExitRecord | undefined;
  private finishing = false;
  private watching = false;
  private detached = false;
  private control: ControlClient | undefined;
  private serialSock: Socket | undefined;
  private serialReconnects = 0;
  private readonly serialListeners = new Set<(chunk: Buffer) => void>();
  /** This process started it, so its exit status will come (through onChildExit). */
  private parent = false;
  private readonly files: ReturnType<typeof microvmBundleFiles>;
  private readonly rt: ReturnType<typeof microvmRuntimeFiles>;

  private constructor(
    private readonly ctx: EngineContext,
    private readonly record: MicrovmRecord,
    readonly adopted: boolean,
    readonly accel: AccelChoice,
    readonly warnings: readonly string[],
  ) {
    super();
    this.files = microvmBundleFiles(ctx.bundleDir);
    this.rt = microvmRuntimeFiles(ctx.runtimeDir);
    this.exited = new Promise((r) => (this.settle = r));
    const listeners = this.serialListeners;
    const self = this;
    this.serial = {
      // The executable stops reading while the guest's UART input FIFO is full, so this socket's buffer
      // filling up means the guest is not reading: false tells the caller to wait for onceDrain.
      write(data: Buffer): boolean {
        const sock = self.serialSock;
        if (!sock || sock.destroyed) return true; // nobody to wait for: the input is lost with the connection
        return sock.write(data);
      },
      onceDrain(fn: () => void): void {
        const sock = self.serialSock;
        if (!sock || sock.destroyed || !sock.writableNeedDrain) {
          setImmediate(fn);
          return;
        }
        let called = false;
        const once = () => {
          if (called) return;
          called = true;
          sock.off('drain', once);
          sock.off('close', once);
          fn();
        };
        sock.on('drain', once);
        sock.on('close', once);
      },
      onData(fn) {
        listeners.add(fn);
        return () => {
          listeners.delete(fn);
        };
      },
      logFile: this.files.serialLog,
      // The executable starts a new file past 64 MiB; then this run's output starts at 0.
      get logStart(): number {
        const start = self.record.serialLogStart;
        if (typeof start !== 'number' || !Number.isSafeInteger(start) || start < 0) return 0;
        try {
          return statSync(self.files.serialLog).size >= start ? start : 0;
        } catch {
          return 0;
        }
      },
    };
    activeMicrovms.add(this);
  }

  get pid(): number {
    return this.record.pid;
  }

  get startedAt(): string {
    return this.record.startedAt;
  }

  get state(): VmState {
    return this.currentState;
  }

  /** The disk files this guest has open (the executable holds flock(2) locks on them). */
  get diskFiles(): string[] {
    return this.ctx.config.disks.map((d) => diskFile(this.ctx.bundleDir, d.path));
  }

  /** Spawns vmdesk-microvm detached (its own session: it outlives the daemon) and resolves once the guest runs. */
  static async launch(ctx: EngineContext, spec: LaunchSpec): Promise<MicrovmRuntime> {
    const files = microvmBundleFiles(ctx.bundleDir);
    const exe = microvmExecutable();
    if (!existsSync(exe)) {
      throw new VmdeskError(ErrorCode.host, `the micro-VM executable is not built (${exe} is missing)`, [
        'build it with: npm run build:native   (native/build.mjs builds it next to the addon; it needs a C++17 compiler, make and python3)',
      ]);
    }
    mkdirSync(ctx.runtimeDir, { recursive: true, mode: 0o700 });
    mkdirSync(files.logs, { recursive: true, mode: 0o700 });
    for (const log of [files.processLog, files.serialLog]) rotateLog(log);
    clearRuntimeFiles(ctx);
    const args = microvmArgv(ctx, { paused: spec.paused === true, accelReason: spec.accel.reason, readyFd: 3 });
    const logFd = openSync(files.processLog, 'a', 0o600);
    let child: Spawned;
    try {
      writeSync(logFd, `${RUN_HEADER}${new Date().toISOString()} starting ${exe} ${args.map((a) => JSON.stringify(a)).join(' ')}\n`);
      child = spawnExecutable(exe, args, logFd);
    } finally {
      closeSync(logFd);
    }
    let early: ChildExit | undefined;
    void child.exit.then((r) => (early = r));
    const ready = await readReady(child.ready, microvmTimeouts.startMs);
    const failure = (code: ErrorCode, message: string) => new VmdeskError(code, message, logTail(files.processLog, LOG_TAIL_LINES, true));
    let report: { ok?: unknown; pid?: unknown; startTime?: unknown; state?: unknown; error?: { code?: unknown; message?: unknown } } = {};
    try {
      if (ready.line) report = JSON.parse(ready.line) as typeof report;
    } catch {
      report = {};
    }
    if (report.ok !== true) {
      if (ready.timedOut) {
        try {
          if (!early) process.kill(child.pid, 'SIGKILL'); // still our unreaped child: the pid is its
        } catch {
          /* gone */
        }
        throw failure(ErrorCode.timeout, `the micro-VM did not start within ${microvmTimeouts.startMs / 1000} s`);
      }
      if (report.ok === false && report.error) {
        const codes = Object.values(ErrorCode) as string[];
        const code = typeof report.error.code === 'string' && codes.includes(report.error.code) ? (report.error.code as ErrorCode) : ErrorCode.engine;
        throw failure(code, typeof report.error.message === 'string' ? report.error.message : 'the micro-VM did not start');
      }
      // No report: it died before it could say why (a crash, a missing library). Its exit status says more.
      for (let i = 0; i < 100 && !early; i++) await sleep(20);
      const how = early?.signal ? `signal ${early.signal}` : early?.error ? early.error : early ? `exit code ${early.code}` : 'no report';
      throw failure(ErrorCode.engine, `vmdesk-microvm ended during start-up (${how}); see logs/microvm.log`);
    }
    const record = readMicrovmRecord(ctx) ?? {
      protocol: 1,
      vmId: ctx.config.id,
      pid: child.pid,
      startTime: typeof report.startTime === 'string' ? report.startTime : '',
      startedAt: new Date().toISOString(),
      accel: 'kvm',
      accelReason: spec.accel.reason,
      control: microvmRuntimeFiles(ctx.runtimeDir).control,
      serial: microvmRuntimeFiles(ctx.runtimeDir).serial,
    };
    const runtime = new MicrovmRuntime(ctx, record, false, spec.accel, spec.warnings);
    runtime.parent = true;
    void child.exit.then((r) => runtime.onChildExit(r.code, r.signal));
    runtime.currentState = report.state === 'paused' ? 'paused' : 'running';
    if (early) return runtime; // gone already: the exit record tells how (onChildExit runs from the promise)
    // A guest that powers off at once may be gone before we connect: then its exit record tells the story.
    try {
      await runtime.connect();
    } catch (e) {
      if (runtime.exitRecord || !processRunning(record.pid, record.startTime || undefined)) return runtime;
      for (let i = 0; i < 50 && !runtime.childExit; i++) await sleep(20);
      if (runtime.childExit) return runtime;
      runtime.detach();
      try {
        process.kill(record.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      throw failure(ErrorCode.engine, `the micro-VM runs but its sockets do not answer: ${(e as Error).message}`);
    }
    return runtime;
  }

  /** Takes over a vmdesk-microvm a previous daemon left running; null when none runs (or it is not ours). */
  static async adopt(ctx: EngineContext, accelFor: (record: MicrovmRecord) => AccelChoice): Promise<MicrovmRuntime | null> {
    const record = readMicrovmRecord(ctx);
    if (!record || !processRunning(record.pid, record.startTime || undefined)) return null;
    const runtime = new MicrovmRuntime(ctx, record, true, accelFor(record), []);
    try {
      await runtime.connect();
    } catch {
      runtime.detach();
      return null;
    }
    return runtime;
  }

  /** A record whose process ended while no daemon watched: the exit record it wrote (or one for it), once. */
  static reapOrphan(ctx: EngineContext): ExitRecord | undefined {
    const record = readMicrovmRecord(ctx);
    if (!record || processRunning(record.pid, record.startTime || undefined)) return undefined;
    let exit = exitRecordSince(ctx, record.startedAt);
    if (!exit) {
      const files = microvmBundleFiles(ctx.bundleDir);
      exit = {
        at: new Date().toISOString(),
        reason: 'unknown',
        detail: 'the micro-VM process ended while no VMDesk daemon watched it, without recording why (killed with SIGKILL, or it crashed); see logs/microvm.log',
        exitCode: null,
        signal: null,
        logTail: logTail(files.serialLog),
      };
      writeExitRecord(ctx, exit);
    }
    clearRuntimeFiles(ctx);
    return exit;
  }

  /** Control and serial connections; resolves once the executable has greeted us. */
  private async connect(): Promise<void> {
    const control = await ControlClient.connect(this.rt.control);
    this.control = control;
    control.on('state', (s: MicrovmState) => this.setState(s));
    control.on('exit', (r: ExitRecord) => {
      this.exitEvent = r;
      this.setState('stopping');
    });
    control.on('close', () => this.onControlClose());
    const hello = await control.waitHello(microvmTimeouts.helloMs);
    if (!hello || hello.pid !== this.record.pid) {
      control.close();
      throw new VmdeskError(ErrorCode.engine, hello ? `the control socket belongs to pid ${hello.pid}, not ${this.record.pid}` : 'the micro-VM did not greet on its control socket');
    }
    this.setState(hello.state);
    await this.connectSerial();
  }

  private async connectSerial(): Promise<void> {
    const sock = await connectUnixSocket(this.rt.serial);
    if (this.detached || this.exitRecord) {
      sock.destroy();
      return;
    }
    this.serialSock = sock;
    sock.on('data', (chunk: Buffer) => {
      for (const fn of this.serialListeners) {
        try {
          fn(chunk);
        } catch {
          // one subscriber's failure must not starve the others
        }
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      if (this.serialSock !== sock) return;
      this.serialSock = undefined;
      // The executable drops a serial client that fell 4 MiB behind; the output is in serial.log. Reconnect
      // while the guest lives, a bounded number of times.
      if (this.detached || this.exitRecord || this.exitEvent || this.serialReconnects >= 10) return;
      this.serialReconnects++;
      setTimeout(() => {
        if (this.isAlive()) this.connectSerial().catch(() => {});
      }, 200).unref();
    });
  }

  private isAlive(): boolean {
    return !this.detached && !this.exitRecord && processRunning(this.record.pid, this.record.startTime || undefined);
  }

  private setState(s: VmState): void {
    if (this.exitRecord || this.currentState === s) return;
    this.currentState = s;
    this.emit('state', s);
  }

  onState(fn: (state: VmState) => void): () => void {
    this.on('state', fn);
    return () => this.off('state', fn);
  }

  private requireControl(): ControlClient {
    this.requireAttached();
    if (this.exitRecord || this.exitEvent) throw new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" has stopped`);
    if (!this.control || this.control.isClosed) throw new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" is not reachable (its control connection is closed)`);
    return this.control;
  }

  async pause(): Promise<void> {
    await this.requireControl().request('pause', undefined, microvmTimeouts.replyMs);
    this.setState('paused');
  }

  async resume(): Promise<void> {
    await this.requireControl().request('resume', undefined, microvmTimeouts.replyMs);
    this.setState('running');
  }

  /** Boots the kernel afresh inside the same process (a micro-VM has no firmware reset). */
  async reset(): Promise<void> {
    await this.requireControl().request('reset', undefined, microvmTimeouts.rebuildMs);
    this.setState('running');
  }

  /** What the executable reports about itself (state, sizes, clients, a snapshot in progress). */
  info(): Promise<Record<string, unknown>> {
    return this.requireControl().request('info', undefined, microvmTimeouts.replyMs);
  }

  /** Writes a snapshot of the running guest to path (atomically); the guest keeps running. */
  async snapshotSave(path: string): Promise<{ bytes: number }> {
    const r = await this.requireControl().request<{ bytes?: number }>('snapshot-save', path, microvmTimeouts.snapshotSaveMs);
    return { bytes: typeof r.bytes === 'number' ? r.bytes : 0 };
  }

  /** Replaces the guest with the snapshot's, in place; it ends paused. A bad file leaves the guest as it was. */
  async snapshotLoad(path: string): Promise<void> {
    await this.requireControl().request('snapshot-load', path, microvmTimeouts.rebuildMs);
    this.setState('paused');
  }

  /** After detach() this object watches nothing: its exited would never settle. */
  private requireAttached(): void {
    if (this.detached) throw new VmdeskError(ErrorCode.state, `this handle on "${this.ctx.config.name}" was detached; adopt the VM again`);
  }

  async shutdown(timeoutMs: number): Promise<ExitRecord> {
    if (this.exitRecord) return this.exitRecord;
    this.requireAttached();
    const ms = Number.isFinite(timeoutMs) && timeoutMs >= 0 ? Math.min(Math.floor(timeoutMs), 86_400_000) : 60_000;
    try {
      await this.requireControl().request('shutdown', ms, microvmTimeouts.replyMs);
      this.setState('stopping');
    } catch (e) {
      if (this.exitRecord || this.exitEvent || this.currentState === 'stopping') return this.exited;
      const code = (e as VmdeskError).code;
      if (code === ErrorCode.busy || code === ErrorCode.invalid) throw e; // a snapshot being saved: try again later
      return this.kill(); // not answering: the force the caller asked for, now
    }
    // The executable forces the guest off after ms; should it not, the daemon does.
    const force = setTimeout(() => void this.kill(), ms + microvmTimeouts.shutdownSlackMs);
    void this.exited.finally(() => clearTimeout(force));
    return this.exited;
  }

  async kill(): Promise<ExitRecord> {
    if (this.exitRecord) return this.exitRecord;
    this.requireAttached();
    let answered = false;
    if (this.control && !this.control.isClosed && !this.exitEvent) {
      try {
        await this.control.request('kill', undefined, microvmTimeouts.killReplyMs);
        answered = true;
      } catch {
        // not answering: end it by pid below
      }
    }
    if (answered || this.exitEvent) {
      const r = await Promise.race([this.exited, sleep(microvmTimeouts.stopGraceMs).then(() => undefined)]);
      if (r) return r;
    }
    if (this.exitRecord) return this.exitRecord;
    // Verified by start time: a pid the kernel gave to another process since is not ours to kill.
    if (processRunning(this.record.pid, this.record.startTime || undefined)) {
      this.forced = {
        at: new Date().toISOString(),
        reason: 'killed',
        detail: answered ? 'the micro-VM process did not stop after kill; SIGKILL sent' : 'the micro-VM process did not answer; SIGKILL sent',
        exitCode: null,
        signal: 'SIGKILL',
        logTail: logTail(this.files.serialLog),
      };
      this.setState('stopping');
      try {
        process.kill(this.record.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    void this.watchAfterClose();
    return this.exited;
  }

  detach(): void {
    if (this.detached) return;
    this.detached = true;
    activeMicrovms.delete(this);
    this.control?.close();
    this.serialSock?.destroy();
  }

  private onControlClose(): void {
    if (this.detached || this.exitRecord) return;
    void this.watchAfterClose();
  }

  /**
   * The control connection is gone. Normally the process is on its way out: the end is when it is gone (a
   * parent also waits for the exit status). A process that lives on without having announced an exit dropped
   * us (or was restarted by nobody): connect again once.
   */
  private async watchAfterClose(): Promise<void> {
    if (this.watching) return;
    this.watching = true;
    try {
      const start = Date.now();
      let reconnected = false;
      while (processRunning(this.record.pid, this.record.startTime || undefined)) {
        if (this.detached || this.exitRecord) return;
        if (!reconnected && !this.exitEvent && !this.forced && Date.now() - start > 1000 && this.control?.isClosed) {
          reconnected = true;
          try {
            await this.connect();
            return;
          } catch {
            // nothing listens: it is on its way out
          }
        }
        await sleep(Date.now() - start < microvmTimeouts.goneMs ? 20 : 1000);
      }
      if (this.parent) {
        for (let i = 0; i < 50 && !this.childExit; i++) await sleep(20);
        if (this.childExit) return; // finished by onChildExit with the status
      }
      this.finish(null, null);
    } finally {
      this.watching = false;
    }
  }

  private onChildExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.detached) return;
    this.childExit = { code, signal };
    this.finish(code, signal);
  }

  private finish(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exitRecord || this.detached || this.finishing) return;
    this.finishing = true;
    let record: ExitRecord;
    // Anything the executable wrote during this run is the truth about how the guest ended.
    const own = this.exitEvent ?? exitRecordSince(this.ctx, this.record.startedAt);
    if (own) {
      // The executable recorded the end itself; a parent adds the exit status it alone knows.
      record = this.parent ? { ...own, exitCode: code, signal: signalName(signal) } : own;
      if (this.parent && (own.exitCode !== code || own.signal !== signalName(signal))) writeExitRecord(this.ctx, record);
    } else if (this.forced) {
      record = { ...this.forced, exitCode: code, signal: signalName(signal) ?? this.forced.signal ?? null };
      writeExitRecord(this.ctx, record);
    } else {
      const how = signal ? `signal ${signal}` : code === null ? 'exit status unknown' : `exit code ${code}`;
      record = {
        at: new Date().toISOString(),
        reason: 'crashed',
        detail: `the micro-VM process ended without recording why (${how}); see logs/microvm.log`,
        exitCode: code,
        signal: signalName(signal),
        logTail: logTail(this.files.serialLog),
      };
      writeExitRecord(this.ctx, record);
    }
    this.exitRecord = record;
    activeMicrovms.delete(this);
    clearRuntimeFiles(this.ctx);
    this.control?.close();
    this.serialSock?.destroy();
    this.currentState = record.reason === 'crashed' ? 'crashed' : 'stopped';
    this.emit('state', this.currentState);
    this.settle(record);
  }
}
