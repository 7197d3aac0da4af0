// RPC handlers for GuestRpcMethods (main/api/rpc-guest.ts): shared folders (changed as the VM's hardware job)
// and the guest agent's report (a query: it never waits for a job).
import type { z } from 'zod';
import type { Core } from '../core/core.js';
import type { GuestRpcMethods, GuestRpcMethod } from '../api/rpc-guest.js';
import { addShare, listShares, removeShare } from '../core/shares.js';

type Parsed<M extends GuestRpcMethod> = z.output<(typeof GuestRpcMethods)[M]['params']>;
type Result<M extends GuestRpcMethod> = z.input<(typeof GuestRpcMethods)[M]['result']>;
export type GuestHandlers = { [M in GuestRpcMethod]: (core: Core, p: Parsed<M>) => Promise<Result<M>> };

export const guestHandlers: GuestHandlers = {
  'share.list': (core, p) => listShares(core, p.id),
  'share.add': (core, p) => core.job(p.id, 'update-hardware', 'share.add', () => addShare(core, p.id, { hostPath: p.hostPath, tag: p.tag, readOnly: p.readOnly, driver: p.driver })),
  'share.remove': (core, p) => core.job(p.id, 'update-hardware', 'share.remove', () => removeShare(core, p.id, p.tag)),
  'vm.guestAgent': (core, p) => core.guestAgent(p.id),
};
