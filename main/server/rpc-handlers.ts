// Runs one validated RPC call against the core; the only place that maps wire methods to Core methods.
import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import type { Core } from '../core/core.js';
import { AllRpcMethods, RpcMethods, isRpcMethod, LONG_METHODS, type VmRpcMethod, type RpcError } from '../api/rpc.js';
import { VmdeskError, ErrorCode, isVmdeskError } from '../api/errors.js';
import type { VmEvent } from '../api/events.js';
import { snapshotHandlers } from './snapshot-rpc.js';
import { fromOsError } from '../platform/os-errors.js';

type Parsed<M extends VmRpcMethod> = z.output<(typeof RpcMethods)[M]['params']>;
type Result<M extends VmRpcMethod> = z.input<(typeof RpcMethods)[M]['result']>;
type Progress = (phase: string, fraction?: number) => void;
type VmHandlers = { [M in VmRpcMethod]: (core: Core, p: Parsed<M>, progress: Progress) => Promise<Result<M>> };

const vmHandlers: VmHandlers = {
  'vm.list': (core) => core.list(),
  'vm.get': (core, p) => core.get(p.id),
  'vm.create': (core, p, progress) => core.create(p, progress),
  'vm.update': (core, p) => core.update(p.id, p.patch),
  'vm.rename': (core, p) => core.rename(p.id, p.name),
  'vm.delete': (core, p, progress) => {
    progress('deleting');
    return core.delete(p.id, { keepDisks: p.keepDisks });
  },
  'vm.start': (core, p, progress) => {
    progress('starting');
    return core.start(p.id, { paused: p.paused });
  },
  'vm.stop': (core, p, progress) => {
    progress('waiting for the guest to shut down');
    return core.stop(p.id, { timeoutMs: p.timeoutMs });
  },
  'vm.kill': (core, p) => core.kill(p.id),
  'vm.pause': (core, p) => core.pause(p.id),
  'vm.resume': (core, p) => core.resume(p.id),
  'vm.reset': (core, p) => core.reset(p.id),
  'vm.screenshot': async (core, p) => ({ png: (await core.screenshot(p.id)).toString('base64') }),
  'vm.serialLog': async (core, p) => ({ data: (await core.serialLog(p.id, p.maxBytes)).toString('base64') }),
  'host.info': (core) => core.host(),
};

/** One handler per contract method; both tables are complete by their types, so no method goes unanswered. */
const handlers = { ...vmHandlers, ...snapshotHandlers };

export function toRpcError(e: unknown): RpcError {
  if (isVmdeskError(e)) return { code: e.code, message: e.message, details: [...e.details] };
  // OS errors (a full disk, a read-only file system) keep their own code and a sentence a user can act on.
  const mapped = fromOsError(e);
  if (mapped.code !== ErrorCode.internal) return { code: mapped.code, message: mapped.message, details: [] };
  const err = e instanceof Error ? e : new Error(String(e));
  return { code: ErrorCode.internal, message: err.message || 'internal error', details: err.stack ? err.stack.split('\n').slice(1, 8).map((l) => l.trim()) : [] };
}

/** Validates params against the contract, refuses unknown methods, and reports progress of long calls. */
export async function dispatch(core: Core, method: string, params: unknown, opts: { opId?: string; emit: (ev: VmEvent) => void }): Promise<unknown> {
  if (!isRpcMethod(method)) throw new VmdeskError(ErrorCode.invalid, `unknown method "${method}"`);
  const spec = AllRpcMethods[method];
  const parsed = spec.params.safeParse(params ?? {});
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') + ': ' : ''}${i.message}`);
    throw new VmdeskError(ErrorCode.invalid, `invalid parameters for ${method}: ${lines[0] ?? 'invalid'}`, lines.slice(1));
  }
  const long = LONG_METHODS.includes(method);
  const opId = opts.opId ?? randomUUID();
  const vmId = typeof (parsed.data as { id?: unknown }).id === 'string' ? (parsed.data as { id: string }).id : undefined;
  const progress: Progress = (phase, fraction) => {
    if (long) opts.emit({ type: 'progress', opId, id: vmId, phase, fraction });
  };
  const run = handlers[method] as (core: Core, p: unknown, progress: Progress) => Promise<unknown>;
  try {
    const result = await run(core, parsed.data, progress);
    if (long) opts.emit({ type: 'progress', opId, id: vmId, phase: 'done', fraction: 1, done: true });
    return result;
  } catch (e) {
    if (long) opts.emit({ type: 'progress', opId, id: vmId, phase: 'failed', done: true, error: e instanceof Error ? e.message : String(e) });
    throw e;
  }
}
