// Snapshots of libvirt guests through libvirt's own snapshot API: internal qcow2 snapshots, with memory while
// the guest runs (snapshot-create-as --atomic), reverted with snapshot-revert, listed with snapshot-list. The
// core keeps the tree, names and policy; libvirt keeps the bytes under VMDesk's tag (vmdesk-<id>).
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { imgInfo } from '../../platform/qemu-img.js';
import type { EngineContext, SnapshotProvider, SnapshotTarget, StoredSnapshots, VmRuntime } from '../engine.js';
import { LibvirtConnection } from './connection.js';
import { diskVolumeName } from './domain-xml.js';
import { volumePath } from './storage.js';
import { LibvirtRuntime } from './runtime.js';

/** A snapshot of a large guest writes its whole memory: give it time. */
const SNAPSHOT_TIMEOUT_MS = 30 * 60_000;

function connOf(ctx: EngineContext): LibvirtConnection {
  if (!ctx.host) throw new VmdeskError(ErrorCode.broken, `"${ctx.config.name}" runs on the libvirt engine but names no host`);
  return LibvirtConnection.for(ctx.host);
}

function runtimeOf(rt: VmRuntime): LibvirtRuntime {
  if (!(rt instanceof LibvirtRuntime)) throw new VmdeskError(ErrorCode.internal, 'a libvirt snapshot was asked of a guest another engine runs');
  return rt;
}

/** Rows of `snapshot-list` (quiet mode: no header): tag, creation time, state. */
export function parseSnapshotList(out: string): { tag: string; dateSec: number; state: string }[] {
  const rows: { tag: string; dateSec: number; state: string }[] = [];
  for (const line of out.split('\n')) {
    const m = /^\s*(\S+)\s+(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) ([+-]\d\d)(\d\d)\s+(\S.*?)\s*$/.exec(line);
    if (!m || m[1] === 'Name') continue;
    const ms = Date.parse(`${m[2]}T${m[3]}${m[4]}:${m[5]}`);
    rows.push({ tag: m[1]!, dateSec: Number.isFinite(ms) ? Math.floor(ms / 1000) : 0, state: m[6]! });
    if (rows.length > 10_000) break;
  }
  return rows;
}

function writable(ctx: EngineContext) {
  return ctx.config.disks.filter((d) => !d.readOnly);
}

/** Saved RAM per tag, read from the volumes themselves where the host is this machine (libvirt does not say). */
async function stateSizes(conn: LibvirtConnection, ctx: EngineContext): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  if (!conn.local || !ctx.host) return sizes;
  for (const d of writable(ctx)) {
    try {
      const file = d.owned ? await volumePath(conn, ctx.host.pool, diskVolumeName(ctx.config.id, d)) : d.path;
      for (const s of (await imgInfo(file, { shared: true, format: 'qcow2' })).snapshots) sizes.set(s.tag, Math.max(sizes.get(s.tag) ?? 0, s.vmStateBytes));
    } catch {
      /* unknown sizes stay 0 */
    }
  }
  return sizes;
}

export const libvirtSnapshots: SnapshotProvider = {
  targets(ctx) {
    const targets: SnapshotTarget[] = [];
    const unsupported: { diskId: string; format: string; hint: string }[] = [];
    for (const d of writable(ctx)) {
      if (d.format === 'qcow2') targets.push({ id: d.id, file: d.owned ? diskVolumeName(ctx.config.id, d) : d.path, format: d.format });
      else unsupported.push({ diskId: d.id, format: d.format, hint: 'libvirt keeps internal snapshots in qcow2 disks only; move the VM to this machine and convert the disk (vmdesk snapshot convert-disk)' });
    }
    return { targets, unsupported };
  },

  async saveLive(rt, ctx, snap, progress) {
    const r = runtimeOf(rt);
    const conn = connOf(ctx);
    progress('saving memory and disks on the host', 0);
    await r.quietly(() => conn.once(['snapshot-create-as', r.uuid, '--name', snap.tag, '--atomic'], { timeoutMs: SNAPSHOT_TIMEOUT_MS, what: `snapshot of "${ctx.config.name}"` }));
    const size = (await stateSizes(conn, ctx)).get(snap.tag) ?? 0;
    return { vmStateBytes: size, targets: libvirtSnapshots.targets(ctx).targets.map((t) => t.id) };
  },

  async loadLive(rt, ctx, snap, progress) {
    const r = runtimeOf(rt);
    const conn = connOf(ctx);
    progress('reverting on the host', 0);
    // libvirt replaces the guest's QEMU: the console reconnects and the VNC socket moves.
    await r.quietly(async () => {
      await conn.once(['snapshot-revert', r.uuid, snap.tag, '--paused'], { timeoutMs: SNAPSHOT_TIMEOUT_MS, what: `restoring "${ctx.config.name}"` });
      r.serial.reconnect();
      await r.refreshLive();
    });
  },

  async deleteLive(rt, ctx, snap) {
    const r = runtimeOf(rt);
    await r.quietly(() => deleteSnapshot(connOf(ctx), r.uuid, snap.tag, ctx));
  },

  async saveOffline(ctx, snap, progress) {
    const conn = connOf(ctx);
    progress('saving disks on the host', 0);
    await conn.once(['snapshot-create-as', ctx.config.id, '--name', snap.tag, '--atomic'], { timeoutMs: SNAPSHOT_TIMEOUT_MS, what: `snapshot of "${ctx.config.name}"` });
    return { targets: libvirtSnapshots.targets(ctx).targets.map((t) => t.id) };
  },

  async applyOffline(ctx, snap, progress) {
    const conn = connOf(ctx);
    progress('reverting disks on the host', 0);
    await conn.once(['snapshot-revert', ctx.config.id, snap.tag], { timeoutMs: SNAPSHOT_TIMEOUT_MS, what: `restoring "${ctx.config.name}"` });
  },

  async deleteOffline(ctx, snap) {
    await deleteSnapshot(connOf(ctx), ctx.config.id, snap.tag, ctx);
  },

  async stored(ctx): Promise<StoredSnapshots> {
    const conn = connOf(ctx);
    let rows: ReturnType<typeof parseSnapshotList>;
    try {
      rows = parseSnapshotList(await conn.query(['snapshot-list', ctx.config.id]));
    } catch (e) {
      // Not defined on the host (yet, or any more): it holds no snapshots.
      if ((e as VmdeskError).code === ErrorCode.notFound) return new Map();
      throw e;
    }
    const sizes = rows.length ? await stateSizes(conn, ctx) : new Map<string, number>();
    const ids = libvirtSnapshots.targets(ctx).targets.map((t) => t.id);
    const out: StoredSnapshots = new Map();
    for (const r of rows) out.set(r.tag, new Map(ids.map((id) => [id, { vmStateBytes: sizes.get(r.tag) ?? 0, dateSec: r.dateSec }])));
    return out;
  },

  async busy(rt) {
    const r = runtimeOf(rt);
    try {
      const out = await LibvirtConnection.for(r.host).query(['domjobinfo', r.uuid]);
      const type = /^Job type:\s+(\S+)/m.exec(out)?.[1];
      return type && type !== 'None' ? [`libvirt job (${type})`] : [];
    } catch {
      return [];
    }
  },

  async recover() {
    /* libvirt finishes or aborts its own jobs */
  },
};

async function deleteSnapshot(conn: LibvirtConnection, domain: string, tag: string, ctx: EngineContext): Promise<void> {
  try {
    await conn.once(['snapshot-delete', domain, tag], { timeoutMs: SNAPSHOT_TIMEOUT_MS, what: `deleting a snapshot of "${ctx.config.name}"` });
  } catch (e) {
    if ((e as VmdeskError).code !== ErrorCode.notFound) throw e;
  }
}
