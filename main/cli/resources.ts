// The CLI's side of issue 11: network adapters and limits as options of create/set, and the verbs stats,
// forward and link. Everything typed here is checked before it is sent (and again by the daemon).
import type { NetAdapter, PortForward, ResourceLimits, ResourceLimitsPatch, VmInfo, VmStats } from '../api/schema.js';
import { NIC_MODELS, formatCpuList, parseCpuList, parseSize } from '../api/values.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import type { Rpc } from './rpc.js';

type Values = Record<string, string | boolean | string[] | undefined>;

/** Options create and set take for networks and limits (spread into their option tables). */
export const RESOURCE_OPTIONS = {
  net: { type: 'string', multiple: true },
  forward: { type: 'string', multiple: true },
  'cpu-cap': { type: 'string' },
  'cpu-pin': { type: 'string' },
  'memory-target': { type: 'string' },
  'disk-iops': { type: 'string' },
  'disk-bps': { type: 'string' },
} as const;

function invalid(message: string): never {
  throw new VmdeskError(ErrorCode.invalid, message);
}

/** Shows a piece of what the user typed in an error without letting it run on. */
const shown = (s: string) => JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}…` : s);

export function parseForward(spec: string): PortForward {
  const m = /^(tcp|udp):(\d{1,5}):(\d{1,5})$/.exec(spec);
  if (!m) invalid(`--forward ${shown(spec)} must look like tcp:HOSTPORT:GUESTPORT (or udp:…)`);
  const hostPort = Number(m[2]);
  const guestPort = Number(m[3]);
  for (const p of [hostPort, guestPort]) if (p < 1 || p > 65535) invalid(`--forward ${shown(spec)}: ports must be 1-65535`);
  return { protocol: m[1] as 'tcp' | 'udp', hostPort, guestPort };
}

/**
 * One --net value: MODE[,model=MODEL][,mac=MAC], MODE being nat, nat-host, internal:NAME or none. The name
 * rule is the schema's (letters, digits, . _ -, at most 32), repeated here so the CLI needs no zod.
 */
export function parseNet(spec: string): NetAdapter {
  if (spec.length > 200) invalid(`--net ${shown(spec)} is too long`);
  const [mode, ...opts] = spec.split(',');
  let adapter: NetAdapter;
  if (mode === 'nat' || mode === 'nat-host' || mode === 'none') adapter = { mode, forwards: [] };
  else if (mode?.startsWith('internal:')) {
    const name = mode.slice('internal:'.length);
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/.test(name)) invalid(`--net ${shown(spec)}: an internal network's name has 1-32 letters, digits, . _ - and starts with a letter or digit`);
    adapter = { mode: 'internal', network: name, forwards: [] };
  } else if (mode === 'internal') invalid('--net internal needs a network name: internal:NAME (VMs naming the same NAME share it)');
  else invalid(`--net must be nat, nat-host, internal:NAME or none, got ${shown(mode ?? '')}`);
  for (const o of opts) {
    const [k, v, extra] = o.split('=');
    if (extra !== undefined || v === undefined) invalid(`--net ${shown(spec)}: options are model=MODEL and mac=MAC`);
    if (adapter.mode === 'none') invalid(`--net none takes no options`);
    if (k === 'model') {
      if (!(NIC_MODELS as readonly string[]).includes(v)) invalid(`--net ${shown(spec)}: model must be one of ${NIC_MODELS.join(', ')}`);
      adapter.model = v as NetAdapter['model'];
    } else if (k === 'mac') {
      const mac = v.toLowerCase();
      if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac)) invalid(`--net ${shown(spec)}: a MAC address looks like 52:54:00:12:34:56`);
      if (parseInt(mac.slice(0, 2), 16) & 1) invalid(`--net ${shown(spec)}: ${mac} is a multicast address; a card needs a unicast one (even first byte)`);
      adapter.mac = mac;
    } else invalid(`--net ${shown(spec)}: unknown option ${shown(k ?? '')} (options: model=, mac=)`);
  }
  return adapter;
}

/**
 * The adapters --net and --forward describe, or undefined when neither was given. Forwards go to the first
 * nat/nat-host adapter; `current` (set) supplies the adapters when only --forward is given.
 */
export function networkFrom(values: Values, current?: NetAdapter[]): NetAdapter[] | undefined {
  const nets = (values.net as string[] | undefined) ?? [];
  const forwards = ((values.forward as string[] | undefined) ?? []).map(parseForward);
  if (!nets.length && !forwards.length) return undefined;
  if (nets.length > 4) invalid(`a VM has at most 4 network adapters (${nets.length} --net given)`);
  let adapters = nets.length ? nets.map(parseNet) : (current ?? [{ mode: 'nat', forwards: [] }]).map((a) => ({ ...a }));
  if (forwards.length) {
    const i = adapters.findIndex((a) => a.mode === 'nat' || a.mode === 'nat-host');
    if (i < 0) invalid('--forward needs a nat or nat-host adapter (--net nat)');
    adapters = adapters.map((a, k) => (k === i ? { ...a, forwards } : a));
  }
  return adapters;
}

function isNone(v: string): boolean {
  return v === 'none' || v === 'off';
}

function wholeNumber(v: string, what: string): number {
  if (!/^\d{1,12}$/.test(v.trim())) invalid(`${what} must be a whole number or none, got ${shown(v)}`);
  return Number(v);
}

/** A size in MiB: a bare number is MiB (as --memory), or a size with a unit (512M, 2G). */
function mibOf(v: string, what: string): number {
  if (/^\d{1,9}$/.test(v.trim())) return Number(v);
  try {
    return Math.floor(parseSize(v) / 1024 / 1024);
  } catch (e) {
    invalid(`${what}: ${(e as Error).message}`);
  }
}

function bytesPerSecond(v: string, what: string): number {
  const t = v.trim().replace(/\/s$/i, '');
  try {
    return parseSize(t);
  } catch (e) {
    invalid(`${what}: ${(e as Error).message} (e.g. 20M for 20 MiB/s)`);
  }
}

/**
 * Limits as options give them: values set, `none` clears (set only). Undefined when no limit option was given.
 */
export function limitsFrom(values: Values, forCreate: boolean): ResourceLimitsPatch | undefined {
  const out: ResourceLimitsPatch = {};
  const take = (flag: string, key: keyof ResourceLimits, parse: (v: string) => unknown) => {
    const v = values[flag] as string | undefined;
    if (v === undefined) return;
    if (isNone(v)) {
      if (forCreate) invalid(`--${flag} none: a new VM has no limit to clear (leave the option out)`);
      (out as Record<string, unknown>)[key] = null;
    } else (out as Record<string, unknown>)[key] = parse(v);
  };
  take('cpu-cap', 'cpuCapPercent', (v) => {
    const n = wholeNumber(v.replace(/%$/, ''), '--cpu-cap');
    if (n < 1 || n > 100) invalid('--cpu-cap is a percentage of each vCPU, 1-100 (100: no cap)');
    return n;
  });
  take('cpu-pin', 'cpuPinning', (v) => {
    try {
      return parseCpuList(v);
    } catch (e) {
      invalid(`--cpu-pin: ${(e as Error).message}`);
    }
  });
  take('memory-target', 'memoryTargetMiB', (v) => mibOf(v, '--memory-target'));
  take('disk-iops', 'diskIops', (v) => wholeNumber(v, '--disk-iops'));
  take('disk-bps', 'diskBytesPerSec', (v) => bytesPerSecond(v, '--disk-bps'));
  return Object.keys(out).length ? out : undefined;
}

// ---- formatting ------------------------------------------------------------------------------------------

export function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

export function formatLimits(l: ResourceLimits | undefined): string | undefined {
  if (!l || !Object.keys(l).length) return undefined;
  const parts: string[] = [];
  if (l.cpuCapPercent !== undefined) parts.push(`cpu cap ${l.cpuCapPercent}%`);
  if (l.cpuPinning) parts.push(`pinned to CPUs ${formatCpuList(l.cpuPinning)}`);
  if (l.memoryTargetMiB !== undefined) parts.push(`memory target ${l.memoryTargetMiB} MiB`);
  if (l.diskIops !== undefined) parts.push(`disk ${l.diskIops} IOPS`);
  if (l.diskBytesPerSec !== undefined) parts.push(`disk ${human(l.diskBytesPerSec)}/s`);
  return parts.join(', ');
}

export function formatAdapter(n: NetAdapter, i: number, down: boolean): string {
  const mode = n.mode === 'internal' ? `internal:${n.network}` : n.mode;
  if (n.mode === 'none') return `eth${i}: none`;
  const fwd = n.forwards.map((f) => ` ${f.protocol}:127.0.0.1:${f.hostPort}->${f.guestPort}`).join('');
  return `eth${i}: ${mode} ${n.model ?? 'virtio-net'}${n.mac ? ` ${n.mac}` : ''}${down ? ' (link down)' : ''}${fwd}`;
}

export function formatStats(name: string, s: VmStats): string {
  const rate = (r: number | null) => (r === null ? '' : `, ${human(r)}/s`);
  const lines = [
    `${name} at ${s.at}${s.intervalMs !== null ? ` (over ${(s.intervalMs / 1000).toFixed(1)} s)` : ''}`,
    `  cpu      ${s.cpuPercent === null ? '?' : `${s.cpuPercent.toFixed(1)} %`}${s.cpuSeconds !== null ? ` (${s.cpuSeconds.toFixed(2)} s in all)` : ''}`,
    `  memory   ${s.memoryRssBytes === null ? '?' : human(s.memoryRssBytes)} resident; guest has ${s.memoryGuestBytes === null ? '?' : human(s.memoryGuestBytes)} of ${human(s.memoryConfiguredBytes)}`,
    s.diskReadBytes === null
      ? '  disk     unknown'
      : `  disk     read ${human(s.diskReadBytes)} (${s.diskReadOps} ops)${rate(s.rates.diskReadBytesPerSec)}; written ${human(s.diskWriteBytes ?? 0)} (${s.diskWriteOps} ops)${rate(s.rates.diskWriteBytesPerSec)}`,
    s.netRxBytes === null ? '  network  unknown' : `  network  received ${human(s.netRxBytes)}${rate(s.rates.netRxBytesPerSec)}; sent ${human(s.netTxBytes ?? 0)}${rate(s.rates.netTxBytesPerSec)}`,
  ];
  for (const n of s.notes) lines.push(`  note: ${n}`);
  return lines.join('\n');
}

// ---- verbs -----------------------------------------------------------------------------------------------

export interface ResourceIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** `vmdesk stats NAME [--json] [--watch]`. */
export async function statsVerb(rpc: Rpc, name: string, opts: { json: boolean; watch: boolean }, io: ResourceIo, untilInterrupted: () => Promise<void>): Promise<number> {
  if (!opts.watch) {
    const s = await rpc.call('vm.stats', { id: name });
    io.stdout.write(opts.json ? JSON.stringify(s, null, 2) + '\n' : formatStats(name, s) + '\n');
    return 0;
  }
  const info = await rpc.call('vm.get', { id: name });
  if (info.state !== 'running' && info.state !== 'paused') throw new VmdeskError(ErrorCode.state, `"${info.name}" is ${info.state}: usage is measured while it runs`);
  let done!: () => void;
  const ended = new Promise<void>((r) => (done = r));
  rpc.client.onEvent((ev) => {
    if (ev.type === 'vm-stats' && ev.id === info.id) io.stdout.write(opts.json ? JSON.stringify(ev.stats) + '\n' : formatStats(info.name, ev.stats) + '\n');
    if (ev.type === 'vm-state' && ev.id === info.id && (ev.state === 'stopped' || ev.state === 'crashed')) {
      io.stderr.write(`vmdesk: "${info.name}" is ${ev.state}\n`);
      done();
    }
  });
  rpc.client.onClosed(done);
  // `vmdesk stats vm --watch | head` ends quietly when the reader goes.
  io.stdout.on('error', done);
  await rpc.call('stats.subscribe', { ids: [info.id] });
  await Promise.race([ended, untilInterrupted()]);
  return 0;
}

/** `vmdesk forward add|remove|list NAME [SPEC]`. */
export async function forwardVerb(rpc: Rpc, sub: string | undefined, pos: string[], values: Values, io: ResourceIo): Promise<number> {
  const json = !!values.json;
  const out = (info: VmInfo, text: string) => {
    for (const w of info.warnings) io.stderr.write(`vmdesk: warning: ${w}\n`);
    io.stdout.write(json ? JSON.stringify(info, null, 2) + '\n' : text + '\n');
  };
  if (sub === 'list') {
    if (pos.length !== 1) invalid('usage: vmdesk forward list NAME');
    const info = await rpc.call('vm.get', { id: pos[0]! });
    const rows = (info.config?.network ?? []).flatMap((n, i) => n.forwards.map((f) => ({ adapter: i, ...f })));
    io.stdout.write(json ? JSON.stringify(rows, null, 2) + '\n' : rows.length ? rows.map((r) => `${r.protocol}:127.0.0.1:${r.hostPort} -> guest ${r.guestPort} (eth${r.adapter})`).join('\n') + '\n' : `"${info.name}" forwards no ports\n`);
    return 0;
  }
  if (sub === 'add') {
    if (pos.length !== 2) invalid('usage: vmdesk forward add NAME tcp|udp:HOSTPORT:GUESTPORT [--adapter N]');
    const forward = parseForward(pos[1]!);
    const a = values.adapter as string | undefined;
    const adapter = a === undefined ? undefined : adapterIndex(a);
    const info = await rpc.call('vm.forwardAdd', { id: pos[0]!, forward, ...(adapter !== undefined ? { adapter } : {}) });
    out(info, `"${info.name}" forwards ${forward.protocol}:127.0.0.1:${forward.hostPort} to guest port ${forward.guestPort}${info.state === 'running' || info.state === 'paused' ? ' (now)' : ''}`);
    return 0;
  }
  if (sub === 'remove') {
    if (pos.length !== 2) invalid('usage: vmdesk forward remove NAME tcp|udp:HOSTPORT[:GUESTPORT]');
    const m = /^(tcp|udp):(\d{1,5})(?::\d{1,5})?$/.exec(pos[1]!);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) invalid(`forward ${shown(pos[1]!)} must look like tcp:HOSTPORT (or udp:…)`);
    const info = await rpc.call('vm.forwardRemove', { id: pos[0]!, protocol: m[1] as 'tcp' | 'udp', hostPort: Number(m[2]) });
    out(info, `"${info.name}" no longer forwards ${m[1]}:127.0.0.1:${m[2]}`);
    return 0;
  }
  invalid('usage: vmdesk forward add|remove|list NAME [SPEC]');
}

/** eth0, nic0 or 0. */
export function adapterIndex(text: string): number {
  const m = /^(?:eth|nic)?([0-3])$/.exec(text);
  if (!m) invalid(`adapter ${shown(text)} must be eth0-eth3 (or 0-3)`);
  return Number(m[1]);
}

/** `vmdesk link NAME ADAPTER up|down`. */
export async function linkVerb(rpc: Rpc, pos: string[], json: boolean, io: ResourceIo): Promise<number> {
  const [name, ad, state] = pos as [string, string, string];
  if (state !== 'up' && state !== 'down') invalid(`the link is up or down, got ${shown(state)}`);
  const adapter = adapterIndex(ad);
  const info = await rpc.call('vm.setLink', { id: name, adapter, up: state === 'up' });
  io.stdout.write(json ? JSON.stringify(info, null, 2) + '\n' : `"${info.name}" eth${adapter}: link ${state}\n`);
  return 0;
}
