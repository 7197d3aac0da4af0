// The QEMU engine: checks the host, launches one detached supervisor per VM, and reattaches to running ones.
import { execFile, spawn } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type { AccelChoice, ExitRecord, VmState } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { Duplex, Engine, EngineContext, StartResult, VmHandle } from '../engine.js';
import { resolveAccel } from './accel.js';
import { buildQemuArgs } from './args.js';
import { EXIT_EVENT, STATE_EVENT, type ControlMessage, type ControlRequest, type LaunchSpec, type SupervisorInfo, type SupervisorRecord } from './control.js';
import { findUefiFirmware, qemuCapabilities, qemuImgPath, requireQemuSystem, type FirmwarePaths, type QemuCapabilities } from './host.js';
import { bundleFiles, runtimeFiles, SOCKET_PATH_MAX } from './layout.js';
import { logTail, readExitRecord } from './records.js';
import { writeFileAtomicSync as writeFileAtomic } from '../../platform/atomic.js';
import { connectUnixSocket, pidAlive } from '../../platform/process.js';
import { openControlStream } from '../control-stream.js';
import { checkHostPortsFree, passtPath, PASST_MISSING } from './passt.js';

const run = promisify(execFile);

/** How long start() waits for QEMU to report running (TCG on a loaded host can be slow to initialise). */
const START_TIMEOUT_MS = 90_000;
const CONTROL_CONNECT_TIMEOUT_MS = 20_000;

interface LaunchPlan {
  qemuPath: string;
  caps: QemuCapabilities;
  accel: AccelChoice;
  firmware: FirmwarePaths | undefined;
  /** passt's path when "nat" adapters are isolated through it; undefined falls back to QEMU's user network. */
  passt: string | undefined;
  warnings: string[];
}

/** The command that runs the supervisor: compiled JS next to this module, or the TS source through a loader. */
export function supervisorCommand(): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const js = join(here, 'supervisor-main.js');
  if (existsSync(js)) return [js];
  const ts = join(here, 'supervisor-main.ts');
  if (existsSync(ts)) {
    // Running from source (vitest): any TypeScript loader found in node_modules up the tree will do.
    for (let dir = here; ; dir = dirname(dir)) {
      for (const loader of ['tsx/dist/loader.mjs', 'jiti/lib/jiti-register.mjs']) {
        const p = join(dir, 'node_modules', loader);
        if (existsSync(p)) return ['--import', pathToFileURL(p).href, ts];
      }
      // The build output mirrors the source tree under dist/.
      const mirrored = join(dir, 'dist', ...here.slice(dir.length + 1).split('/'), 'supervisor-main.js');
      if (existsSync(join(dir, 'package.json')) && existsSync(mirrored)) return [mirrored];
      if (dirname(dir) === dir) break;
    }
  }
  throw new VmdeskError(ErrorCode.internal, `VM supervisor entry not found next to ${here} (run npm run build)`);
}

function checkSocketPaths(runtimeDir: string): void {
  const files = runtimeFiles(runtimeDir);
  for (const p of [files.control, files.qmp, files.serial, files.vnc, files.net(3)]) {
    if (Buffer.byteLength(p) >= SOCKET_PATH_MAX) {
      throw new VmdeskError(ErrorCode.host, `runtime directory path is too long for unix sockets (${p} is ${Buffer.byteLength(p)} bytes, limit ${SOCKET_PATH_MAX})`);
    }
  }
}

/**
 * A supervisor.json without a live supervisor means it was killed before it could write the exit record
 * (QEMU died with it through pdeathsig). Record that once and clear the leftovers so they do not mislead.
 */
async function recordDeadSupervisor(ctx: EngineContext): Promise<void> {
  const rt = runtimeFiles(ctx.runtimeDir);
  let rec: SupervisorRecord | undefined;
  try {
    rec = JSON.parse(await readFile(rt.supervisorRecord, 'utf8')) as SupervisorRecord;
  } catch {
    rec = undefined;
  }
  if (rec && (pidAlive(rec.pid) || rec.vmId !== ctx.config.id)) return;
  if (rec) {
    const files = bundleFiles(ctx.bundleDir);
    const record: ExitRecord = {
      at: new Date().toISOString(),
      reason: 'crashed',
      detail: `the VM supervisor (pid ${rec.pid}) died unexpectedly; QEMU (pid ${rec.qemuPid}) stopped with it`,
      exitCode: null,
      signal: null,
      logTail: logTail(files.supervisorLog, 10),
    };
    if (pidAlive(rec.qemuPid)) {
      // Without setpriv (non-Linux) QEMU outlives its supervisor; nobody can reach it any more.
      try {
        process.kill(rec.qemuPid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    writeFileAtomic(files.lastExit, JSON.stringify(record, null, 2) + '\n');
  }
  for (const p of [rt.control, rt.qmp, rt.serial, rt.vnc, rt.supervisorRecord]) rmSync(p, { force: true });
}

/** Keeps logs from growing forever: one previous generation is kept as <name>.1. */
function rotateLog(path: string, maxBytes = 2 * 1024 * 1024): void {
  try {
    if (statSync(path).size > maxBytes) renameSync(path, `${path}.1`);
  } catch {
    // absent: nothing to rotate
  }
}

export class QemuEngine implements Engine {
  readonly kind = 'qemu' as const;

  async check(ctx: EngineContext): Promise<AccelChoice> {
    return (await this.plan(ctx)).accel;
  }

  private async plan(ctx: EngineContext): Promise<LaunchPlan> {
    const qemuPath = requireQemuSystem();
    const caps = await qemuCapabilities(qemuPath);
    let accel = await resolveAccel(ctx.config.accel);
    if (caps.accelerators.length && !caps.accelerators.includes(accel.used)) {
      if (ctx.config.accel !== 'auto') {
        throw new VmdeskError(ErrorCode.host, `this QEMU (${qemuPath}) was built without ${accel.used.toUpperCase()} support`);
      }
      accel = { requested: 'auto', used: 'tcg', reason: `this QEMU was built without ${accel.used.toUpperCase()}; using TCG (software emulation, slower)` };
    }
    const firmware = ctx.config.firmware === 'uefi' ? findUefiFirmware() : undefined;
    if (ctx.config.firmware === 'uefi' && !firmware) {
      throw new VmdeskError(ErrorCode.host, 'UEFI firmware (OVMF) is not installed; install it with: sudo apt install ovmf');
    }
    checkSocketPaths(ctx.runtimeDir);
    const warnings: string[] = [];
    const nat = ctx.config.network.some((n) => n.mode === 'nat');
    const passt = nat ? passtPath() : undefined;
    if (nat && !passt) warnings.push(PASST_MISSING);
    const plan = { qemuPath, caps, accel, firmware, passt, warnings };
    // Building the command line validates every user string (control characters) without side effects.
    buildQemuArgs(this.argsInput(ctx, plan));
    return plan;
  }

  private argsInput(ctx: EngineContext, plan: LaunchPlan, opts: { paused?: boolean } = {}) {
    return {
      config: ctx.config,
      bundleDir: ctx.bundleDir,
      runtimeDir: ctx.runtimeDir,
      accel: plan.accel.used,
      capabilities: { sandbox: plan.caps.sandbox, passt: !!plan.passt },
      ...(plan.firmware ? { uefi: { code: plan.firmware.code, vars: bundleFiles(ctx.bundleDir).uefiVars } } : {}),
      // The guest runs from the first instant (no -S round trip through QMP): output printed before the
      // supervisor attaches to the serial socket is still in serial.log, which QEMU itself writes.
      paused: opts.paused === true,
    };
  }

  async start(ctx: EngineContext, opts: { paused?: boolean } = {}): Promise<StartResult> {
    const plan = await this.plan(ctx);
    const existing = await this.attach(ctx);
    if (existing) {
      existing.close();
      throw new VmdeskError(ErrorCode.state, `"${ctx.config.name}" is already running`);
    }
    await checkHostPortsFree(ctx.config.network.filter((n) => n.mode !== 'none').flatMap((n) => n.forwards), ctx.config.name);
    const files = bundleFiles(ctx.bundleDir);
    const rt = runtimeFiles(ctx.runtimeDir);
    mkdirSync(ctx.runtimeDir, { recursive: true, mode: 0o700 });
    chmodSync(ctx.runtimeDir, 0o700);
    mkdirSync(files.logs, { recursive: true });
    for (const log of [files.qemuLog, files.serialLog, files.supervisorLog]) rotateLog(log);
    if (plan.firmware && !existsSync(files.uefiVars)) {
      // The VM's own UEFI variable store, as qcow2 so snapshots include it.
      await run(qemuImgPath(), ['convert', '-q', '-f', 'raw', '-O', 'qcow2', plan.firmware.varsTemplate, files.uefiVars]);
    }
    const spec: LaunchSpec = {
      vmId: ctx.config.id,
      vmName: ctx.config.name,
      qemuPath: plan.qemuPath,
      args: buildQemuArgs(this.argsInput(ctx, plan, opts)),
      bundleDir: ctx.bundleDir,
      runtimeDir: ctx.runtimeDir,
      accel: plan.accel,
      startPaused: opts.paused === true,
      ...(plan.passt
        ? { passt: { path: plan.passt, adapters: ctx.config.network.flatMap((n, index) => (n.mode === 'nat' ? [{ index, forwards: n.forwards }] : [])) } }
        : {}),
    };
    const specPath = join(ctx.runtimeDir, 'launch.json');
    writeFileSync(specPath, JSON.stringify(spec, null, 2) + '\n', { mode: 0o600 });
    for (const p of [rt.control, rt.supervisorRecord]) rmSync(p, { force: true });

    const out = openSync(files.supervisorLog, 'a');
    const env = { ...process.env };
    delete env.NODE_OPTIONS; // the caller's loaders/inspectors are not the supervisor's business
    // Inside Electron, execPath is the app binary: make it behave as plain Node for the supervisor.
    if (process.versions.electron) env.ELECTRON_RUN_AS_NODE = '1';
    const child = spawn(process.execPath, [...supervisorCommand(), specPath], {
      detached: true,
      stdio: ['ignore', out, out],
      cwd: ctx.bundleDir,
      env,
    });
    closeSync(out);
    let supervisorExit: string | undefined;
    child.on('exit', (code, signal) => (supervisorExit = signal ? `signal ${signal}` : `exit code ${code}`));
    child.on('error', (e) => (supervisorExit = e.message));
    child.unref();

    const failure = (message: string, cause?: VmdeskError) =>
      new VmdeskError(ErrorCode.engine, message, cause?.details.length ? cause.details : logTail(files.qemuLog, 20, true).concat(logTail(files.supervisorLog, 5)));

    // Wait for the control socket (or for the supervisor to give up).
    const deadline = Date.now() + CONTROL_CONNECT_TIMEOUT_MS;
    let sock: Socket | undefined;
    while (!sock) {
      if (supervisorExit !== undefined) {
        const rec = await readExitRecord(ctx.bundleDir);
        throw failure(`QEMU failed to start${rec?.detail ? `: ${rec.detail}` : ` (supervisor ${supervisorExit})`}`);
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw failure(`the VM supervisor did not come up within ${CONTROL_CONNECT_TIMEOUT_MS} ms`);
      }
      if (existsSync(rt.control)) sock = await connectUnixSocket(rt.control).catch(() => undefined);
      if (!sock) await new Promise((r) => setTimeout(r, 50));
    }
    const handle = new QemuVmHandle(sock, ctx.bundleDir, ctx.runtimeDir);
    try {
      await handle.request({ cmd: 'wait-started' }, START_TIMEOUT_MS);
      await handle.loadInfo();
    } catch (e) {
      const err = e instanceof VmdeskError ? e : undefined;
      if (err?.code === ErrorCode.timeout) await handle.kill().catch(() => undefined);
      handle.close();
      throw failure(`QEMU failed to start: ${(e as Error).message}`, err);
    }
    return { handle, accel: handle.accel, warnings: plan.warnings };
  }

  async attach(ctx: EngineContext): Promise<VmHandle | null> {
    const rt = runtimeFiles(ctx.runtimeDir);
    if (!existsSync(rt.control)) {
      await recordDeadSupervisor(ctx);
      return null;
    }
    let sock: Socket;
    try {
      sock = await connectUnixSocket(rt.control);
    } catch {
      // Nobody listens: a supervisor that died without cleaning up.
      await recordDeadSupervisor(ctx);
      return null;
    }
    const handle = new QemuVmHandle(sock, ctx.bundleDir, ctx.runtimeDir);
    try {
      const info = await handle.loadInfo();
      if (info.vmId !== ctx.config.id) {
        handle.close();
        throw new VmdeskError(ErrorCode.busy, `runtime directory ${ctx.runtimeDir} belongs to another VM (${info.vmId})`);
      }
      if (info.state === 'stopped' || info.state === 'crashed') {
        handle.close(); // QEMU has exited; the supervisor is finishing its replies
        return null;
      }
      return handle;
    } catch (e) {
      handle.close();
      if (e instanceof VmdeskError && e.code === ErrorCode.busy) throw e;
      return null; // the supervisor is exiting
    }
  }
}

interface PendingRequest {
  cmd: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

type RequestBody = ControlRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

/** A VmHandle over the supervisor's control socket; several may exist for one VM (CLI, app, server). */
export class QemuVmHandle implements VmHandle {
  private info: SupervisorInfo | undefined;
  private nextId = 1;
  private buffer = '';
  private readonly pending = new Map<number, PendingRequest>();
  private readonly listeners = new Set<(name: string, data: unknown) => void>();
  private closed = false;
  private closedByUser = false;
  private exitPromise: Promise<ExitRecord> | undefined;
  private lastExit: ExitRecord | undefined;
  readonly vncSocket: string;

  constructor(
    private readonly sock: Socket,
    private readonly bundleDir: string,
    private readonly runtimeDir: string,
  ) {
    this.vncSocket = runtimeFiles(runtimeDir).vnc;
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('error', () => {});
    sock.on('close', () => this.onClose());
  }

  /** QEMU's process id. */
  get pid(): number {
    return this.requireInfo().qemuPid;
  }

  get supervisorPid(): number {
    return this.requireInfo().pid;
  }

  get accel(): AccelChoice {
    return this.requireInfo().accel;
  }

  get startedAt(): string {
    return this.requireInfo().startedAt;
  }

  private requireInfo(): SupervisorInfo {
    if (!this.info) throw new VmdeskError(ErrorCode.internal, 'VM handle used before it was connected');
    return this.info;
  }

  async loadInfo(): Promise<SupervisorInfo> {
    this.info = (await this.request({ cmd: 'info' }, 10_000)) as SupervisorInfo;
    return this.info;
  }

  request(body: RequestBody, timeoutMs: number | undefined = 30_000): Promise<unknown> {
    if (this.closed) return Promise.reject(new VmdeskError(ErrorCode.state, 'the VM is not running (its supervisor connection is closed)'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this.pending.delete(id);
              reject(new VmdeskError(ErrorCode.timeout, `${body.cmd} timed out after ${timeoutMs} ms`));
            }, timeoutMs);
      this.pending.set(id, { cmd: body.cmd, resolve, reject, timer });
      this.sock.write(JSON.stringify({ ...body, id }) + '\n');
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      let msg: ControlMessage;
      try {
        msg = JSON.parse(line) as ControlMessage;
      } catch {
        continue;
      }
      if ('id' in msg) {
        const p = this.pending.get(msg.id);
        if (!p) continue;
        this.pending.delete(msg.id);
        if (p.timer) clearTimeout(p.timer);
        if (msg.ok) p.resolve(msg.result);
        else p.reject(new VmdeskError((msg.error.code as VmdeskError['code']) ?? ErrorCode.engine, msg.error.message, msg.error.details ?? []));
      } else if ('event' in msg) {
        this.emit(msg.event, msg.data);
      } else if ('state' in msg) {
        this.emit(STATE_EVENT, { state: msg.state });
      } else if ('exit' in msg) {
        this.lastExit = msg.exit;
        this.emit(EXIT_EVENT, msg.exit);
      }
    }
  }

  private emit(name: string, data: unknown): void {
    for (const fn of this.listeners) {
      try {
        fn(name, data);
      } catch {
        // a listener's bug must not break the connection
      }
    }
  }

  private onClose(): void {
    this.closed = true;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      if (p.timer) clearTimeout(p.timer);
      // Requests that wait for the exit are answered by the record the supervisor wrote before leaving.
      if (this.closedByUser) {
        p.reject(new VmdeskError(ErrorCode.cancelled, `${p.cmd}: the VM handle was closed`));
      } else if (p.cmd === 'wait-exit' || p.cmd === 'shutdown' || p.cmd === 'kill') {
        void this.exitFromDisk().then(p.resolve, p.reject);
      } else {
        p.reject(new VmdeskError(ErrorCode.state, `${p.cmd}: the VM's supervisor went away (the VM has stopped)`));
      }
    }
  }

  private async exitFromDisk(): Promise<ExitRecord> {
    if (this.lastExit) return this.lastExit;
    const rec = await readExitRecord(this.bundleDir);
    if (rec) return rec;
    return { at: new Date().toISOString(), reason: 'unknown', detail: 'the supervisor exited without an exit record', logTail: logTail(bundleFiles(this.bundleDir).qemuLog) };
  }

  async state(): Promise<VmState> {
    if (this.closed) {
      const rec = await this.exitFromDisk();
      return rec.reason === 'crashed' ? 'crashed' : 'stopped';
    }
    const r = (await this.request({ cmd: 'state' }, 10_000)) as { state: VmState };
    return r.state;
  }

  async pause(): Promise<void> {
    await this.request({ cmd: 'pause' });
  }

  async resume(): Promise<void> {
    await this.request({ cmd: 'resume' });
  }

  async reset(): Promise<void> {
    await this.request({ cmd: 'reset' });
  }

  async shutdown(timeoutMs: number): Promise<ExitRecord> {
    if (this.closed) return this.exitFromDisk();
    return (await this.request({ cmd: 'shutdown', timeoutMs }, timeoutMs + 30_000)) as ExitRecord;
  }

  async kill(): Promise<ExitRecord> {
    if (this.closed) return this.exitFromDisk();
    return (await this.request({ cmd: 'kill' }, 30_000)) as ExitRecord;
  }

  exited(): Promise<ExitRecord> {
    this.exitPromise ??= this.closed ? this.exitFromDisk() : (this.request({ cmd: 'wait-exit' }, undefined) as Promise<ExitRecord>);
    return this.exitPromise;
  }

  /** A raw console stream; replay (default true) first sends the recent output (up to 64 KiB). */
  async openSerial(opts: { replay?: boolean } = {}): Promise<Duplex> {
    return openControlStream(runtimeFiles(this.runtimeDir).control, { id: 1, cmd: 'serial', replay: opts.replay !== false }, 'serial console');
  }

  command(execute: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<unknown> {
    return this.request({ cmd: 'qmp', execute, ...(args ? { arguments: args } : {}), timeoutMs }, timeoutMs + 5_000);
  }

  onEvent(fn: (name: string, data: unknown) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close(): void {
    if (this.closed) return;
    this.closedByUser = true;
    this.sock.destroy();
    this.onClose();
  }
}

