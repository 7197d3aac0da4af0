// RPC handlers for HostRpcMethods (main/api/rpc-hosts.ts): the library's libvirt hosts and moving a VM between
// hosts. A move is the VM's job ('migrate' in the state table); host changes are the daemon's alone.
import type { z } from 'zod';
import type { Core } from '../core/core.js';
import type { HostRpcMethods, HostRpcMethod } from '../api/rpc-hosts.js';
import { addHost, hostDomains, listHosts, migrateVm, removeHost } from '../core/migrate.js';

type Parsed<M extends HostRpcMethod> = z.output<(typeof HostRpcMethods)[M]['params']>;
type Result<M extends HostRpcMethod> = z.input<(typeof HostRpcMethods)[M]['result']>;
type Progress = (phase: string, fraction?: number) => void;
export type HostHandlers = { [M in HostRpcMethod]: (core: Core, p: Parsed<M>, ctx: { progress: Progress }) => Promise<Result<M>> };

export const hostHandlers: HostHandlers = {
  'hosts.list': (core, p) => listHosts(core, p.check === true),
  'hosts.add': (core, p, { progress }) => addHost(core, p, progress),
  'hosts.remove': (core, p) => removeHost(core, p.name),
  'hosts.domains': (core, p) => hostDomains(core, p.name),
  'vm.migrate': (core, p, { progress }) => core.job(p.id, 'migrate', 'vm.migrate', () => migrateVm(core, p.id, p.to, { live: p.live, start: p.start }, progress)),
};
