// fakevm: a third engine, written in a test and added through the registry alone. Its guest is a real child
// process (fake-guest.mjs) started detached, so it outlives the daemon that started it and a later daemon
// adopts it from its runtime record, as QEMU is. Serial console and control ("QMP") are unix sockets the guest
// serves; the guest appends its console output to the bundle's serial log itself. How a guest ended is
// classified from the exit status (our child), the guest's own note, and what was asked of it, and written to
// logs/last-exit.json. Snapshots are 'full' (memory and disks together) and offline, kept as files: a copy of
// every raw disk and the guest's memory per snapshot tag under <bundle>/fakevm-snapshots/<tag>/.
//
// Nothing outside this file and the registry knows it exists: register it with registerEngine(fakeVmEngine)
// in the process that runs the daemon.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  promises as fs,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AccelChoice, ExitRecord, VmState } from '../../main/api/schema.js';
import { ErrorCode, VmdeskError } from '../../main/api/errors.js';
import type { DiskProvider, EngineContext, EngineModule, SerialPort, SnapshotProvider, SnapshotRef, StoredSnapshots, VmRuntime } from '../../main/engines/engine.js';
import { connectUnixSocket, processRunning, processStartTime } from '../../main/platform/process.js';

export const FAKEVM_KIND = 'fakevm';
export const FAKEVM_READY = 'FAKEVM-READY';
export const GUEST_SCRIPT = fileURLToPath(new URL('./fake-guest.mjs', import.meta.url));

/** How long the guest takes to "boot" (its power button is ignored until then); `fakevm.boot_ms=N` on the VM's kernel command line says otherwise. */
const BOOT_MS = 150;

function bootMs(ctx: EngineContext): number {
  const m = /(?:^|\s)fakevm\.boot_ms=(\d+)(?:\s|$)/.exec(ctx.config.directKernel?.cmdline ?? '');
  return m ? Number(m[1]) : BOOT_MS;
}

interface RuntimeFiles {
  serial: string;
  control: string;
  record: string;
  /** The guest's own word on how it ended. */
  note: string;
}

function runtimeFiles(runtimeDir: string): RuntimeFiles {
  return {
    serial: path.join(runtimeDir, 'serial.sock'),
    control: path.join(runtimeDir, 'control.sock'),
    record: path.join(runtimeDir, 'fakevm.json'),
    note: path.join(runtimeDir, 'guest-exit.json'),
  };
}

function bundleFiles(bundleDir: string) {
  const logs = path.join(bundleDir, 'logs');
  return { logs, guestLog: path.join(logs, 'fakevm.log'), serialLog: path.join(logs, 'serial.log'), lastExit: path.join(logs, 'last-exit.json') };
}

/** <runtimeDir>/fakevm.json: enough for a later daemon to find and adopt the guest. */
interface FakeRecord {
  vmId: string;
  pid: number;
  startTime: string;
  startedAt: string;
  serialLogOffset: number;
}

function readRecord(ctx: EngineContext): FakeRecord | undefined {
  try {
    const r = JSON.parse(readFileSync(runtimeFiles(ctx.runtimeDir).record, 'utf8')) as FakeRecord;
    return r.vmId === ctx.config.id && Number.isSafeInteger(r.pid) && r.pid > 0 ? r : undefined;
  } catch {
    return undefined;
  }
}

function readNote(ctx: EngineContext): { how: string } | undefined {
  try {
    return JSON.parse(readFileSync(runtimeFiles(ctx.runtimeDir).note, 'utf8')) as { how: string };
  } catch {
    return undefined;
  }
}

function clearRuntimeFiles(ctx: EngineContext): void {
  for (const p of Object.values(runtimeFiles(ctx.runtimeDir))) rmSync(p, { force: true });
}

function writeJson(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  renameSync(tmp, file);
}

function diskFiles(ctx: EngineContext): { id: string; file: string; readOnly: boolean }[] {
  return ctx.config.disks.map((d) => ({ id: d.id, file: path.isAbsolute(d.path) ? d.path : path.join(ctx.bundleDir, d.path), readOnly: d.readOnly }));
}

const ACCEL: AccelChoice = { requested: 'auto', used: 'tcg', reason: 'fakevm: a Node process plays the guest' };

async function retry<T>(fn: () => Promise<T>, alive: () => boolean, deadline: number): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (!/ECONNREFUSED|ENOENT/.test((e as Error).message) || !alive() || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

type StopIntent = 'shutdown' | 'kill';

/** The guest as the daemon holds it: the control and serial connections, the state, and how it ended. */
export class FakeVmRuntime extends EventEmitter implements VmRuntime {
  state: VmState = 'starting';
  readonly serial: SerialPort;
  readonly exited: Promise<ExitRecord>;
  private settle!: (r: ExitRecord) => void;
  private exitRecord: ExitRecord | undefined;
  private control: Socket | undefined;
  private serialSock: Socket | undefined;
  private readonly serialListeners = new Set<(chunk: Buffer) => void>();
  private readonly replies = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private nextId = 1;
  private stopIntent: StopIntent | undefined;
  private forcedOff: number | undefined;
  private detached = false;
  child: ChildProcess | undefined;

  constructor(
    private readonly ctx: EngineContext,
    private readonly record: FakeRecord,
    readonly adopted: boolean,
  ) {
    super();
    this.exited = new Promise((r) => (this.settle = r));
    const self = this;
    this.serial = {
      logFile: bundleFiles(ctx.bundleDir).serialLog,
      logStart: record.serialLogOffset,
      write: (data) => (self.serialSock ? self.serialSock.write(data) : true),
      onceDrain: (fn) => {
        if (self.serialSock?.writableNeedDrain) self.serialSock.once('drain', fn);
        else queueMicrotask(fn);
      },
      onData: (fn) => {
        self.serialListeners.add(fn);
        return () => self.serialListeners.delete(fn);
      },
    };
  }

  get pid(): number {
    return this.record.pid;
  }
  get accel(): AccelChoice {
    return ACCEL;
  }
  get startedAt(): string {
    return this.record.startedAt;
  }
  get warnings(): readonly string[] {
    return [];
  }

  private isAlive = (): boolean => !this.exitRecord && processRunning(this.record.pid, this.record.startTime || undefined);

  /** Connects the serial console and the control socket (the guest binds them a moment after it starts). */
  async attach(deadline: number): Promise<void> {
    const files = runtimeFiles(this.ctx.runtimeDir);
    const serial = await retry(() => connectUnixSocket(files.serial), this.isAlive, deadline);
    this.serialSock = serial;
    serial.on('data', (chunk: Buffer) => {
      for (const fn of this.serialListeners) fn(chunk);
    });
    serial.on('error', () => {});
    serial.on('close', () => {
      if (this.serialSock === serial) this.serialSock = undefined;
    });
    const control = await retry(() => connectUnixSocket(files.control), this.isAlive, deadline);
    this.control = control;
    let buf = '';
    let greeted!: () => void;
    const hello = new Promise<void>((r) => (greeted = r));
    control.on('data', (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as { hello?: string; id?: number; ok?: boolean; result?: unknown; error?: string; event?: string; data?: { how?: string } };
        buf = buf.slice(nl + 1);
        if (msg.hello) greeted();
        else if (msg.event) this.onEvent(msg.event);
        else if (msg.id !== undefined) {
          const p = this.replies.get(msg.id);
          this.replies.delete(msg.id);
          if (msg.ok) p?.resolve(msg.result);
          else p?.reject(new VmdeskError(ErrorCode.engine, `fakevm: ${msg.error}`));
        }
      }
    });
    control.on('error', () => {});
    control.on('close', () => this.onControlClose());
    await hello;
  }

  /** One request on the control socket. */
  command<T = unknown>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    if (this.exitRecord) return Promise.reject(new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" has stopped`));
    if (this.detached) return Promise.reject(new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" is watched by another VMDesk daemon now`));
    const sock = this.control;
    if (!sock || sock.destroyed) return Promise.reject(new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" is not reachable (its control connection is closed)`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.replies.set(id, { resolve: resolve as (v: unknown) => void, reject });
      sock.write(JSON.stringify({ id, cmd, ...args }) + '\n');
    });
  }

  private onEvent(name: string): void {
    if (name === 'STOP' && this.state === 'running') this.setState('paused');
    else if (name === 'RESUME' && (this.state === 'paused' || this.state === 'starting')) this.setState('running');
    else if (name === 'SHUTDOWN') this.setState('stopping');
  }

  setState(s: VmState): void {
    if (this.state === s || this.exitRecord) return;
    this.state = s;
    this.emit('state', s);
  }

  onState(fn: (s: VmState) => void): () => void {
    this.on('state', fn);
    return () => this.off('state', fn);
  }

  /** The control socket closes when the guest exits; one that is not our child is watched until it is gone. */
  private onControlClose(): void {
    for (const p of this.replies.values()) p.reject(new VmdeskError(ErrorCode.engine, 'fakevm: the guest closed its control connection'));
    this.replies.clear();
    if (this.detached || this.exitRecord || this.child) return;
    void (async () => {
      for (let i = 0; i < 200 && processRunning(this.record.pid, this.record.startTime || undefined); i++) await new Promise((r) => setTimeout(r, 25));
      this.onExit(null, null);
    })();
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
    await this.command('reset');
  }

  async shutdown(timeoutMs: number): Promise<ExitRecord> {
    if (this.exitRecord) return this.exitRecord;
    if (this.detached) throw new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" is watched by another VMDesk daemon now`);
    if (this.stopIntent) return this.exited;
    this.stopIntent = 'shutdown';
    const ms = Number.isFinite(timeoutMs) && timeoutMs >= 0 ? timeoutMs : 60_000;
    const force = setTimeout(() => {
      this.forcedOff = ms;
      this.signal('SIGKILL');
    }, ms);
    void this.exited.finally(() => clearTimeout(force));
    this.setState('stopping');
    try {
      // A paused guest cannot see the power button.
      const st = await this.command<{ paused: boolean }>('status');
      if (st.paused) await this.command('cont');
      await this.command('powerdown');
    } catch {
      // not answering: the timeout forces it off
    }
    return this.exited;
  }

  async kill(): Promise<ExitRecord> {
    if (this.exitRecord) return this.exitRecord;
    if (this.detached) throw new VmdeskError(ErrorCode.state, `"${this.ctx.config.name}" is watched by another VMDesk daemon now`);
    if (this.stopIntent === 'shutdown') this.forcedOff = 0;
    else this.stopIntent = 'kill';
    this.setState('stopping');
    this.signal('SIGKILL');
    return this.exited;
  }

  private signal(sig: NodeJS.Signals): void {
    try {
      process.kill(this.record.pid, sig);
    } catch {
      /* gone */
    }
  }

  detach(): void {
    if (this.exitRecord) return;
    this.detached = true;
    this.control?.destroy();
    this.serialSock?.destroy();
    this.child?.removeAllListeners('exit');
  }

  private classify(code: number | null, signal: NodeJS.Signals | null): Pick<ExitRecord, 'reason' | 'detail'> {
    const how = signal ? `signal ${signal}` : code === null ? 'exit status unknown' : `exit code ${code}`;
    const note = readNote(this.ctx);
    if (this.stopIntent === 'kill') return { reason: 'killed', detail: 'forced off' };
    if (this.stopIntent === 'shutdown') {
      if (this.forcedOff !== undefined) return { reason: 'killed', detail: `the guest did not power off within ${this.forcedOff} ms; forced off` };
      return { reason: 'shutdown', detail: note?.how === 'powerdown' ? 'power button; the guest shut down' : `the guest exited (${how})` };
    }
    if (this.state === 'starting') return { reason: 'crashed', detail: `the guest exited during start-up (${how})` };
    if (note?.how === 'poweroff') return { reason: 'guest-poweroff', detail: 'the guest powered off' };
    if (note?.how === 'host-signal') return { reason: 'host-signal', detail: `the guest was stopped by a host signal (${how})` };
    if (note) return { reason: 'shutdown', detail: `the guest exited (${note.how})` };
    if (signal || (code !== null && code !== 0)) return { reason: 'crashed', detail: `the guest died unexpectedly (${how})` };
    return { reason: 'crashed', detail: 'the guest exited without telling why' };
  }

  onExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exitRecord || this.detached) return;
    const { reason, detail } = this.classify(code, signal);
    const record: ExitRecord = { at: new Date().toISOString(), reason, detail, exitCode: code, signal, logTail: guestLogTail(this.ctx) };
    this.exitRecord = record;
    try {
      writeJson(bundleFiles(this.ctx.bundleDir).lastExit, record);
    } catch {
      /* the daemon still reports it */
    }
    clearRuntimeFiles(this.ctx);
    this.control?.destroy();
    this.serialSock?.destroy();
    this.state = reason === 'crashed' ? 'crashed' : 'stopped';
    this.emit('state', this.state);
    this.settle(record);
  }
}

function guestLogTail(ctx: EngineContext): string[] {
  try {
    return readFileSync(bundleFiles(ctx.bundleDir).guestLog, 'utf8').split('\n').filter(Boolean).slice(-20);
  } catch {
    return [];
  }
}

// ---- snapshots: files under <bundle>/fakevm-snapshots/<tag>/ ------------------------------------------------

function snapRoot(ctx: EngineContext): string {
  return path.join(ctx.bundleDir, 'fakevm-snapshots');
}

function tagDir(ctx: EngineContext, tag: string): string {
  return path.join(snapRoot(ctx), tag);
}

function asFake(rt: VmRuntime): FakeVmRuntime {
  if (!(rt instanceof FakeVmRuntime)) throw new VmdeskError(ErrorCode.internal, 'not a fakevm runtime');
  return rt;
}

/** Copies the targets into a new tag directory, appearing whole (written aside, then renamed). */
async function saveFiles(ctx: EngineContext, snap: SnapshotRef, withMemory: (dir: string) => Promise<number>): Promise<{ vmStateBytes: number; targets: string[] }> {
  const { targets, unsupported } = snapshots.targets(ctx);
  if (unsupported[0]) throw new VmdeskError(ErrorCode.invalid, `disk ${unsupported[0].diskId} of "${ctx.config.name}" cannot hold snapshots: ${unsupported[0].hint}`);
  const dest = tagDir(ctx, snap.tag);
  if (existsSync(dest)) throw new VmdeskError(ErrorCode.exists, `snapshot ${snap.tag} already exists`);
  const partial = `${dest}.partial`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true, mode: 0o700 });
  try {
    const vmStateBytes = await withMemory(partial);
    for (const t of targets) copyFileSync(t.file, path.join(partial, `${t.id}.img`));
    renameSync(partial, dest);
    return { vmStateBytes, targets: targets.map((t) => t.id) };
  } catch (e) {
    rmSync(partial, { recursive: true, force: true });
    throw e;
  }
}

/** Writes the saved disk contents back into the disks (in place: a running guest keeps its open files). */
function applyFiles(ctx: EngineContext, snap: SnapshotRef): void {
  const dir = tagDir(ctx, snap.tag);
  for (const t of snapshots.targets(ctx).targets) {
    const saved = path.join(dir, `${t.id}.img`);
    if (!existsSync(saved)) throw new VmdeskError(ErrorCode.broken, `snapshot ${snap.tag} holds no copy of disk ${t.id}`);
    copyFileSync(saved, t.file);
  }
}

const snapshots: SnapshotProvider = {
  targets(ctx) {
    const targets = [];
    const unsupported = [];
    for (const d of ctx.config.disks) {
      if (d.readOnly) continue;
      if (d.format !== 'raw') unsupported.push({ diskId: d.id, format: d.format, hint: 'the fakevm engine snapshots raw disks only' });
      else targets.push({ id: d.id, file: path.isAbsolute(d.path) ? d.path : path.join(ctx.bundleDir, d.path), format: d.format });
    }
    return { targets, unsupported };
  },

  async saveLive(rt, ctx, snap) {
    const f = asFake(rt);
    // The guest stands still while its memory and disks are copied, then runs on if it ran.
    const wasRunning = f.state === 'running';
    if (wasRunning) await f.pause();
    try {
      return await saveFiles(ctx, snap, async (dir) => (await f.command<{ bytes: number }>('save', { file: path.join(dir, 'vmstate.json') })).bytes);
    } finally {
      if (wasRunning) await f.resume().catch(() => {});
    }
  },

  async loadLive(rt, ctx, snap) {
    const f = asFake(rt);
    const mem = path.join(tagDir(ctx, snap.tag), 'vmstate.json');
    if (!existsSync(mem)) throw new VmdeskError(ErrorCode.broken, `snapshot ${snap.tag} holds no memory (a disk-only snapshot)`);
    if (f.state === 'running') await f.pause();
    applyFiles(ctx, snap);
    // The guest ends paused: the core resumes it.
    await f.command('load', { file: mem });
    f.setState('paused');
  },

  async deleteLive(_rt, ctx, snap) {
    rmSync(tagDir(ctx, snap.tag), { recursive: true, force: true });
  },

  async saveOffline(ctx, snap) {
    const r = await saveFiles(ctx, snap, async () => 0);
    return { targets: r.targets };
  },

  async applyOffline(ctx, snap) {
    applyFiles(ctx, snap);
  },

  async deleteOffline(ctx, snap) {
    rmSync(tagDir(ctx, snap.tag), { recursive: true, force: true });
  },

  async stored(ctx) {
    const out: StoredSnapshots = new Map();
    const root = snapRoot(ctx);
    if (!existsSync(root)) return out;
    const ids = snapshots.targets(ctx).targets.map((t) => t.id);
    for (const tag of readdirSync(root)) {
      if (tag.endsWith('.partial')) continue;
      const dir = path.join(root, tag);
      const mem = path.join(dir, 'vmstate.json');
      const memBytes = existsSync(mem) ? statSync(mem).size : 0;
      const holders = new Map<string, { vmStateBytes: number; dateSec: number }>();
      ids.forEach((id) => {
        const f = path.join(dir, `${id}.img`);
        if (!existsSync(f)) return;
        // The memory is counted once, on the first disk.
        holders.set(id, { vmStateBytes: holders.size === 0 ? memBytes : 0, dateSec: Math.floor(statSync(dir).mtimeMs / 1000) });
      });
      if (holders.size) out.set(tag, holders);
    }
    return out;
  },

  async busy() {
    return [];
  },

  async recover() {},
};

// ---- disks: raw files -------------------------------------------------------------------------------------

/** Pids of fakevm guests that hold `file` open (what QEMU's image locking tells qemu-img). */
function holders(file: string): number[] {
  let real: string;
  try {
    real = realpathSync(file);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let cl = '';
    try {
      cl = readFileSync(`/proc/${name}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!cl.includes(GUEST_SCRIPT)) continue;
    try {
      for (const fd of readdirSync(`/proc/${name}/fd`)) {
        if (readlinkSync(`/proc/${name}/fd/${fd}`) === real) {
          out.push(Number(name));
          break;
        }
      }
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

const disks: DiskProvider = {
  async create(file, bytes) {
    const fh = await fs.open(file, 'wx', 0o600);
    try {
      await fh.truncate(bytes);
    } finally {
      await fh.close();
    }
  },
  async resize(file, _format, bytes) {
    const size = statSync(file).size;
    if (bytes < size) throw new VmdeskError(ErrorCode.invalid, `shrinking a disk is not supported (${size} to ${bytes} bytes)`);
    await fs.truncate(file, bytes);
  },
  async info(file) {
    const st = statSync(file);
    return { virtualSize: st.size, actualSize: st.blocks * 512 };
  },
  async checkFree(file) {
    const pids = holders(file);
    if (pids.length) throw new VmdeskError(ErrorCode.busy, `disk "${file}" is in use by a running fakevm guest (pid ${pids.join(', ')})`);
  },
};

// ---- the module -------------------------------------------------------------------------------------------

export const fakeVmEngine: EngineModule = {
  kind: FAKEVM_KIND,
  description: 'fakevm: a test engine whose guest is a Node process (serial and control over unix sockets)',
  capabilities: {
    display: false,
    liveSnapshots: 'full',
    offlineSnapshots: true,
    diskFormats: ['raw'],
    nativeDiskFormat: 'raw',
    linkedClones: false,
    directKernelOnly: false,
    acpi: true,
    diskBuses: ['virtio'],
    nicModels: ['virtio-net'],
    networkModes: ['none'],
  },

  validate(config) {
    if (config.network.some((n) => n.mode !== 'none')) throw new VmdeskError(ErrorCode.invalid, 'the fakevm engine has no network: use network mode "none"');
    const bad = config.disks.find((d) => d.format !== 'raw');
    if (bad) throw new VmdeskError(ErrorCode.invalid, `disk ${bad.id} is ${bad.format}; the fakevm engine opens raw disks only`);
  },

  async check(ctx) {
    return { accel: { ...ACCEL, requested: ctx.config.accel }, warnings: [] };
  },

  async start(ctx, opts = {}) {
    const rec0 = readRecord(ctx);
    if (rec0 && processRunning(rec0.pid, rec0.startTime || undefined)) throw new VmdeskError(ErrorCode.state, `"${ctx.config.name}" is already running`);
    const files = runtimeFiles(ctx.runtimeDir);
    const bundle = bundleFiles(ctx.bundleDir);
    mkdirSync(ctx.runtimeDir, { recursive: true, mode: 0o700 });
    mkdirSync(bundle.logs, { recursive: true, mode: 0o700 });
    clearRuntimeFiles(ctx);
    const serialLogOffset = existsSync(bundle.serialLog) ? statSync(bundle.serialLog).size : 0;
    const spec = {
      serialSock: files.serial,
      controlSock: files.control,
      serialLog: bundle.serialLog,
      note: files.note,
      disks: diskFiles(ctx).map((d) => d.file),
      paused: opts.paused === true,
      bootMs: bootMs(ctx),
    };
    const log = openSync(bundle.guestLog, 'a');
    let child: ChildProcess;
    try {
      // Detached, output to its log, nothing tying it to us: it must survive the daemon.
      child = spawn(process.execPath, [GUEST_SCRIPT, JSON.stringify(spec)], { detached: true, stdio: ['ignore', log, log], cwd: ctx.bundleDir });
    } finally {
      closeSync(log);
    }
    child.unref();
    const pid = child.pid;
    if (!pid) throw new VmdeskError(ErrorCode.host, 'the fakevm guest could not be started');
    const record: FakeRecord = { vmId: ctx.config.id, pid, startTime: processStartTime(pid) ?? '', startedAt: new Date().toISOString(), serialLogOffset };
    writeJson(files.record, record);
    const rt = new FakeVmRuntime(ctx, record, false);
    rt.child = child;
    child.on('exit', (code, signal) => rt.onExit(code, signal));
    try {
      await rt.attach(Date.now() + 20_000);
    } catch (e) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      const exit = await rt.exited;
      throw new VmdeskError(ErrorCode.engine, `the fakevm guest failed to start: ${(e as Error).message}`, exit.logTail);
    }
    rt.setState(opts.paused ? 'paused' : 'running');
    return rt;
  },

  async adopt(ctx) {
    const record = readRecord(ctx);
    if (!record || !processRunning(record.pid, record.startTime || undefined)) return null;
    const rt = new FakeVmRuntime(ctx, record, true);
    try {
      await rt.attach(Date.now() + 10_000);
      const st = await rt.command<{ paused: boolean; stopping: boolean }>('status');
      rt.setState(st.stopping ? 'stopping' : st.paused ? 'paused' : 'running');
    } catch {
      rt.detach();
      return null;
    }
    return rt;
  },

  async reapOrphan(ctx) {
    const record = readRecord(ctx);
    if (!record || processRunning(record.pid, record.startTime || undefined)) return undefined;
    const note = readNote(ctx);
    const exit: ExitRecord = {
      at: new Date().toISOString(),
      reason: note?.how === 'poweroff' ? 'guest-poweroff' : 'unknown',
      detail: note ? `the guest ended (${note.how}) while no VMDesk daemon was watching it` : 'the guest ended while no VMDesk daemon was watching it',
      exitCode: null,
      signal: null,
      logTail: guestLogTail(ctx),
    };
    writeJson(bundleFiles(ctx.bundleDir).lastExit, exit);
    clearRuntimeFiles(ctx);
    return exit;
  },

  snapshots,
  disks,
};
