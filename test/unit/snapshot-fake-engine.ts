// A fake engine for snapshot tests without a hypervisor: memory-only live snapshots into the state file the
// core names (like the micro-VM engine), raw disks, no display, no offline snapshots, no linked clones. Its
// "guest" is a counter in memory that the tests advance; saving writes it (and padding) to the state file,
// loading reads it back. Registered under its own kind: the core must treat it by its capabilities alone.
import { existsSync, promises as fs, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import type { ExitRecord, VmState } from '../../main/api/schema.js';
import { VmdeskError, ErrorCode } from '../../main/api/errors.js';
import type { EngineContext, EngineModule, SnapshotProvider, StoredSnapshots, VmRuntime } from '../../main/engines/engine.js';

export const FAKE_KIND = 'fakemem';

export class FakeRuntime extends EventEmitter implements VmRuntime {
  readonly pid = process.pid;
  readonly accel = { requested: 'auto', used: 'tcg', reason: 'fake' } as VmRuntime['accel'];
  readonly startedAt = new Date().toISOString();
  readonly adopted = false;
  readonly warnings: string[] = [];
  state: VmState;
  /** The guest's whole state. */
  counter = 0;
  /** Paths loaded, in order (what restore did). */
  loads: string[] = [];
  private settle!: (r: ExitRecord) => void;
  readonly exited: Promise<ExitRecord>;
  readonly serial;

  constructor(ctx: EngineContext, paused: boolean) {
    super();
    this.state = paused ? 'paused' : 'running';
    this.exited = new Promise((r) => (this.settle = r));
    this.serial = { logFile: path.join(ctx.bundleDir, 'logs', 'serial.log'), logStart: 0, write: () => true, onceDrain: (fn: () => void) => fn(), onData: () => () => {} };
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
  async reset(): Promise<void> {
    this.counter = 0;
  }
  async shutdown(): Promise<ExitRecord> {
    return this.kill();
  }
  async kill(): Promise<ExitRecord> {
    const r: ExitRecord = { at: new Date().toISOString(), reason: 'killed', detail: 'fake', exitCode: null, signal: null, logTail: [] };
    this.set('stopped');
    this.settle(r);
    return r;
  }
  detach(): void {}
}

/** Runtimes by VM id, so tests can look at the guest. */
export const fakeRuntimes = new Map<string, FakeRuntime>();

/** Test hooks: `midSave` runs after the state file has begun, before the save completes. */
export const fakeHooks: { midSave?: () => Promise<void> } = {};

const provider: SnapshotProvider = {
  targets: (ctx) => ({
    targets: [],
    unsupported: ctx.config.disks.filter((d) => !d.readOnly).map((d) => ({ diskId: d.id, format: d.format, hint: 'the fake engine keeps no disk contents in snapshots' })),
  }),
  async saveLive(rt, _ctx, snap) {
    const f = rt as FakeRuntime;
    // Memory is big: a header line with the counter, then padding.
    await fs.writeFile(snap.stateFile, `${f.counter}\n`, { flag: 'wx' });
    await fakeHooks.midSave?.();
    await fs.appendFile(snap.stateFile, '.'.repeat(4096));
    return { vmStateBytes: statSync(snap.stateFile).size, targets: [] };
  },
  async loadLive(rt, _ctx, snap) {
    const f = rt as FakeRuntime;
    const text = await fs.readFile(snap.stateFile, 'utf8');
    f.counter = Number(text.split('\n')[0]);
    f.loads.push(snap.stateFile);
    await f.pause();
  },
  async deleteLive() {},
  async saveOffline() {
    throw new VmdeskError(ErrorCode.invalid, 'fake: no offline snapshots');
  },
  async applyOffline() {
    throw new VmdeskError(ErrorCode.invalid, 'fake: no offline snapshots');
  },
  async deleteOffline() {},
  async stored(ctx) {
    const out: StoredSnapshots = new Map();
    const dir = path.join(ctx.bundleDir, 'snapshots');
    if (!existsSync(dir)) return out;
    for (const f of readdirSync(dir)) {
      const m = /^([a-z0-9]+)\.vmstate$/.exec(f);
      if (!m) continue;
      const st = statSync(path.join(dir, f));
      out.set(`vmdesk-${m[1]}`, new Map([['vmstate', { vmStateBytes: st.size, dateSec: Math.floor(st.mtimeMs / 1000) }]]));
    }
    return out;
  },
  async busy() {
    return [];
  },
  async recover() {},
};

export const fakeMemoryEngine: EngineModule = {
  kind: FAKE_KIND,
  description: 'fake engine for tests (memory-only snapshots)',
  capabilities: {
    display: false,
    liveSnapshots: 'memory',
    offlineSnapshots: false,
    diskFormats: ['raw'],
    nativeDiskFormat: 'raw',
    linkedClones: false,
    directKernelOnly: false,
    acpi: false,
    diskBuses: ['virtio'],
    nicModels: ['virtio-net'],
    networkModes: ['none'],
  },
  validate() {},
  async check() {
    return { accel: { requested: 'auto', used: 'tcg', reason: 'fake' } as VmRuntime['accel'], warnings: [] };
  },
  async start(ctx, opts = {}) {
    const rt = new FakeRuntime(ctx, opts.paused === true);
    fakeRuntimes.set(ctx.config.id, rt);
    return rt;
  },
  adopt: async () => null,
  snapshots: provider,
  disks: {
    async create(file, bytes) {
      const fh = await fs.open(file, 'wx');
      await fh.truncate(bytes);
      await fh.close();
    },
    async resize() {},
    async info(file) {
      return { virtualSize: statSync(file).size, actualSize: 0 };
    },
    async checkFree() {},
  },
};

export const FAKE_FULL_KIND = 'fakefull';

/**
 * A second fake: 'full' live snapshots kept in an in-memory store (tag → target → saved bytes), one target
 * per writable disk, and engine work the tests switch on and off. For reconciliation without QEMU.
 */
export const fakeFull = {
  stored: new Map<string, Map<string, { vmStateBytes: number; dateSec: number }>>(),
  busy: [] as string[],
  deleted: [] as string[],
};

export const fakeFullEngine: EngineModule = {
  ...fakeMemoryEngine,
  kind: FAKE_FULL_KIND,
  description: 'fake engine for tests (full live snapshots in memory)',
  capabilities: { ...fakeMemoryEngine.capabilities, liveSnapshots: 'full', offlineSnapshots: true, diskFormats: ['raw'] },
  snapshots: {
    targets: (ctx) => ({ targets: ctx.config.disks.filter((d) => !d.readOnly).map((d) => ({ id: d.id, file: d.path, format: d.format })), unsupported: [] }),
    async saveLive(_rt, ctx, snap) {
      const ids = ctx.config.disks.filter((d) => !d.readOnly).map((d) => d.id);
      fakeFull.stored.set(snap.tag, new Map(ids.map((id, i) => [id, { vmStateBytes: i === 0 ? 1000 : 0, dateSec: Math.floor(Date.now() / 1000) }])));
      return { vmStateBytes: 1000, targets: ids };
    },
    async loadLive(rt) {
      await rt.pause();
    },
    async deleteLive(_rt, _ctx, snap) {
      fakeFull.deleted.push(snap.tag);
      fakeFull.stored.delete(snap.tag);
    },
    async saveOffline(ctx, snap) {
      const ids = ctx.config.disks.filter((d) => !d.readOnly).map((d) => d.id);
      fakeFull.stored.set(snap.tag, new Map(ids.map((id) => [id, { vmStateBytes: 0, dateSec: Math.floor(Date.now() / 1000) }])));
      return { targets: ids };
    },
    async applyOffline() {},
    async deleteOffline(_ctx, snap) {
      fakeFull.deleted.push(snap.tag);
      fakeFull.stored.delete(snap.tag);
    },
    async stored() {
      return new Map([...fakeFull.stored].map(([t, m]) => [t, new Map(m)]));
    },
    async busy() {
      return [...fakeFull.busy];
    },
    async recover() {},
  },
};
