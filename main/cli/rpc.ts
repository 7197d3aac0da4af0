// The CLI's one connection to the daemon: typed calls whose failures are VmdeskErrors (so exit codes follow
// the error codes), and long calls whose progress comes from the daemon's events for their opId.
import { randomUUID } from 'node:crypto';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { RpcCallError, type FrameClient } from '../api/frame-client.js';
import type { RpcMethod, RpcParams, RpcResult } from '../api/rpc.js';

export class Rpc {
  constructor(readonly client: FrameClient) {}

  async call<M extends RpcMethod>(method: M, params: RpcParams<M>): Promise<RpcResult<M>> {
    try {
      return await this.client.call(method, params);
    } catch (e) {
      throw asVmdeskError(e);
    }
  }

  /** A call that reports progress: phase lines from the daemon's progress events for this call. */
  async long<M extends RpcMethod>(method: M, params: RpcParams<M>, progress: (phase: string, fraction?: number) => void): Promise<RpcResult<M>> {
    const opId = randomUUID();
    const off = this.client.onEvent((ev) => {
      if (ev.type === 'progress' && ev.opId === opId && !ev.done) progress(ev.phase, ev.fraction);
    });
    try {
      return await this.client.call(method, params, { opId });
    } catch (e) {
      throw asVmdeskError(e);
    } finally {
      off();
    }
  }
}

export function asVmdeskError(e: unknown): unknown {
  if (e instanceof RpcCallError) {
    // ENET: the daemon went away mid-call.
    const code = e.code === 'ENET' ? ErrorCode.host : (e.code as ErrorCode);
    return new VmdeskError(code, e.code === 'ENET' ? `${e.message} (the daemon stopped; see the library's logs/daemon.log)` : e.message, e.details);
  }
  return e;
}
