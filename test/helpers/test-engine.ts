// A guest without a hypervisor, for daemon and front-door tests that need a running VM to hold things open:
// an engine registered under its own kind, whose "guest" is a serial console the test writes to and reads
// from, an optional VNC socket, and gates that hold a start, a power-off or a screenshot for as long as a
// test needs. The daemon runs in the test's process, so it finds this engine in the same registry; nothing
// of the daemon is replaced.
import { EventEmitter } from 'node:events';
import { promises as fs, statSync } from 'node:fs';
import path from 'node:path';
import type { ExitRecord, VmState } from '../../main/api/schema.js';
import type { EngineContext, EngineModule, SerialPort, VmRuntime } from '../../main/engines/engine.js';
import { registerEngine, unregisterEngine } from '../../main/engines/registry.js';

export const TEST_ENGINE = 'testvm';

/** Holds callers until opened; open() lets every waiting and later caller through until closed again. */
export class Gate {
  private waiting: (() => void)[] = [];
  private isOpen = true;
  /** Callers waiting right now. */
  get held(): number {
    return this.waiting.length;
  }
  close(): void {
    this.isOpen = false;
  }
  open(): void {
    this.isOpen = true;
    for (const w of this.waiting.splice(0)) w();
  }
  pass(): Promise<void> {
    if (this.isOpen) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

/**
 * The guest's serial console. Output: print() hands bytes to the daemon as a guest would. Input: what the
 * daemon writes is queued until the test takes it (take()), and write() says false above `inputHighWater`,
 * as a guest that does not read its console does.
 */
export class TestSerial implements SerialPort {
  readonly logStart: number;
  private listeners = new Set<(chunk: Buffer) => void>();
  private drainWaiters: (() => void)[] = [];
  private queue: Buffer[] = [];
  queuedBytes = 0;
  /** Everything taken from the input queue so far. */
  received = 0;
  inputHighWater = 256 * 1024;

  constructor(readonly logFile: string) {
    this.logStart = size(logFile);
  }

  write(data: Buffer): boolean {
    this.queue.push(data);
    this.queuedBytes += data.length;
    return this.queuedBytes < this.inputHighWater;
  }

  onceDrain(fn: () => void): void {
    if (this.queuedBytes < this.inputHighWater) queueMicrotask(fn);
    else this.drainWaiters.push(fn);
  }

  onData(fn: (chunk: Buffer) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Output subscribers right now (the daemon's hub subscribes once per run). */
  get subscribers(): number {
    return this.listeners.size;
  }

  /** The guest prints: the bytes go to whoever holds the console (the daemon's hub). */
  print(data: Buffer | string): void {
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
    for (const fn of this.listeners) fn(buf);
  }

  /** The guest reads everything typed so far. */
  take(): Buffer {
    const all = Buffer.concat(this.queue);
    this.queue = [];
    this.received += all.length;
    this.queuedBytes = 0;
    for (const fn of this.drainWaiters.splice(0)) fn();
    return all;
  }
}

function size(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

export class TestGuest extends EventEmitter implements VmRuntime {
  readonly pid = process.pid;
  readonly accel = { requested: 'auto' as const, used: 'tcg' as const, reason: 'test engine' };
  readonly startedAt = new Date().toISOString();
  readonly adopted = false;
  readonly warnings: string[] = [];
  readonly serial: TestSerial;
  readonly exited: Promise<ExitRecord>;
  readonly vncSocket?: string;
  state: VmState;
  detached = false;
  private settle!: (r: ExitRecord) => void;

  constructor(
    readonly ctx: EngineContext,
    paused: boolean,
  ) {
    super();
    this.state = paused ? 'paused' : 'running';
    this.exited = new Promise((r) => (this.settle = r));
    this.serial = new TestSerial(path.join(ctx.bundleDir, 'logs', 'serial.log'));
    if (testEngine.vncSocket) this.vncSocket = testEngine.vncSocket;
  }

  private set(s: VmState): void {
    this.state = s;
    this.emit('state', s);
  }
  onState(fn: (s: VmState) => void): () => void {
    this.on('state', fn);
    return () => this.off('state', fn);
  }
  async pause(): Promise<void> {
    this.set('paused');
  }
  async resume(): Promise<void> {
    this.set('running');
  }
  async reset(): Promise<void> {}
  async shutdown(): Promise<ExitRecord> {
    return this.kill();
  }
  /** Waits at testEngine.killGate (a power-off that takes its time), then the guest is gone. */
  async kill(): Promise<ExitRecord> {
    await testEngine.killGate.pass();
    const r: ExitRecord = { at: new Date().toISOString(), reason: 'killed', detail: 'test engine', exitCode: null, signal: null, logTail: [] };
    if (this.state !== 'stopped') {
      this.set('stopped');
      this.settle(r);
    }
    return r;
  }
  async screenshot(): Promise<Buffer> {
    await testEngine.screenshotGate.pass();
    return Buffer.from('89504e470d0a1a0a', 'hex');
  }
  detach(): void {
    this.detached = true;
  }
}

/** What the tests steer: gates, the VNC socket new guests get, and the guests by VM id. */
export const testEngine = {
  startGate: new Gate(),
  killGate: new Gate(),
  screenshotGate: new Gate(),
  vncSocket: undefined as string | undefined,
  guests: new Map<string, TestGuest>(),
  /** The running guest of a VM (by id). */
  guest(id: string): TestGuest {
    const g = this.guests.get(id);
    if (!g) throw new Error(`no test guest runs for ${id}`);
    return g;
  },
  reset(): void {
    for (const g of [this.startGate, this.killGate, this.screenshotGate]) g.open();
    this.vncSocket = undefined;
    this.guests.clear();
  },
};

export const testEngineModule: EngineModule = {
  kind: TEST_ENGINE,
  description: 'test engine (no hypervisor)',
  capabilities: {
    display: true,
    liveSnapshots: false,
    offlineSnapshots: false,
    diskFormats: ['raw'],
    nativeDiskFormat: 'raw',
    linkedClones: false,
    directKernelOnly: false,
    acpi: true,
    diskBuses: ['virtio'],
    nicModels: ['virtio-net'],
    networkModes: ['none'],
  },
  validate() {},
  async check() {
    return { accel: { requested: 'auto', used: 'tcg', reason: 'test engine' }, warnings: [] };
  },
  async start(ctx, opts = {}) {
    await testEngine.startGate.pass();
    await fs.mkdir(path.join(ctx.bundleDir, 'logs'), { recursive: true });
    const g = new TestGuest(ctx, opts.paused === true);
    testEngine.guests.set(ctx.config.id, g);
    return g;
  },
  adopt: async () => null,
  snapshots: {
    targets: () => ({ targets: [], unsupported: [] }),
    saveLive: async () => ({ vmStateBytes: 0, targets: [] }),
    loadLive: async () => {},
    deleteLive: async () => {},
    saveOffline: async () => ({ targets: [] }),
    applyOffline: async () => {},
    deleteOffline: async () => {},
    stored: async () => new Map(),
    busy: async () => [],
    recover: async () => {},
  },
  disks: {
    async create(file, bytes) {
      const fh = await fs.open(file, 'wx');
      await fh.truncate(bytes);
      await fh.close();
    },
    async resize() {},
    async info(file) {
      return { virtualSize: size(file), actualSize: 0 };
    },
    async checkFree() {},
  },
};

export function registerTestEngine(): void {
  testEngine.reset();
  registerEngine(testEngineModule);
}

export function unregisterTestEngine(): void {
  testEngine.reset();
  unregisterEngine(TEST_ENGINE);
}

/** Settings of a VM on the test engine (for vm.create). */
export function testVm(name: string): { name: string; engine: string; cpus: number; memoryMiB: number; network: { mode: 'none'; forwards: [] }[] } {
  return { name, engine: TEST_ENGINE, cpus: 1, memoryMiB: 64, network: [{ mode: 'none', forwards: [] }] };
}
