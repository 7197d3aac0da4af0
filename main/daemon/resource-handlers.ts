// RPC handlers for ResourceRpcMethods (main/api/rpc-resources.ts): usage, its subscription (per connection,
// through the daemon's stats feed), and live network changes. Changes run as the VM's one job.
import type { z } from 'zod';
import type { Core } from '../core/core.js';
import type { ResourceRpcMethods, ResourceRpcMethod } from '../api/rpc-resources.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { forwardAdd, forwardRemove, setLink, vmStats } from '../core/live.js';
import type { StatsClient } from './stats-feed.js';

type Parsed<M extends ResourceRpcMethod> = z.output<(typeof ResourceRpcMethods)[M]['params']>;
type Result<M extends ResourceRpcMethod> = z.input<(typeof ResourceRpcMethods)[M]['result']>;
export type ResourceHandlers = { [M in ResourceRpcMethod]: (core: Core, p: Parsed<M>, ctx: { daemon?: { stats?: StatsClient } }) => Promise<Result<M>> };

function feed(ctx: { daemon?: { stats?: StatsClient } }): StatsClient {
  if (!ctx.daemon?.stats) throw new VmdeskError(ErrorCode.invalid, 'usage subscriptions are answered by the VMDesk daemon only');
  return ctx.daemon.stats;
}

export const resourceHandlers: ResourceHandlers = {
  'vm.stats': (core, p) => vmStats(core, p.id),
  'stats.subscribe': (_core, p, ctx) => feed(ctx).subscribe(p.ids),
  'stats.unsubscribe': (_core, p, ctx) => feed(ctx).unsubscribe(p.ids),
  'vm.forwardAdd': (core, p) => core.job(p.id, 'network', 'vm.forwardAdd', () => forwardAdd(core, p.id, p.forward, p.adapter)),
  'vm.forwardRemove': (core, p) => core.job(p.id, 'network', 'vm.forwardRemove', () => forwardRemove(core, p.id, p.protocol, p.hostPort)),
  'vm.setLink': (core, p) => core.job(p.id, 'network', 'vm.setLink', () => setLink(core, p.id, p.adapter, p.up)),
};
