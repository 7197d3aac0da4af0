// Methods of issue 11: usage samples and their subscription, port forwards and network links changed while a
// guest runs. Part of the one contract: rpc.ts spreads them into AllRpcMethods. Limits themselves are
// settings (vm.update's `limits`), applied live where the engine can.
import { z } from 'zod';
import { PortForward, VmInfo, VmStats } from './schema.js';

const VmRef = z.string().min(1, 'a VM name or id is required').max(128);
/** At most this many VMs named in one subscription call (a connection may also subscribe to all). */
export const STATS_IDS_MAX = 256;
const Subscription = z.object({ all: z.boolean(), ids: z.array(z.string()) });

export const ResourceRpcMethods = {
  /** One usage sample of a running VM (rates against the previous sample, or one taken half a second before). */
  'vm.stats': { params: z.object({ id: VmRef }).strict(), result: VmStats },
  /**
   * This connection receives a 'vm-stats' event once a second for each of these VMs while it runs (absent:
   * every VM, also ones created later). Subscriptions end with the connection; a connection that is behind
   * in reading skips samples rather than having them queued.
   */
  'stats.subscribe': { params: z.object({ ids: z.array(VmRef).min(1).max(STATS_IDS_MAX).optional() }).strict(), result: Subscription },
  /** Ends this connection's subscriptions to these VMs (absent: all of them). */
  'stats.unsubscribe': { params: z.object({ ids: z.array(VmRef).min(1).max(STATS_IDS_MAX).optional() }).strict(), result: Subscription },
  /** Adds a port forward (host side 127.0.0.1) to the first nat/nat-host adapter, or `adapter`; in the running guest too. */
  'vm.forwardAdd': { params: z.object({ id: VmRef, forward: PortForward.strict(), adapter: z.number().int().min(0).max(3).optional() }).strict(), result: VmInfo },
  /** Removes the forward of a host port from whichever adapter has it; in the running guest too. */
  'vm.forwardRemove': { params: z.object({ id: VmRef, protocol: z.enum(['tcp', 'udp']), hostPort: z.number().int().min(1).max(65535) }).strict(), result: VmInfo },
  /** Sets a running guest's network card link up or down (a cable plugged in or pulled). */
  'vm.setLink': { params: z.object({ id: VmRef, adapter: z.number().int().min(0).max(3), up: z.boolean() }).strict(), result: VmInfo },
} as const;

export type ResourceRpcMethod = keyof typeof ResourceRpcMethods;
