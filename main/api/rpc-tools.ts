// Methods the GUI needs beyond the VM verbs: a file picker on the daemon's side (a browser has no paths), the
// CD drive while the guest runs, disks detached and reordered (boot order), bounded log tails, port checks
// before start, and cancelling a long call. Part of the one contract: rpc.ts spreads them into AllRpcMethods.
import { z } from 'zod';
import { DiskBus, HostPath, PortForward, VmInfo } from './schema.js';

const VmRef = z.string().min(1, 'a VM name or id is required').max(128);
const DiskId = z.string().min(1).max(40);

/**
 * A path as a user types it: absolute, or starting with ~ (the daemon user's home). No control characters;
 * the daemon expands ~ and normalises the rest.
 */
export const UserPath = z
  .string()
  .min(1, 'path must not be empty')
  .max(4096)
  .refine((p) => p.startsWith('/') || p === '~' || p.startsWith('~/'), 'path must be absolute (or start with ~/)')
  .refine((p) => !/[\u0000-\u001f\u007f]/.test(p), 'path must not contain newlines or control characters');

/** What a file picker shows: folders always, files of the kind asked for. */
export const FileKind = z.enum(['any', 'iso', 'disk', 'appliance', 'kernel', 'import']);
export type FileKind = z.infer<typeof FileKind>;

export const FileEntry = z.object({
  name: z.string(),
  kind: z.enum(['dir', 'file']),
  /** Bytes (files); 0 for folders. */
  size: z.number(),
  modifiedAt: z.string(),
});
export type FileEntry = z.infer<typeof FileEntry>;

export const FILES_LIST_MAX = 2000;
export const LOG_TAIL_MAX = 1024 * 1024;

export const LogSource = z.enum(['qemu', 'serial', 'events']);
export type LogSource = z.infer<typeof LogSource>;

export const PortStatus = z.object({
  protocol: z.enum(['tcp', 'udp']),
  hostPort: z.number(),
  /** free; in-use (another program); vm (forwarded by a running VM, named in `vm`); privileged (below 1024, refused). */
  status: z.enum(['free', 'in-use', 'vm', 'privileged']),
  vm: z.string().optional(),
  /** A sentence for the user, the same words the refusal at start uses. */
  message: z.string(),
});
export type PortStatus = z.infer<typeof PortStatus>;

export const ToolRpcMethods = {
  /**
   * One folder as the daemon's user sees it (the home when no path is given): only entries that user may read,
   * folders first, at most FILES_LIST_MAX (`truncated` says when there were more), hidden ones on request.
   */
  'files.list': {
    params: z.object({ path: UserPath.optional(), show: FileKind.optional(), hidden: z.boolean().optional() }).strict(),
    result: z.object({ path: z.string(), parent: z.string().nullable(), home: z.string(), entries: z.array(FileEntry), truncated: z.boolean() }),
  },
  /** Whether a path the user typed names a readable file or folder; `path` comes back expanded (~) and normalised. */
  'files.stat': {
    params: z.object({ path: UserPath }).strict(),
    result: z.object({ path: z.string(), exists: z.boolean(), kind: z.enum(['dir', 'file', 'other']).optional(), size: z.number().optional(), readable: z.boolean(), reason: z.string().optional() }),
  },
  /** The last bytes of a VM's QEMU log or serial log, or VMDesk's own record of what happened to it. */
  'vm.logs': {
    params: z.object({ id: VmRef, source: LogSource, maxBytes: z.number().int().min(1).max(LOG_TAIL_MAX).optional() }).strict(),
    result: z.object({ source: LogSource, file: z.string().nullable(), text: z.string(), truncated: z.boolean() }),
  },
  /** Inserts a disc image into the CD drive (null ejects); while the VM runs too, where its engine can. */
  'vm.media': { params: z.object({ id: VmRef, cdrom: HostPath.nullable() }).strict(), result: VmInfo },
  /**
   * Takes a disk off a stopped VM. An attached disk stays where it is; the VM's own disk is moved to the
   * library's kept-disks folder (`keptFile`), never deleted: attaching that file again undoes it.
   */
  'disk.detach': { params: z.object({ id: VmRef, disk: DiskId }).strict(), result: z.object({ info: VmInfo, keptFile: z.string().optional() }) },
  /** A stopped VM's disk on another bus, or made read-only / writable again. */
  'disk.set': {
    params: z
      .object({ id: VmRef, disk: DiskId, bus: DiskBus.optional(), readOnly: z.boolean().optional() })
      .strict()
      .refine((p) => p.bus !== undefined || p.readOnly !== undefined, 'say what to change: bus or readOnly'),
    result: VmInfo,
  },
  /** The disks in a new order: the guest boots from the first (after a CD, while one is inserted). */
  'disk.reorder': { params: z.object({ id: VmRef, order: z.array(DiskId).min(1).max(16) }).strict(), result: VmInfo },
  /** Can these host ports be forwarded now? `id`: the VM asking, whose own running forwards do not count. */
  'host.ports': {
    params: z.object({ id: VmRef.optional(), forwards: z.array(PortForward.pick({ protocol: true, hostPort: true })).max(32) }).strict(),
    result: z.array(PortStatus),
  },
  /** Cancels a long call by its opId where the work allows (copies: clone, export, import, disk conversion). */
  'job.cancel': { params: z.object({ opId: z.string().min(1).max(64) }).strict(), result: z.object({ cancelled: z.boolean(), reason: z.string().optional() }) },
} as const;

export type ToolRpcMethod = keyof typeof ToolRpcMethods;

/** Long calls a client may cancel (job.cancel). */
export const CANCELLABLE_METHODS: readonly string[] = ['snapshot.clone', 'vm.export', 'vm.import', 'snapshot.convertDisk', 'vm.migrate'];
