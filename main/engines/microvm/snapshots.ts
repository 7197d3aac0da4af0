// Micro-VM snapshots: the running guest's memory, vCPU and device state in one file per snapshot
// (<bundle>/snapshots/<id>.vmstate), written and loaded by the executable. Raw disks cannot hold snapshots,
// so disk contents are not captured and a stopped micro-VM has nothing to snapshot.
import { closeSync, openSync, readdirSync, readSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { EngineContext, SnapshotProvider, SnapshotRef, StoredSnapshots, VmRuntime } from '../engine.js';
import { microvmBundleFiles } from './layout.js';
import { MicrovmRuntime } from './runtime.js';

/** The one "target" of a micro-VM snapshot: its state file. */
export const STATE_TARGET = 'vmstate';
const STATE_FILE = /^([a-z0-9]{4,32})\.vmstate$/;
export const RAW_DISK_HINT =
  "the microvm engine's raw disks are not captured by snapshots: live snapshots of the running VM save memory and CPU state only; disk snapshots need the qemu engine";
const OFFLINE_REFUSED =
  'micro-VM snapshots need a running guest: they hold its memory and CPU state, and raw disks cannot hold snapshots. Start the VM to take or restore one, or switch it to the qemu engine for disk snapshots';

/** Offsets in the state file's header (native/src/snapshot/snapshot.h). */
const MAGIC = Buffer.from('VMDSNAP\0', 'latin1');
const CREATED_NANOS_OFFSET = 48;

function microvm(rt: VmRuntime): MicrovmRuntime {
  if (!(rt instanceof MicrovmRuntime)) throw new VmdeskError(ErrorCode.engine, 'this runtime is not a micro-VM');
  return rt;
}

/** When the state file says it was written (its header), else its mtime; seconds since the epoch. */
function savedAt(file: string, mtimeMs: number): number {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const h = Buffer.alloc(CREATED_NANOS_OFFSET + 8);
    if (readSync(fd, h, 0, h.length, 0) === h.length && h.subarray(0, 8).equals(MAGIC)) {
      const sec = Number(h.readBigUInt64LE(CREATED_NANOS_OFFSET) / 1_000_000_000n);
      if (sec > 0 && sec < 2 ** 40) return sec;
    }
  } catch {
    // unreadable: the directory entry's time will do
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return Math.floor(mtimeMs / 1000);
}

function checkStateFile(ctx: EngineContext, snap: SnapshotRef): string {
  const expected = join(resolve(microvmBundleFiles(ctx.bundleDir).snapshots), `${snap.id}.vmstate`);
  // The core names it; still, it must be this VM's snapshots/<id>.vmstate and nothing else (the executable
  // writes wherever it is told).
  if (resolve(snap.stateFile) !== expected || !STATE_FILE.test(`${snap.id}.vmstate`)) {
    throw new VmdeskError(ErrorCode.invalid, `a micro-VM snapshot's state file must be ${expected}, not ${snap.stateFile}`);
  }
  return expected;
}

export const microvmSnapshots: SnapshotProvider = {
  targets(ctx) {
    return { targets: [], unsupported: ctx.config.disks.map((d) => ({ diskId: d.id, format: d.format, hint: RAW_DISK_HINT })) };
  },

  async saveLive(rt, ctx, snap, progress) {
    const file = checkStateFile(ctx, snap);
    progress('saving memory and CPU state', 0);
    try {
      await microvm(rt).snapshotSave(file);
    } catch (e) {
      rmSync(`${file}.tmp`, { force: true }); // the executable removes it on failure; not if it died mid-write
      throw e;
    }
    progress('saving memory and CPU state', 1);
    return { vmStateBytes: statSync(file).size, targets: [STATE_TARGET] };
  },

  async loadLive(rt, ctx, snap, progress) {
    const file = checkStateFile(ctx, snap);
    progress('loading memory and CPU state', 0);
    await microvm(rt).snapshotLoad(file);
    progress('loading memory and CPU state', 1);
  },

  async deleteLive(_rt, ctx, snap) {
    // A guest restored from this file keeps its own copy-on-write mapping of it: removing it is safe.
    rmSync(checkStateFile(ctx, snap), { force: true });
  },

  async saveOffline() {
    throw new VmdeskError(ErrorCode.invalid, OFFLINE_REFUSED);
  },

  async applyOffline() {
    throw new VmdeskError(ErrorCode.invalid, OFFLINE_REFUSED);
  },

  async deleteOffline(ctx, snap) {
    rmSync(checkStateFile(ctx, snap), { force: true });
  },

  async stored(ctx) {
    const dir = microvmBundleFiles(ctx.bundleDir).snapshots;
    const out: StoredSnapshots = new Map();
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return out;
    }
    for (const name of names) {
      const m = STATE_FILE.exec(name);
      if (!m) continue;
      const file = join(dir, name);
      try {
        const st = statSync(file);
        if (!st.isFile()) continue;
        out.set(`vmdesk-${m[1]}`, new Map([[STATE_TARGET, { vmStateBytes: st.size, dateSec: savedAt(file, st.mtimeMs) }]]));
      } catch {
        // removed meanwhile
      }
    }
    return out;
  },

  async busy(rt) {
    // A daemon that died while the executable wrote a snapshot: the executable is still at it.
    try {
      const info = await microvm(rt).info();
      return typeof info.job === 'string' ? [info.job] : [];
    } catch {
      return [];
    }
  },

  async recover() {
    // Nothing to clear: a snapshot the executable was writing finishes (or fails) on its own.
  },
};
