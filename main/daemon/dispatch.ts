// Runs one validated RPC call against the core: the only place that maps wire methods to Core methods.
// Methods that change a VM run as its one job (core.job checks the state table and refuses a busy VM).
import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import type { Core } from '../core/core.js';
import { AllRpcMethods, RpcMethods, isRpcMethod, LONG_METHODS, type DaemonStatus, type VmRpcMethod, type RpcError } from '../api/rpc.js';
import { VmdeskError, ErrorCode, isVmdeskError } from '../api/errors.js';
import type { VmEvent } from '../api/events.js';
import { snapshotHandlers } from './snapshot-handlers.js';
import { imageHandlers } from './image-handlers.js';
import { fromOsError } from '../platform/os-errors.js';
import { toolHandlers } from './tool-handlers.js';
import { guestHandlers } from './guest-handlers.js';
import { resourceHandlers } from './resource-handlers.js';
import { hostHandlers } from './host-handlers.js';
import { deviceHandlers } from './device-handlers.js';
import type { StatsClient } from './stats-feed.js';
import { stoppedOnlyWhy } from '../core/live.js';
import { isAlive } from '../api/states.js';
import { CANCELLABLE_METHODS } from '../api/rpc-tools.js';
import { withCancelSignal } from '../platform/cancel.js';
import { historyOf } from '../core/tools.js';
import { DEVICE_SETTINGS } from '../core/devices.js';

type Parsed<M extends VmRpcMethod> = z.output<(typeof RpcMethods)[M]['params']>;
type Result<M extends VmRpcMethod> = z.input<(typeof RpcMethods)[M]['result']>;
type Progress = (phase: string, fraction?: number) => void;
/** What only the daemon itself can answer (its status, a request to exit). */
export interface DaemonControl {
  status(): DaemonStatus;
  stop(ifIdle: boolean): { stopping: boolean; reason?: string };
  /** This connection's usage subscriptions (the daemon gives each connection its own). */
  stats?: StatsClient;
}

interface Ctx {
  progress: Progress;
  daemon?: DaemonControl;
}

type VmHandlers = { [M in VmRpcMethod]: (core: Core, p: Parsed<M>, ctx: Ctx) => Promise<Result<M>> };

function noDaemon(): never {
  throw new VmdeskError(ErrorCode.invalid, 'this method is answered by the VMDesk daemon only');
}

// Network settings and limits are not in the list: a running guest takes forwards and limits (the core refuses
// the rest, saying why).
const HARDWARE = ['engine', 'accel', 'firmware', 'cpus', 'memoryMiB', 'cdrom', 'directKernel', 'clipboard', 'guestAgent', 'display', ...DEVICE_SETTINGS];

const vmHandlers: VmHandlers = {
  'vm.list': (core) => core.list(),
  'vm.get': (core, p) => core.get(p.id),
  'vm.create': (core, p, { progress }) => core.create(p, progress),
  'vm.update': async (core, p) => {
    const set = (k: string) => (p.patch as Record<string, unknown>)[k] !== undefined;
    const hardware = Object.keys(p.patch).some((k) => HARDWARE.includes(k) && set(k));
    const op = hardware ? 'update-hardware' : set('network') ? 'network' : set('limits') ? 'limits' : 'update';
    if (hardware) {
      // The state table would only say "while it is running": say why each setting waits.
      const info = await core.get(p.id);
      const keys = Object.keys(p.patch).filter((k) => HARDWARE.includes(k) && set(k));
      if (isAlive(info.state) && !info.job) throw new VmdeskError(ErrorCode.state, `cannot change ${keys.join(', ')} while "${info.name}" is ${info.state}: ${stoppedOnlyWhy(keys)}; shut it down first`);
      if (info.state === 'saved' && !info.job) throw new VmdeskError(ErrorCode.state, `cannot change ${keys.join(', ')} while "${info.name}" is saved: its saved state needs the hardware it was saved with; start it and shut it down, or discard the state (vmdesk discard-state "${info.name}")`);
    }
    return core.job(p.id, op, 'vm.update', () => core.update(p.id, p.patch));
  },
  'vm.rename': (core, p) => core.job(p.id, 'rename', 'vm.rename', () => core.rename(p.id, p.name)),
  'vm.delete': (core, p, { progress }) =>
    core.job(p.id, 'delete', 'vm.delete', () => {
      progress('deleting');
      return core.delete(p.id, { keepDisks: p.keepDisks });
    }),
  'vm.start': (core, p, { progress }) =>
    core.job(p.id, 'start', 'vm.start', () => {
      progress('starting');
      return core.start(p.id, { paused: p.paused });
    }),
  'vm.stop': (core, p, { progress }) =>
    core.job(p.id, 'stop', 'vm.stop', () => {
      progress('waiting for the guest to shut down');
      return core.stop(p.id, { timeoutMs: p.timeoutMs });
    }),
  'vm.kill': (core, p) => core.job(p.id, 'kill', 'vm.kill', () => core.kill(p.id)),
  'vm.pause': (core, p) => core.job(p.id, 'pause', 'vm.pause', () => core.pause(p.id)),
  'vm.resume': (core, p) => core.job(p.id, 'resume', 'vm.resume', () => core.resume(p.id)),
  'vm.reset': (core, p) => core.job(p.id, 'reset', 'vm.reset', () => core.reset(p.id)),
  'vm.screenshot': async (core, p) => ({ png: (await core.screenshot(p.id)).toString('base64') }),
  'vm.serialLog': async (core, p) => ({ data: (await core.serialLog(p.id, p.maxBytes)).toString('base64') }),
  'vm.vncSocket': async (core, p) => ({ path: await core.vncSocket(p.id) }),
  'disk.create': (core, p) => core.job(p.id, 'disk', 'disk.create', () => core.diskCreate(p.id, p.bytes)),
  'disk.attach': (core, p) => core.job(p.id, 'disk', 'disk.attach', () => core.diskAttach(p.id, p.file, { format: p.format, bus: p.bus, readOnly: p.readOnly })),
  'disk.resize': (core, p) => core.job(p.id, 'disk', 'disk.resize', () => core.diskResize(p.id, p.disk, p.bytes)),
  'host.info': (core) => core.host(),
  'daemon.status': async (_core, _p, { daemon }) => (daemon ?? noDaemon()).status(),
  'daemon.stop': async (_core, p, { daemon }) => (daemon ?? noDaemon()).stop(p.ifIdle === true),
};

/** One handler per contract method; both tables are complete by their types, so no method goes unanswered. */
const handlers = { ...vmHandlers, ...snapshotHandlers, ...toolHandlers, ...imageHandlers, ...resourceHandlers, ...guestHandlers, ...hostHandlers, ...deviceHandlers, 'job.cancel': async (_core: Core, p: { opId: string }) => cancel(p.opId) };

/** Cancellable calls in flight, by opId (job.cancel aborts their copies: see platform/cancel.ts). */
const inFlight = new Map<string, AbortController>();

function cancel(opId: string): { cancelled: boolean; reason?: string } {
  const c = inFlight.get(opId);
  if (!c) return { cancelled: false, reason: 'no cancellable operation with that id is running (it may just have finished)' };
  c.abort();
  return { cancelled: true };
}

/** Calls that only read: not worth a line in a VM's history. */
const QUERIES = new Set(['vm.list', 'vm.get', 'vm.screenshot', 'vm.serialLog', 'vm.vncSocket', 'host.info', 'daemon.status', 'snapshot.list', 'snapshot.info', 'snapshot.thumbnail', 'files.list', 'files.stat', 'vm.logs', 'host.ports', 'job.cancel', 'share.list', 'vm.guestAgent', 'vm.stats', 'stats.subscribe', 'stats.unsubscribe', 'hosts.list', 'hosts.domains', 'usb.host', 'usb.list', 'presets.list']);

export function toRpcError(e: unknown): RpcError {
  if (isVmdeskError(e)) return { code: e.code, message: e.message, details: [...e.details] };
  // OS errors (a full disk, a read-only file system) keep their own code and a sentence a user can act on.
  const mapped = fromOsError(e);
  if (mapped.code !== ErrorCode.internal) return { code: mapped.code, message: mapped.message, details: [] };
  const err = e instanceof Error ? e : new Error(String(e));
  return { code: ErrorCode.internal, message: err.message || 'internal error', details: err.stack ? err.stack.split('\n').slice(1, 8).map((l) => l.trim()) : [] };
}

/** Validates params against the contract, refuses unknown methods, and reports progress of long calls. */
export async function dispatch(core: Core, method: string, params: unknown, opts: { opId?: string; emit: (ev: VmEvent) => void; daemon?: DaemonControl }): Promise<unknown> {
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
  const run = handlers[method] as (core: Core, p: unknown, ctx: Ctx) => Promise<unknown>;
  // VMDesk's own history of each VM (vm.logs source "events"): what was asked of it and how that went.
  const history = historyOf(core);
  const record = (text: string) => {
    if (!vmId || QUERIES.has(method)) return;
    void core.resolve(vmId).then((e) => history.add(e.id, text), () => undefined);
  };
  const canceller = CANCELLABLE_METHODS.includes(method) && !inFlight.has(opId) ? new AbortController() : undefined;
  if (canceller) inFlight.set(opId, canceller);
  try {
    const call = () => run(core, parsed.data, { progress, daemon: opts.daemon });
    const result = await (canceller ? withCancelSignal(canceller.signal, call) : call());
    if (long) opts.emit({ type: 'progress', opId, id: vmId, phase: 'done', fraction: 1, done: true });
    record(`${method} done`);
    return result;
  } catch (e) {
    if (long) opts.emit({ type: 'progress', opId, id: vmId, phase: 'failed', done: true, error: e instanceof Error ? e.message : String(e) });
    record(`${method} failed: ${e instanceof Error ? e.message : String(e)}`);
    throw e;
  } finally {
    if (canceller) inFlight.delete(opId);
  }
}
