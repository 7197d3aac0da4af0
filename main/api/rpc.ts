// The wire contract between the renderer and the server: every RPC method, event and console stream message as a zod schema.
import { z } from 'zod';
import { CreateVmRequest, DiskBus, DiskFormat, HostInfo, LIMITS, VmInfo, VmName, VmSettingsPatch, VmState } from './schema.js';
import type { VmEvent } from './events.js';
import { SnapshotSchedule } from './schema.js';
import { DownloadInfo } from './images.js';
import { IMAGE_LONG_METHODS, ImageRpcMethods, TermClientFrames, TermServerFrames } from './rpc-images.js';
import { ToolRpcMethods } from './rpc-tools.js';
import { GuestRpcMethods } from './rpc-guest.js';
import { ResourceRpcMethods } from './rpc-resources.js';
import { HOST_LONG_METHODS, HostRpcMethods } from './rpc-hosts.js';
import { DEVICE_LONG_METHODS, DeviceRpcMethods } from './rpc-devices.js';
import { presetPreprocess } from './presets.js';
import { VmStats } from './schema.js';

export const DaemonStatus = z.object({
  pid: z.number(),
  /** VMDesk's version and the build the daemon runs (a client of another build restarts an idle daemon). */
  version: z.string(),
  build: z.string(),
  protocol: z.number(),
  home: z.string(),
  startedAt: z.string(),
  clients: z.number(),
  vms: z.number(),
  running: z.number(),
  jobs: z.array(z.object({ vmId: z.string(), method: z.string(), startedAt: z.string() })),
  /** How VMDesk's own process uses memory: resident set of the daemon. */
  rssBytes: z.number(),
  locks: z.string(),
  idleExitMs: z.number(),
});
export type DaemonStatus = z.infer<typeof DaemonStatus>;

export { PROTOCOL_VERSION } from './values.js';

/** A VM reference as the core resolves it: name, id or unique id prefix. */
const VmRef = z.string().min(1, 'a VM name or id is required').max(128);
const ById = z.object({ id: VmRef }).strict();
/** Base64 of raw bytes: PNGs and serial data travel inside JSON frames. */
const Base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'not base64');

/**
 * Each method: its params (validated on the server before the core sees them) and its result.
 * `.strict()` everywhere so a misspelt field is an error rather than silently ignored.
 */
export const RpcMethods = {
  'vm.list': { params: z.object({}).strict(), result: z.array(VmInfo) },
  'vm.get': { params: ById, result: VmInfo },
  // A preset (windows11) fills in what the request leaves out before the defaults do (api/presets.ts).
  'vm.create': { params: z.preprocess(presetPreprocess, CreateVmRequest.strict()) as unknown as ReturnType<typeof CreateVmRequest.strict>, result: VmInfo },
  'vm.update': { params: z.object({ id: VmRef, patch: VmSettingsPatch.strict() }).strict(), result: VmInfo },
  'vm.rename': { params: z.object({ id: VmRef, name: VmName }).strict(), result: VmInfo },
  'vm.delete': { params: z.object({ id: VmRef, keepDisks: z.boolean().optional() }).strict(), result: z.object({ keptDisks: z.array(z.string()) }) },
  'vm.start': { params: z.object({ id: VmRef, paused: z.boolean().optional() }).strict(), result: VmInfo },
  'vm.stop': { params: z.object({ id: VmRef, timeoutMs: z.number().int().min(0).max(600_000).optional() }).strict(), result: VmInfo },
  'vm.kill': { params: ById, result: VmInfo },
  'vm.pause': { params: ById, result: VmInfo },
  'vm.resume': { params: ById, result: VmInfo },
  'vm.reset': { params: ById, result: VmInfo },
  'vm.screenshot': { params: ById, result: z.object({ png: Base64 }) },
  'vm.serialLog': { params: z.object({ id: VmRef, maxBytes: z.number().int().min(1).max(4 * 1024 * 1024).optional() }).strict(), result: z.object({ data: Base64 }) },
  'host.info': { params: z.object({}).strict(), result: HostInfo },
  /** The VNC unix socket of a running VM with a display: the GUI server bridges it to noVNC. */
  'vm.vncSocket': { params: ById, result: z.object({ path: z.string() }) },
  'disk.create': { params: z.object({ id: VmRef, bytes: z.number().int().positive() }).strict(), result: VmInfo },
  'disk.attach': {
    params: z.object({ id: VmRef, file: z.string().min(1).max(4096).refine((p) => p.startsWith('/'), 'path must be absolute'), format: DiskFormat.optional(), bus: DiskBus.optional(), readOnly: z.boolean().optional() }).strict(),
    result: VmInfo,
  },
  'disk.resize': { params: z.object({ id: VmRef, disk: z.string().min(1).max(40), bytes: z.number().int().positive() }).strict(), result: VmInfo },
  /** The daemon itself: version, clients, guests, jobs (vmdesk daemon status). */
  'daemon.status': { params: z.object({}).strict(), result: DaemonStatus },
  /** Asks the daemon to exit; with ifIdle it refuses while guests run, jobs run or other clients are connected. */
  'daemon.stop': { params: z.object({ ifIdle: z.boolean().optional() }).strict(), result: z.object({ stopping: z.boolean(), reason: z.string().optional() }) },
} as const;

/** The VM methods' names; `RpcMethod` (below) also covers the snapshot module's. */
export type VmRpcMethod = keyof typeof RpcMethods;

export const RpcError = z.object({ code: z.string(), message: z.string(), details: z.array(z.string()).default([]) });
export type RpcError = z.infer<typeof RpcError>;

export const VmEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('vm-created'), id: z.string(), info: VmInfo }),
  z.object({ type: z.literal('vm-updated'), id: z.string(), info: VmInfo }),
  z.object({ type: z.literal('vm-deleted'), id: z.string() }),
  z.object({ type: z.literal('vm-state'), id: z.string(), state: VmState, info: VmInfo }),
  z.object({
    type: z.literal('progress'),
    opId: z.string(),
    id: z.string().optional(),
    phase: z.string(),
    fraction: z.number().optional(),
    done: z.boolean().optional(),
    error: z.string().optional(),
  }),
  z.object({ type: z.literal('image-download'), download: DownloadInfo }),
  z.object({ type: z.literal('image-changed'), image: z.string() }),
  z.object({ type: z.literal('vm-stats'), id: z.string(), stats: VmStats }),
]);
// Compile-time proof that the schema and the core's VmEvent type describe the same thing.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const eventSchemaMatchesCore: Same<z.output<typeof VmEventSchema>['type'], VmEvent['type']> = true;
void eventSchemaMatchesCore;

// ---- frames on the /ws socket ------------------------------------------------------------------------

/** Client → server. `sid` names one serial stream on this socket (chosen by the client). */
export const ClientFrame = z.discriminatedUnion('t', [
  z.object({ t: z.literal('call'), id: z.number().int().nonnegative(), method: z.string().max(64), params: z.unknown().optional(), opId: z.string().max(64).optional() }).strict(),
  z.object({ t: z.literal('serial.open'), sid: z.number().int().nonnegative(), vm: VmRef }).strict(),
  z.object({ t: z.literal('serial.in'), sid: z.number().int().nonnegative(), data: Base64.max(1024 * 1024) }).strict(),
  z.object({ t: z.literal('serial.close'), sid: z.number().int().nonnegative() }).strict(),
  ...TermClientFrames,
]);
export type ClientFrame = z.infer<typeof ClientFrame>;

/** Server → client. */
export const ServerFrame = z.discriminatedUnion('t', [
  /** First frame on every connection. `build` tells a client whether this daemon runs the code it has. */
  z.object({ t: z.literal('hello'), version: z.number(), app: z.string().optional(), build: z.string().optional(), pid: z.number().optional() }),
  z.object({ t: z.literal('result'), id: z.number(), result: z.unknown() }),
  z.object({ t: z.literal('error'), id: z.number(), error: RpcError }),
  z.object({ t: z.literal('event'), event: VmEventSchema }),
  /** `replay` marks bytes read from the serial log on open, printed before the live stream. */
  z.object({ t: z.literal('serial.data'), sid: z.number(), data: Base64, replay: z.boolean().optional() }),
  z.object({ t: z.literal('serial.closed'), sid: z.number(), error: RpcError.optional() }),
  ...TermServerFrames,
]);
export type ServerFrame = z.infer<typeof ServerFrame>;

/** Paths on the server. The VNC bridge carries raw RFB bytes in binary frames, as noVNC expects. */
export const WS_PATH = '/ws';
export const VNC_PATH_PREFIX = '/vnc/';
export const TOKEN_COOKIE = 'vmdesk_token';
export const TOKEN_HEADER = 'x-vmdesk-token';

// ---- snapshots, clones, export/import ---------------------------------------------------------------
// Owned by the snapshot module (main/core/snapshots, main/core/backup); handlers in main/server/snapshot-rpc.ts.
// Kept in their own map so the server's handler table stays complete until it spreads both in.

const SnapRef = z.string().min(1, 'a snapshot name or id is required').max(128);
const AbsPath = z.string().min(1).max(4096).refine((p) => p.startsWith('/'), 'path must be absolute');

export const SnapshotViewSchema = z.object({
  id: z.string(),
  tag: z.string(),
  name: z.string(),
  description: z.string(),
  time: z.string(),
  parent: z.string().nullable(),
  kind: z.enum(['live', 'disk-only']),
  config: VmInfo.shape.config,
  thumbnail: z.boolean(),
  vmStateBytes: z.number(),
  disks: z.array(z.string()),
  adopted: z.boolean(),
  linkedClones: z.array(z.string()),
  /** Micro-VM snapshots: their state file under snapshots/ (memory and CPU state; disk contents not captured). */
  stateFile: z.string().optional(),
  /** Taken by VMDesk on its own: 'safety' before a restore, 'scheduled' by the VM's schedule (retention prunes these). */
  auto: z.enum(['safety', 'scheduled']).optional(),
  isCurrent: z.boolean(),
  missingOn: z.array(z.string()),
  children: z.array(z.string()),
});
export type SnapshotViewWire = z.infer<typeof SnapshotViewSchema>;

export const SnapshotListingSchema = z.object({
  vmId: z.string(),
  vmName: z.string(),
  state: VmState,
  current: z.string().nullable(),
  snapshots: z.array(SnapshotViewSchema),
  notes: z.array(z.string()),
  unsupported: z.array(z.object({ diskId: z.string(), format: z.string(), hint: z.string() })),
  /** The VM's snapshot schedule, and when the daemon takes the next one (null while it does not run). */
  schedule: z.object({ everyMinutes: z.number(), keep: z.number(), nextAt: z.string().nullable(), lastAt: z.string().optional(), lastError: z.string().optional() }).nullable().optional(),
  /** Safety snapshots ("Before restoring X") each VM keeps; null keeps all. */
  safetyKeep: z.number().nullable().optional(),
});
export type SnapshotListingWire = z.infer<typeof SnapshotListingSchema>;

const SnapshotNodeWire = SnapshotViewSchema.omit({ isCurrent: true, missingOn: true, children: true });

/** A setting that differs, in words: "Memory" "256 MiB" → "384 MiB". */
export const WordChangeSchema = z.object({ label: z.string(), from: z.string(), to: z.string() });
export type WordChangeWire = z.infer<typeof WordChangeSchema>;

/** What a restore would do, before it runs (main/core/snapshots/restore.ts restorePlan). */
export const RestorePlanSchema = z.object({
  snapshot: z.object({ id: z.string(), name: z.string(), kind: z.enum(['live', 'disk-only']), time: z.string(), memoryOnly: z.boolean() }),
  stateNow: VmState,
  stateAfter: z.enum(['running', 'stopped']),
  inPlace: z.boolean(),
  starts: z.boolean(),
  powersOff: z.boolean(),
  settings: z.array(WordChangeSchema),
  detaches: z.array(z.string()),
  disksRevert: z.boolean(),
  safety: z.union([
    z.object({ taken: z.literal(true), name: z.string(), kind: z.enum(['live', 'disk-only']), memoryMiB: z.number() }),
    z.object({ taken: z.literal(false), reason: z.string() }),
  ]),
  prunes: z.array(z.object({ id: z.string(), name: z.string(), vmStateBytes: z.number() })),
  safetyKeep: z.number().nullable(),
  blockers: z.array(z.string()),
  steps: z.array(z.string()),
});
export type RestorePlanWire = z.infer<typeof RestorePlanSchema>;

export const SnapshotPrefsSchema = z.object({ safetyKeep: z.number().int().min(1).max(100).nullable() });

export const SnapshotRpcMethods = {
  /** brief: each snapshot's config is left out (null; snapshot.info has it): the GUI's listing, half the bytes. */
  'snapshot.list': { params: z.object({ id: VmRef, brief: z.boolean().optional() }).strict(), result: SnapshotListingSchema },
  'snapshot.info': {
    params: z.object({ id: VmRef, snapshot: SnapRef }).strict(),
    result: SnapshotViewSchema.extend({
      configDiff: z.array(z.object({ field: z.string(), from: z.unknown(), to: z.unknown() })),
      /** The same differences in words, snapshot → now. */
      changes: z.array(WordChangeSchema).optional(),
      thumbnailPath: z.string().nullable(),
    }),
  },
  'snapshot.thumbnail': { params: z.object({ id: VmRef, snapshot: SnapRef }).strict(), result: z.object({ png: Base64.nullable() }) },
  'snapshot.take': { params: z.object({ id: VmRef, name: z.string().max(256), description: z.string().max(4096).optional() }).strict(), result: SnapshotNodeWire },
  'snapshot.restore': {
    params: z.object({ id: VmRef, snapshot: SnapRef, saveCurrent: z.boolean().optional() }).strict(),
    result: z.object({ restored: SnapshotNodeWire, safety: SnapshotNodeWire.optional(), info: VmInfo, warnings: z.array(z.string()), pruned: z.array(z.string()).optional() }),
  },
  /** What restoring would do (nothing changes): state before and after, settings that revert, safety snapshot, retention. */
  'snapshot.restorePlan': { params: z.object({ id: VmRef, snapshot: SnapRef, saveCurrent: z.boolean().optional() }).strict(), result: RestorePlanSchema },
  /** Settings of snapshot `from` against snapshot `to`, or against the VM's settings now when `to` is absent. */
  'snapshot.compare': {
    params: z.object({ id: VmRef, from: SnapRef, to: SnapRef.optional() }).strict(),
    result: z.object({ from: z.object({ id: z.string(), name: z.string() }), to: z.object({ id: z.string(), name: z.string() }).nullable(), changes: z.array(WordChangeSchema), unknown: z.boolean() }),
  },
  /** Applies retention now: old safety snapshots past the preference, scheduled ones past the VM's schedule. */
  'snapshot.prune': { params: ById, result: z.object({ deleted: z.array(z.string()) }) },
  /** Makes an automatic snapshot a person's: retention never deletes it. */
  'snapshot.keep': { params: z.object({ id: VmRef, snapshot: SnapRef }).strict(), result: SnapshotNodeWire },
  /** Sets the VM's snapshot schedule (null: none) in vm.json; the daemon's scheduler follows it. */
  'snapshot.schedule': { params: z.object({ id: VmRef, schedule: SnapshotSchedule.nullable() }).strict(), result: VmInfo },
  /** Library-wide snapshot preferences: read them, or change the fields given. */
  'snapshot.preferences': { params: SnapshotPrefsSchema.partial().strict(), result: SnapshotPrefsSchema },
  'snapshot.delete': { params: z.object({ id: VmRef, snapshot: SnapRef, branch: z.boolean().optional() }).strict(), result: z.object({ deleted: z.array(z.string()) }) },
  'snapshot.rename': { params: z.object({ id: VmRef, snapshot: SnapRef, name: z.string().max(256) }).strict(), result: SnapshotNodeWire },
  'snapshot.describe': { params: z.object({ id: VmRef, snapshot: SnapRef, description: z.string().max(4096) }).strict(), result: SnapshotNodeWire },
  /** Converts a stopped VM's disk to the engine's snapshot-capable format (qcow2) in place. */
  'snapshot.convertDisk': { params: z.object({ id: VmRef, disk: z.string().min(1).max(40) }).strict(), result: VmInfo },
  'snapshot.clone': {
    params: z.object({ id: VmRef, name: VmName, snapshot: SnapRef.optional(), linked: z.boolean().optional() }).strict(),
    result: VmInfo,
  },
  /** A .ova file name writes an OVF 1.0 appliance (no snapshots); anything else a .vmdesk archive. */
  'vm.export': {
    params: z.object({ id: VmRef, file: AbsPath, includeSnapshots: z.boolean().optional() }).strict(),
    result: z.object({ file: z.string(), bytes: z.number(), warnings: z.array(z.string()).default([]) }),
  },
  /** cpus/memoryMiB override an appliance's or a bare disk's hardware; format states a bare disk's format. */
  'vm.import': {
    params: z
      .object({
        file: AbsPath,
        name: VmName.optional(),
        cpus: z.number().int().min(1).max(LIMITS.cpusMax).optional(),
        memoryMiB: z.number().int().min(LIMITS.memoryMinMiB).max(LIMITS.memoryMaxMiB).optional(),
        format: z.enum(['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'vpc', 'vhd']).optional(),
      })
      .strict(),
    result: VmInfo,
  },
} as const;

export type SnapshotRpcMethod = keyof typeof SnapshotRpcMethods;
export type SnapshotRpcParams<M extends SnapshotRpcMethod> = z.input<(typeof SnapshotRpcMethods)[M]['params']>;
export type SnapshotRpcResult<M extends SnapshotRpcMethod> = z.output<(typeof SnapshotRpcMethods)[M]['result']>;

/** Snapshot methods that take seconds and report progress events. */
export const SNAPSHOT_LONG_METHODS: readonly SnapshotRpcMethod[] = ['snapshot.take', 'snapshot.restore', 'snapshot.delete', 'snapshot.prune', 'snapshot.convertDisk', 'snapshot.clone', 'vm.export', 'vm.import'];

// ---- the whole contract ------------------------------------------------------------------------------

/** Every method the server answers: the VM methods above plus the snapshot module's. */
export const AllRpcMethods = { ...RpcMethods, ...SnapshotRpcMethods, ...ToolRpcMethods, ...ImageRpcMethods, ...ResourceRpcMethods, ...GuestRpcMethods, ...HostRpcMethods, ...DeviceRpcMethods } as const;

export type RpcMethod = keyof typeof AllRpcMethods;
/** What a caller passes (defaults not yet applied). */
export type RpcParams<M extends RpcMethod> = z.input<(typeof AllRpcMethods)[M]['params']>;
export type RpcResult<M extends RpcMethod> = z.output<(typeof AllRpcMethods)[M]['result']>;

export function isRpcMethod(name: string): name is RpcMethod {
  return Object.prototype.hasOwnProperty.call(AllRpcMethods, name);
}

/** Methods that may take seconds: the server reports their progress as VmEvent 'progress' under the call's opId. */
export const LONG_METHODS: readonly RpcMethod[] = ['vm.create', 'vm.start', 'vm.stop', 'vm.delete', 'disk.create', 'disk.resize', ...SNAPSHOT_LONG_METHODS, ...IMAGE_LONG_METHODS, ...HOST_LONG_METHODS, ...DEVICE_LONG_METHODS];
