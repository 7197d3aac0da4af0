// The per-VM supervisor: owns QEMU, its QMP and serial sockets, and serves the control socket to any client.
import type { ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { ExitRecord, VmState } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { ControlError, ControlMessage, ControlRequest, LaunchSpec, SupervisorInfo, SupervisorRecord } from './control.js';
import type { LaunchedQemu } from './qemu-launch.js';
import { bundleFiles, runtimeFiles } from './layout.js';
import { QmpClient, type QmpEvent } from './qmp.js';
import { startPasst } from './passt.js';
import { logTail, RUN_HEADER } from './records.js';
import { writeFileAtomicSync as writeFileAtomic } from '../../platform/atomic.js';

const SERIAL_REPLAY_BYTES = 64 * 1024;
const LOG_TAIL_LINES = 20;

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} supervisor[${process.pid}]: ${message}\n`);
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: Error) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // observed through the control socket, not by the supervisor itself
  return { promise, resolve, reject };
}

function toControlError(e: unknown): ControlError {
  if (e instanceof VmdeskError) return { code: e.code, message: e.message, details: e.details };
  return { code: ErrorCode.internal, message: (e as Error)?.message ?? String(e) };
}

async function waitForPath(path: string, alive: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (!alive()) throw new VmdeskError(ErrorCode.engine, 'QEMU exited during start-up');
    if (Date.now() > deadline) throw new VmdeskError(ErrorCode.timeout, `QEMU did not create ${path} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

type StopIntent = 'shutdown' | 'kill' | 'signal';

class Supervisor {
  private readonly run: ReturnType<typeof runtimeFiles>;
  private readonly files: ReturnType<typeof bundleFiles>;
  private state: VmState = 'starting';
  private child: ChildProcess | undefined;
  private qmp: QmpClient | undefined;
  private serial: Socket | undefined;
  private serialHistory: Buffer[] = [];
  private serialHistoryBytes = 0;
  /** Size of serial.log (appended across runs) when this run's QEMU started. */
  private serialLogOffset = 0;
  private readonly serialClients = new Set<Socket>();
  private readonly jsonClients = new Set<Socket>();
  private server: Server | undefined;
  private readonly started = deferred<void>();
  private readonly exited = deferred<ExitRecord>();
  private exitRecord: ExitRecord | undefined;
  private stopIntent: StopIntent | undefined;
  private forcedOff: { afterMs: number } | undefined;
  private shutdownEvent: { guest: boolean; reason: string } | undefined;
  private startupError: Error | undefined;
  private record: SupervisorRecord | undefined;

  constructor(private readonly spec: LaunchSpec) {
    this.run = runtimeFiles(spec.runtimeDir);
    this.files = bundleFiles(spec.bundleDir);
  }

  /** Starting and stopping are ours to know; QEMU's status only tells running from paused. */
  private inTransition(): boolean {
    return this.state === 'starting' || this.state === 'stopping';
  }

  async main(launched: LaunchedQemu): Promise<void> {
    this.adopt(launched);
    await this.listen();
    try {
      await this.boot();
      this.started.resolve();
    } catch (e) {
      this.startupError = e as Error;
      log(`start-up failed: ${(e as Error).message}`);
      this.child?.kill('SIGKILL');
      // started is rejected with the log tail once the exit record exists (see onExit).
    }
  }

  private listen(): Promise<void> {
    this.server = createServer((sock) => this.onClient(sock));
    return new Promise((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.run.control, () => {
        chmodSync(this.run.control, 0o600);
        resolve();
      });
    });
  }

  /** Takes over the QEMU child that supervisor-main started before this module loaded. */
  private adopt(launched: LaunchedQemu): void {
    const child = launched.child;
    this.child = child;
    this.serialLogOffset = launched.serialLogOffset;
    if (launched.early) {
      const { code, signal, error } = launched.early;
      if (error) {
        log(`QEMU could not be started: ${error}`);
        this.startupError ??= new Error(error);
      }
      this.onExit(code, signal, error);
      return;
    }
    child.on('error', (e) => {
      log(`QEMU could not be started: ${e.message}`);
      this.startupError ??= e;
      this.onExit(null, null, e.message);
    });
    child.on('exit', (code, signal) => this.onExit(code, signal));
    if (child.pid) {
      this.record = {
        pid: process.pid,
        qemuPid: child.pid,
        startedAt: new Date().toISOString(),
        accel: this.spec.accel,
        vmId: this.spec.vmId,
        vncSocket: this.run.vnc,
      };
      writeFileAtomic(this.run.supervisorRecord, JSON.stringify(this.record, null, 2) + '\n');
      log(`QEMU started, pid ${child.pid}`);
    }
  }

  private alive = () => this.exitRecord === undefined && this.child?.exitCode === null && this.child.signalCode === null;

  /**
   * QEMU binds a socket file a moment before it listens: a connect in that window is refused, so retry
   * (seen under load: two guests booting on two cores) until QEMU dies or the deadline passes.
   */
  private connectQmp(deadline: number): Promise<QmpClient> {
    return this.retryRefused(() => QmpClient.connect(this.run.qmp, { timeoutMs: Math.max(1000, deadline - Date.now()) }), deadline);
  }

  private async retryRefused<T>(connect: () => Promise<T>, deadline: number): Promise<T> {
    for (;;) {
      try {
        return await connect();
      } catch (e) {
        const refused = /ECONNREFUSED|ENOENT/.test((e as Error).message);
        if (!refused || !this.alive() || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** One passt per "nat" adapter, connected to QEMU's netdev socket; each quits when QEMU does. */
  private async startNetwork(): Promise<void> {
    const spec = this.spec.passt;
    if (!spec) return;
    const passtLog = openSync(join(this.files.logs, 'passt.log'), 'a');
    try {
      for (const a of spec.adapters) {
        const child = await startPasst({ passt: spec.path, socket: this.run.net(a.index), forwards: a.forwards, log: passtLog, alive: this.alive });
        log(`passt for adapter ${a.index} started, pid ${child.pid}`);
        child.on('exit', (code, signal) => {
          if (this.alive()) log(`passt for adapter ${a.index} exited (${signal ?? `code ${code}`}) while the guest runs: its network is down (see logs/passt.log)`);
        });
        child.on('error', (e) => log(`passt for adapter ${a.index} could not run: ${e.message}`));
      }
    } finally {
      closeSync(passtLog);
    }
  }

  private async boot(): Promise<void> {
    await this.startNetwork();
    await waitForPath(this.run.serial, this.alive, 30_000);
    await this.retryRefused(() => this.connectSerial(), Date.now() + 30_000);
    await waitForPath(this.run.qmp, this.alive, 30_000);
    const qmp = await this.connectQmp(Date.now() + 30_000);
    this.qmp = qmp;
    qmp.on('event', (ev: QmpEvent) => this.onQmpEvent(ev));
    qmp.on('protocol-error', (line: string) => log(`QMP sent a line that is not JSON: ${line.slice(0, 200)}`));
    if (!this.alive()) throw new VmdeskError(ErrorCode.engine, 'QEMU exited during start-up');
    this.setState(this.spec.startPaused ? 'paused' : 'running');
  }

  private connectSerial(): Promise<void> {
    return new Promise((resolve, reject) => {
      const sock = createConnection(this.run.serial);
      sock.once('connect', () => {
        this.serial = sock;
        // What the guest printed before we connected went only to serial.log: seed the replay history
        // with it, so late console clients still see the start of the boot.
        try {
          const early = readFileSync(this.files.serialLog);
          const fresh = early.subarray(this.serialLogOffset);
          if (fresh.length) this.onSerialOutput(fresh.subarray(Math.max(0, fresh.length - SERIAL_REPLAY_BYTES)));
        } catch {
          // no log yet: nothing was printed
        }
        resolve();
      });
      sock.once('error', (e) => reject(new VmdeskError(ErrorCode.engine, `serial socket: ${e.message}`)));
      sock.on('data', (chunk: Buffer) => this.onSerialOutput(chunk));
      sock.on('close', () => {
        this.serial = undefined;
      });
    });
  }

  private onSerialOutput(chunk: Buffer): void {
    this.serialHistory.push(chunk);
    this.serialHistoryBytes += chunk.length;
    while (this.serialHistoryBytes > SERIAL_REPLAY_BYTES && this.serialHistory.length > 1) {
      this.serialHistoryBytes -= this.serialHistory.shift()!.length;
    }
    for (const c of this.serialClients) c.write(chunk);
  }

  private onQmpEvent(ev: QmpEvent): void {
    this.broadcast({ event: ev.event, data: ev.data, ...(ev.timestamp ? { timestamp: ev.timestamp } : {}) });
    if (ev.event === 'SHUTDOWN') {
      const d = ev.data as { guest?: boolean; reason?: string };
      this.shutdownEvent = { guest: d.guest === true, reason: d.reason ?? 'unknown' };
      this.setState('stopping');
    } else if (ev.event === 'STOP' && this.state === 'running') {
      this.setState('paused');
    } else if (ev.event === 'RESUME' && this.state === 'paused') {
      this.setState('running');
    }
  }

  private setState(state: VmState): void {
    if (this.state === state) return;
    this.state = state;
    this.broadcast({ state });
  }

  private broadcast(msg: ControlMessage): void {
    const line = JSON.stringify(msg) + '\n';
    for (const c of this.jsonClients) c.write(line);
  }

  private onClient(sock: Socket): void {
    this.jsonClients.add(sock);
    let buf = '';
    const onData = (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        let req: ControlRequest;
        try {
          req = JSON.parse(line) as ControlRequest;
        } catch {
          sock.write(JSON.stringify({ id: -1, ok: false, error: { code: ErrorCode.invalid, message: 'request is not JSON' } }) + '\n');
          continue;
        }
        if (req.cmd === 'serial') {
          // From here on the connection carries raw console bytes both ways.
          sock.off('data', onData);
          this.jsonClients.delete(sock);
          sock.write(JSON.stringify({ id: req.id, ok: true }) + '\n');
          if (req.replay !== false) for (const c of this.serialHistory) sock.write(c);
          this.serialClients.add(sock);
          const rest = Buffer.from(buf, 'utf8');
          if (rest.length) this.serial?.write(rest);
          sock.on('data', (input: Buffer) => this.serial?.write(input));
          return;
        }
        void this.handle(req).then(
          (result) => sock.writable && sock.write(JSON.stringify({ id: req.id, ok: true, result }) + '\n'),
          (e: unknown) => sock.writable && sock.write(JSON.stringify({ id: req.id, ok: false, error: toControlError(e) }) + '\n'),
        );
      }
    };
    sock.on('data', onData);
    sock.on('error', () => {});
    sock.on('close', () => {
      this.jsonClients.delete(sock);
      this.serialClients.delete(sock);
    });
  }

  private requireQmp(): QmpClient {
    if (this.exitRecord) throw new VmdeskError(ErrorCode.state, 'the VM has stopped');
    if (!this.qmp || this.state === 'starting') throw new VmdeskError(ErrorCode.state, 'the VM is still starting');
    return this.qmp;
  }

  /**
   * Answered from what we track (QMP's STOP/RESUME/SHUTDOWN events keep it current), never by asking QEMU:
   * its monitor blocks for seconds during snapshot-save, and a state query must not look like a dead VM.
   */
  private async currentState(): Promise<VmState> {
    if (this.exitRecord) return this.exitRecord.reason === 'crashed' ? 'crashed' : 'stopped';
    return this.state;
  }


  private async handle(req: ControlRequest): Promise<unknown> {
    switch (req.cmd) {
      case 'state':
        return { state: await this.currentState() };
      case 'info': {
        const info: SupervisorInfo = { ...this.record!, state: await this.currentState() };
        return info;
      }
      case 'wait-started':
        await this.started.promise;
        return { state: await this.currentState() };
      case 'wait-exit':
        return this.exited.promise;
      case 'pause':
        await this.requireQmp().execute('stop');
        this.setState('paused');
        return {};
      case 'resume':
        await this.requireQmp().execute('cont');
        this.setState('running');
        return {};
      case 'reset':
        await this.requireQmp().execute('system_reset');
        return {};
      case 'qmp':
        return this.requireQmp().execute(req.execute, req.arguments, req.timeoutMs);
      case 'shutdown':
        return this.shutdown(req.timeoutMs);
      case 'kill':
        return this.kill();
      default:
        throw new VmdeskError(ErrorCode.invalid, `unknown command ${(req as { cmd: string }).cmd}`);
    }
  }

  private async shutdown(timeoutMs: number): Promise<ExitRecord> {
    if (this.exitRecord) return this.exitRecord;
    if (this.stopIntent) return this.exited.promise;
    this.stopIntent = 'shutdown';
    const ms = Number.isFinite(timeoutMs) && timeoutMs >= 0 ? timeoutMs : 60_000;
    const force = setTimeout(() => {
      log(`guest did not power off within ${ms} ms; killing QEMU`);
      this.forcedOff = { afterMs: ms };
      this.child?.kill('SIGKILL');
    }, ms);
    void this.exited.promise.finally(() => clearTimeout(force));
    this.setState('stopping');
    if (this.qmp && !this.qmp.isClosed) {
      try {
        // A paused guest cannot see the power button.
        const status = await this.qmp.execute<{ running: boolean }>('query-status', undefined, 5000);
        if (!status.running) await this.qmp.execute('cont', undefined, 5000);
        await this.qmp.execute('system_powerdown', undefined, 5000);
      } catch (e) {
        log(`ACPI power-down request failed: ${(e as Error).message}`);
      }
    }
    return this.exited.promise;
  }

  private kill(): Promise<ExitRecord> {
    if (this.exitRecord) return Promise.resolve(this.exitRecord);
    if (this.stopIntent !== 'shutdown') this.stopIntent = 'kill';
    else this.forcedOff = { afterMs: 0 };
    this.setState('stopping');
    this.child?.kill('SIGKILL');
    return this.exited.promise;
  }

  /** SIGTERM/SIGINT to the supervisor: stop QEMU the way a host signal would, so nothing is orphaned. */
  onSignal(signal: NodeJS.Signals): void {
    log(`received ${signal}; stopping QEMU`);
    if (!this.stopIntent) this.stopIntent = 'signal';
    if (this.child && this.alive()) this.child.kill('SIGTERM');
    else if (!this.child) process.exit(1);
  }

  private classify(code: number | null, signal: NodeJS.Signals | null, spawnError?: string): Pick<ExitRecord, 'reason' | 'detail'> {
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    if (spawnError) return { reason: 'crashed', detail: `QEMU could not be started: ${spawnError}` };
    if (this.startupError && !this.stopIntent) {
      // QEMU's own complaint ("qemu-system-x86_64: -device ...: reason") says more than our socket error.
      const complaint = logTail(this.files.qemuLog, LOG_TAIL_LINES, true)
        .filter((l) => /qemu-system[^:]*: /.test(l))
        .at(-1)
        ?.replace(/^\S+Z qemu-system[^:]*: /, '')
        .replace(/^qemu-system[^:]*: /, '');
      return { reason: 'crashed', detail: complaint ? `${complaint} (${how})` : `QEMU exited during start-up (${how}): ${this.startupError.message}` };
    }
    if (this.stopIntent === 'kill') return { reason: 'killed', detail: 'forced off' };
    if (this.stopIntent === 'shutdown') {
      if (this.forcedOff) return { reason: 'killed', detail: `the guest did not power off within ${this.forcedOff.afterMs} ms; forced off` };
      return { reason: 'shutdown', detail: this.shutdownEvent ? `ACPI power-down; guest shut down (${this.shutdownEvent.reason})` : `QEMU exited (${how})` };
    }
    if (this.shutdownEvent?.reason === 'guest-panic') return { reason: 'crashed', detail: 'the guest kernel panicked' };
    if (this.shutdownEvent?.guest) return { reason: 'guest-poweroff', detail: `the guest powered off (${this.shutdownEvent.reason})` };
    if (this.stopIntent === 'signal' || this.shutdownEvent?.reason === 'host-signal') return { reason: 'host-signal', detail: `QEMU stopped by a host signal (${how})` };
    if (this.shutdownEvent) return { reason: 'shutdown', detail: `stopped by the host (${this.shutdownEvent.reason})` };
    if (signal || code !== 0) return { reason: 'crashed', detail: `QEMU died unexpectedly (${how})` };
    return { reason: 'unknown', detail: 'QEMU exited without saying why' };
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null, spawnError?: string): void {
    if (this.exitRecord) return;
    const { reason, detail } = this.classify(code, signal, spawnError);
    const at = new Date().toISOString();
    try {
      appendFileSync(this.files.qemuLog, `${RUN_HEADER}${at} QEMU exited (${signal ? `signal ${signal}` : `exit code ${code}`}): ${reason}: ${detail}\n`);
    } catch {
      // the log is a courtesy; the record below is what counts
    }
    const record: ExitRecord = { at, reason, detail, exitCode: code, signal, logTail: logTail(this.files.qemuLog, LOG_TAIL_LINES, true) };
    this.exitRecord = record;
    log(`QEMU exited: ${reason} (${detail})`);
    // Stop accepting clients and remove the runtime files at once, so a new start of this VM never meets
    // (or later loses) them; connected clients still get their replies below.
    this.server?.close();
    this.removeRuntimeFiles();
    try {
      writeFileAtomic(this.files.lastExit, JSON.stringify(record, null, 2) + '\n');
    } catch (e) {
      log(`could not write ${this.files.lastExit}: ${(e as Error).message}`);
    }
    this.setState(reason === 'crashed' ? 'crashed' : 'stopped');
    this.broadcast({ exit: record });
    // No-op when the VM had started; otherwise start() learns why it never ran.
    this.started.reject(new VmdeskError(ErrorCode.engine, detail ?? reason, record.logTail));
    this.exited.resolve(record);
    // Let replies (kill, shutdown, wait-exit) flush before the sockets go away.
    setTimeout(() => this.cleanupAndExit(), 200);
  }

  private removeRuntimeFiles(): void {
    const nets = (this.spec.passt?.adapters ?? []).map((a) => this.run.net(a.index));
    for (const p of [this.run.control, this.run.qmp, this.run.serial, this.run.vnc, this.run.supervisorRecord, `${this.spec.runtimeDir}/launch.json`, ...nets]) {
      rmSync(p, { force: true });
    }
  }

  private cleanupAndExit(): void {
    this.qmp?.close();
    this.serial?.destroy();
    for (const c of [...this.jsonClients, ...this.serialClients]) c.end();
    setTimeout(() => process.exit(0), 100).unref();
    setTimeout(() => {
      for (const c of [...this.jsonClients, ...this.serialClients]) c.destroy();
    }, 50);
  }
}

/** Entry for supervisor-main: runs until QEMU has exited and the exit record is written. */
export async function runSupervisor(spec: LaunchSpec, launched: LaunchedQemu): Promise<void> {
  const sup = new Supervisor(spec);
  process.on('SIGTERM', () => sup.onSignal('SIGTERM'));
  process.on('SIGINT', () => sup.onSignal('SIGINT'));
  process.on('SIGHUP', () => {});
  process.on('uncaughtException', (e) => {
    log(`internal error: ${e.stack ?? e.message}`);
    sup.onSignal('SIGTERM');
  });
  await sup.main(launched);
}
