// Hosts beyond this machine (libvirt daemons reached by URI) and moving a VM between hosts: the methods of the
// contract for `vmdesk hosts` and `vmdesk migrate`. rpc.ts spreads them into AllRpcMethods.
import { z } from 'zod';
import { HostName, VmInfo } from './schema.js';
import { parseHostUri, LOCAL_HOST } from './host-uri.js';

const VmRef = z.string().min(1, 'a VM name or id is required').max(128);

export const HostUriSchema = z.string().superRefine((s, ctx) => {
  try {
    parseHostUri(s);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});

/** A libvirt storage pool's name on the host (where VMDesk keeps the VM's disks and boot files). */
export const PoolName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'a storage pool name may contain letters, digits and . _ - (at most 64)');

export const HostEntry = z.object({
  name: z.string(),
  uri: z.string(),
  /** The storage pool on that host that holds VMDesk's volumes. */
  pool: z.string(),
  addedAt: z.string(),
});
export type HostEntry = z.infer<typeof HostEntry>;

export const HostStatus = HostEntry.extend({
  /** Where it is and how it is reached, in words. */
  where: z.string(),
  /** VMs of this library on it. */
  vms: z.number(),
  /** Present when the host was asked (check): reachable, libvirt's version, or why not. */
  reachable: z.boolean().optional(),
  version: z.string().optional(),
  error: z.string().optional(),
  /** Milliseconds the check took. */
  latencyMs: z.number().optional(),
});
export type HostStatus = z.infer<typeof HostStatus>;

/** A guest defined on a host, as libvirt lists it; `vm` names this library's VM when it is one of ours. */
export const HostDomain = z.object({
  name: z.string(),
  uuid: z.string(),
  state: z.string(),
  vm: z.string().nullable(),
});
export type HostDomain = z.infer<typeof HostDomain>;

/** Where a VM moves: a host added with `vmdesk hosts add`, or "local" (this machine's library). */
const Destination = z.union([z.literal(LOCAL_HOST), HostName]);

export const HostRpcMethods = {
  /** Hosts added to this library; with check, each is asked (in parallel, each bounded by the connect timeout). */
  'hosts.list': { params: z.object({ check: z.boolean().optional() }).strict(), result: z.array(HostStatus) },
  /** Adds a host; unless check is false it must answer first (and have the storage pool). */
  'hosts.add': {
    params: z.object({ name: HostName, uri: HostUriSchema, pool: PoolName.optional(), check: z.boolean().optional() }).strict(),
    result: z.object({ host: HostStatus, warnings: z.array(z.string()) }),
  },
  /** Forgets a host; refused while VMs of this library live on it (they are named). */
  'hosts.remove': { params: z.object({ name: HostName }).strict(), result: z.object({ removed: z.string() }) },
  /** Every guest defined on the host (ours and others'). */
  'hosts.domains': { params: z.object({ name: HostName }).strict(), result: z.array(HostDomain) },
  /**
   * Moves a VM to another host: local library → libvirt host (disks copied with progress, defined, started
   * unless start is false), libvirt → libvirt (libvirt's peer-to-peer migration, storage copied; live when the
   * VM runs and live is set), libvirt → local (disks copied back through the image gate). A job of the VM.
   */
  'vm.migrate': {
    params: z.object({ id: VmRef, to: Destination, live: z.boolean().optional(), start: z.boolean().optional() }).strict(),
    result: z.object({ info: VmInfo, warnings: z.array(z.string()) }),
  },
} as const;

export type HostRpcMethod = keyof typeof HostRpcMethods;

/** Long calls: progress events under the call's opId. */
export const HOST_LONG_METHODS: readonly HostRpcMethod[] = ['vm.migrate', 'hosts.add'];
