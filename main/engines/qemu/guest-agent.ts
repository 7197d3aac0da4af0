// The QEMU guest agent (qemu-ga) over its virtio-serial channel: QEMU listens on a unix socket in the VM's
// runtime dir and the daemon connects for each request (one at a time per VM: the chardev takes one client).
// Everything the agent says comes from the guest and is untrusted: replies are bounded in size, their shape is
// checked, and only values that look like what they claim to be are kept.
import { isIP } from 'node:net';
import type { Socket } from 'node:net';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { GuestAgentAnswer, GuestInterface } from '../engine.js';
import { connectUnixSocket } from '../../platform/process.js';
import { AGENT_CHARDEV } from './guest-devices.js';

/** The most one reply may hold; an agent that sends more is cut off. */
const REPLY_MAX = 256 * 1024;
const INTERFACES_MAX = 64;
const ADDRESSES_MAX = 32;

type Qmp = (execute: string, args?: Record<string, unknown>, timeoutMs?: number) => Promise<unknown>;

/** One request at a time per socket: QEMU's chardev serves a single client. */
const queues = new Map<string, Promise<unknown>>();

function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = queues.get(key) ?? Promise.resolve();
  const next = prev.then(fn, fn);
  const tail = next.catch(() => undefined);
  queues.set(key, tail);
  void tail.then(() => {
    if (queues.get(key) === tail) queues.delete(key);
  });
  return next;
}

class AgentConnection {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private closed: Error | undefined;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      if (this.buf.length > REPLY_MAX) {
        this.closed = new Error(`the guest agent sent more than ${REPLY_MAX} bytes`);
        sock.destroy();
      }
      this.waiter?.();
    });
    sock.on('error', (e) => {
      this.closed ??= e;
      this.waiter?.();
    });
    sock.on('close', () => {
      this.closed ??= new Error('the guest agent channel closed');
      this.waiter?.();
    });
  }

  static async open(path: string): Promise<AgentConnection> {
    return new AgentConnection(await connectUnixSocket(path));
  }

  close(): void {
    this.sock.destroy();
  }

  private async wait(deadline: number): Promise<void> {
    if (this.closed) throw this.closed;
    const ms = deadline - Date.now();
    if (ms <= 0) throw new VmdeskError(ErrorCode.timeout, 'the guest agent did not answer in time');
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiter = () => {
        clearTimeout(t);
        this.waiter = undefined;
        resolve();
      };
    });
  }

  /** The next JSON line. */
  private async line(deadline: number): Promise<unknown> {
    for (;;) {
      const nl = this.buf.indexOf(0x0a);
      if (nl >= 0) {
        const text = this.buf.subarray(0, nl).toString('utf8').trim();
        this.buf = this.buf.subarray(nl + 1);
        if (!text) continue;
        try {
          return JSON.parse(text);
        } catch {
          throw new VmdeskError(ErrorCode.engine, 'the guest agent sent something that is not JSON');
        }
      }
      await this.wait(deadline);
    }
  }

  /**
   * guest-sync-delimited: the agent answers after a 0xFF byte, so whatever an earlier client left in the
   * channel (a reply nobody read, half a request) is skipped. The 0xFF we send first resets its parser.
   */
  async sync(deadline: number): Promise<void> {
    const id = Math.floor(Math.random() * 2 ** 31);
    this.sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } }) + '\n')]));
    for (;;) {
      const ff = this.buf.indexOf(0xff);
      if (ff >= 0) {
        this.buf = this.buf.subarray(ff + 1);
        const reply = (await this.line(deadline)) as { return?: unknown };
        if (reply && typeof reply === 'object' && reply.return === id) return;
        continue;
      }
      this.buf = Buffer.alloc(0);
      await this.wait(deadline);
    }
  }

  async execute(cmd: string, args: Record<string, unknown> | undefined, deadline: number): Promise<unknown> {
    this.sock.write(JSON.stringify(args ? { execute: cmd, arguments: args } : { execute: cmd }) + '\n');
    const reply = (await this.line(deadline)) as { return?: unknown; error?: { desc?: unknown } } | null;
    if (!reply || typeof reply !== 'object') throw new VmdeskError(ErrorCode.engine, `the guest agent answered ${cmd} with something else than an object`);
    if (reply.error) throw new VmdeskError(ErrorCode.engine, `the guest agent refused ${cmd}: ${printable(String(reply.error.desc ?? 'no reason given'), 200)}`);
    if (!('return' in reply)) throw new VmdeskError(ErrorCode.engine, `the guest agent answered ${cmd} without a result`);
    return reply.return;
  }
}

/** Guest text shown to people: printable characters only, bounded. */
function printable(s: string, max: number): string {
  return s.replace(/[^\x20-\x7e\u00a0-\uffff]/g, '?').slice(0, max);
}

/** Whether the guest has the agent's port open (query-chardev's frontend-open): nothing listens otherwise. */
async function portOpen(qmp: Qmp): Promise<boolean | undefined> {
  try {
    const devs = (await qmp('query-chardev', undefined, 3000)) as { label: string; 'frontend-open'?: boolean }[];
    const d = devs.find((x) => x.label === AGENT_CHARDEV);
    return d ? d['frontend-open'] === true : undefined;
  } catch {
    return undefined;
  }
}

export interface GuestAgentSession {
  execute(cmd: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown>;
}

/**
 * Runs fn with a synchronised connection to the agent, or says why there is none: no channel, the guest has
 * not opened its port (no agent running), or the agent did not answer guest-sync in time.
 */
export async function withAgent<T>(
  socket: string,
  qmp: Qmp,
  fn: (agent: GuestAgentSession) => Promise<T>,
  opts: { syncTimeoutMs?: number } = {},
): Promise<{ ok: true; value: T } | { ok: false; reason: string }> {
  return serialized(socket, async () => {
    const open = await portOpen(qmp);
    if (open === undefined) return { ok: false as const, reason: 'this VM has no guest agent channel (vmdesk set NAME --guest-agent on, then restart it)' };
    if (!open) return { ok: false as const, reason: 'no guest agent is running in the guest (its channel is closed); install and start qemu-guest-agent there' };
    let conn: AgentConnection;
    try {
      conn = await AgentConnection.open(socket);
    } catch (e) {
      return { ok: false as const, reason: `the guest agent channel could not be opened: ${(e as Error).message}` };
    }
    try {
      try {
        await conn.sync(Date.now() + (opts.syncTimeoutMs ?? 3000));
      } catch (e) {
        return { ok: false as const, reason: `the guest agent did not answer (${(e as Error).message})` };
      }
      const session: GuestAgentSession = { execute: (cmd, args, timeoutMs = 10_000) => conn.execute(cmd, args, Date.now() + timeoutMs) };
      return { ok: true as const, value: await fn(session) };
    } finally {
      conn.close();
    }
  });
}

/** guest-network-get-interfaces, checked: names and addresses bounded, addresses that parse as such only. */
export function parseInterfaces(raw: unknown): GuestInterface[] {
  if (!Array.isArray(raw)) throw new VmdeskError(ErrorCode.engine, 'the guest agent answered guest-network-get-interfaces with something else than a list');
  const out: GuestInterface[] = [];
  for (const item of raw.slice(0, INTERFACES_MAX)) {
    if (!item || typeof item !== 'object') continue;
    const it = item as { name?: unknown; 'hardware-address'?: unknown; 'ip-addresses'?: unknown };
    if (typeof it.name !== 'string' || !it.name) continue;
    const iface: GuestInterface = { name: printable(it.name, 32), addresses: [] };
    const mac = it['hardware-address'];
    if (typeof mac === 'string' && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) iface.mac = mac.toLowerCase();
    const addrs = Array.isArray(it['ip-addresses']) ? it['ip-addresses'] : [];
    for (const a of addrs.slice(0, ADDRESSES_MAX)) {
      if (!a || typeof a !== 'object') continue;
      const { 'ip-address': address, prefix, 'ip-address-type': type } = a as Record<string, unknown>;
      if (typeof address !== 'string' || address.length > 64) continue;
      const family = type === 'ipv4' ? 'ipv4' : type === 'ipv6' ? 'ipv6' : undefined;
      if (!family || isIP(address) !== (family === 'ipv4' ? 4 : 6)) continue;
      const max = family === 'ipv4' ? 32 : 128;
      if (typeof prefix !== 'number' || !Number.isInteger(prefix) || prefix < 0 || prefix > max) continue;
      iface.addresses.push({ address, prefix, family });
    }
    out.push(iface);
  }
  return out;
}

/** A host name as the guest claims it: a DNS-ish label sequence, else dropped. */
export function parseHostname(raw: unknown): string | undefined {
  const name = raw && typeof raw === 'object' ? (raw as { 'host-name'?: unknown })['host-name'] : undefined;
  return typeof name === 'string' && /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(name) && name.length <= 253 ? name : undefined;
}

function parseOs(raw: unknown): string | undefined {
  const r = raw && typeof raw === 'object' ? (raw as { 'pretty-name'?: unknown; name?: unknown }) : undefined;
  const s = typeof r?.['pretty-name'] === 'string' ? r['pretty-name'] : typeof r?.name === 'string' ? r.name : undefined;
  return s ? printable(s, 80) : undefined;
}

/** Host name, interfaces and OS name as the agent reports them; commands the agent lacks are left out. */
export async function agentReport(socket: string, qmp: Qmp): Promise<GuestAgentAnswer> {
  const r = await withAgent(socket, qmp, async (agent) => {
    const interfaces = parseInterfaces(await agent.execute('guest-network-get-interfaces'));
    const hostname = parseHostname(await agent.execute('guest-get-host-name').catch(() => undefined));
    const os = parseOs(await agent.execute('guest-get-osinfo').catch(() => undefined));
    return { interfaces, ...(hostname ? { hostname } : {}), ...(os ? { os } : {}) };
  });
  return r.ok ? { ok: true, ...r.value } : r;
}

/**
 * Runs fn (a live snapshot) with the guest's file systems frozen when its agent answers, and thaws them after,
 * whatever fn did. `note` hears what happened, in words for the VM's log.
 */
export async function withFrozenGuest<T>(socket: string | undefined, qmp: Qmp, fn: () => Promise<T>, note: (line: string) => void): Promise<T> {
  if (!socket) return fn();
  let result: { done: true; value: T } | undefined;
  const r = await withAgent(socket, qmp, async (agent) => {
    let frozen: number;
    try {
      frozen = Number(await agent.execute('guest-fsfreeze-freeze', undefined, 60_000));
    } catch (e) {
      note(`guest file systems not frozen for the snapshot: ${(e as Error).message}`);
      result = { done: true, value: await fn() };
      return;
    }
    note(`guest file systems frozen for the snapshot (${Number.isFinite(frozen) ? frozen : '?'} frozen)`);
    try {
      result = { done: true, value: await fn() };
    } finally {
      try {
        await agent.execute('guest-fsfreeze-thaw', undefined, 60_000);
        note('guest file systems thawed');
      } catch (e) {
        note(`guest file systems could not be thawed: ${(e as Error).message}; run fsfreeze --unfreeze in the guest`);
      }
    }
  }, { syncTimeoutMs: 2000 });
  if (!r.ok) {
    note(`snapshot taken without freezing the guest's file systems: ${r.reason}`);
    return fn();
  }
  return result!.value;
}
