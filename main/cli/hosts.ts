// `vmdesk hosts` (the libvirt hosts a library reaches) and `vmdesk migrate` (moving a VM between hosts): thin
// clients of the daemon's hosts.* and vm.migrate methods, which check everything themselves.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import type { HostDomain, HostStatus } from '../api/rpc-hosts.js';
import type { Rpc } from './rpc.js';

export const HOSTS_USAGE = `usage: vmdesk hosts list [--check] [--json]      hosts of this library (--check asks each one)
       vmdesk hosts add NAME URI [--pool POOL] [--no-check]
                 URI: qemu:///session, qemu:///system, qemu+ssh://user@host/system
                 (ssh keys or an agent authenticate; no password is stored; POOL: the
                 storage pool for VMDesk's disks there, "default" unless given)
       vmdesk hosts remove NAME                (refused while VMs live there)
       vmdesk hosts domains NAME [--json]      every guest defined on the host
`;

export const MIGRATE_USAGE = `usage: vmdesk migrate NAME --to HOST|local [--live] [--no-start] [--json]
       moves a VM with its disks: this machine -> a libvirt host, a libvirt host -> another (live
       while it runs with --live), or a libvirt host -> this machine (--to local)
`;

interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

function parse(args: string[], options: ParseArgsConfig['options'], want: number, names: string[]) {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...options, json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new VmdeskError(ErrorCode.invalid, (e as Error).message.split('\n')[0]!.replace(/^TypeError \[\w+\]: /, ''));
  }
  if (parsed.positionals.length < want) throw new VmdeskError(ErrorCode.invalid, `missing ${names.slice(parsed.positionals.length).join(' and ')}`);
  if (parsed.positionals.length > want) throw new VmdeskError(ErrorCode.invalid, `unexpected argument "${parsed.positionals[want]}"`);
  return { values: parsed.values as Record<string, string | boolean | undefined>, pos: parsed.positionals };
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(head), ...rows.map(line)].join('\n');
}

export function formatHosts(hosts: HostStatus[]): string {
  if (!hosts.length) return 'no hosts yet: add one with "vmdesk hosts add NAME qemu+ssh://user@host/system"';
  const checked = hosts.some((h) => h.reachable !== undefined);
  const rows = hosts.map((h) => [
    h.name,
    h.uri,
    h.pool,
    String(h.vms),
    ...(checked ? [h.reachable ? `yes (${h.latencyMs} ms)` : 'NO'] : []),
    h.where + (h.version ? `; ${h.version}` : '') + (h.error ? `; ${h.reachable ? 'warning' : 'error'}: ${h.error}` : ''),
  ]);
  return table(['NAME', 'URI', 'POOL', 'VMS', ...(checked ? ['REACHABLE'] : []), 'DETAILS'], rows);
}

function formatDomains(host: string, ds: HostDomain[]): string {
  if (!ds.length) return `host "${host}" has no guests defined`;
  return table(['NAME', 'STATE', 'VMDESK VM', 'UUID'], ds.map((d) => [d.name, d.state, d.vm ?? '-', d.uuid]));
}

function print(io: Io, json: boolean, value: unknown, text: string): void {
  io.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text + '\n');
}

export async function runHostsCli(rpc: () => Promise<Rpc>, args: string[], io: Io): Promise<number> {
  const sub = args[0];
  const rest = args.slice(1);
  switch (sub) {
    case 'list': {
      const { values } = parse(rest, { check: { type: 'boolean' } }, 0, []);
      const hosts = await (await rpc()).call('hosts.list', { check: !!values.check });
      print(io, !!values.json, hosts, formatHosts(hosts));
      return values.check && hosts.some((h) => h.reachable === false) ? 7 : 0;
    }
    case 'add': {
      const { values, pos } = parse(rest, { pool: { type: 'string' }, 'no-check': { type: 'boolean' } }, 2, ['NAME', 'URI']);
      const r = await (await rpc()).long('hosts.add', { name: pos[0]!, uri: pos[1]!, ...(values.pool ? { pool: values.pool as string } : {}), check: !values['no-check'] }, (phase) => {
        if (!values.json) io.stderr.write(`${phase}\n`);
      });
      for (const w of r.warnings) io.stderr.write(`vmdesk: warning: ${w}\n`);
      print(io, !!values.json, r, `added host "${r.host.name}" (${r.host.where}${r.host.version ? `; ${r.host.version}` : ''})`);
      return 0;
    }
    case 'remove': {
      const { values, pos } = parse(rest, {}, 1, ['NAME']);
      const r = await (await rpc()).call('hosts.remove', { name: pos[0]! });
      print(io, !!values.json, r, `removed host "${r.removed}" (nothing on it was touched)`);
      return 0;
    }
    case 'domains': {
      const { values, pos } = parse(rest, {}, 1, ['NAME']);
      const ds = await (await rpc()).call('hosts.domains', { name: pos[0]! });
      print(io, !!values.json, ds, formatDomains(pos[0]!, ds));
      return 0;
    }
    case undefined:
    case '--help':
    case 'help':
      (sub ? io.stdout : io.stderr).write(HOSTS_USAGE);
      return sub ? 0 : 2;
    default:
      throw new VmdeskError(ErrorCode.invalid, `unknown hosts command "${sub}" (list, add, remove, domains)`);
  }
}

export async function runMigrateCli(rpc: () => Promise<Rpc>, args: string[], io: Io): Promise<number> {
  if (args[0] === '--help') {
    io.stdout.write(MIGRATE_USAGE);
    return 0;
  }
  const { values, pos } = parse(args, { to: { type: 'string' }, live: { type: 'boolean' }, 'no-start': { type: 'boolean' } }, 1, ['NAME']);
  if (!values.to) throw new VmdeskError(ErrorCode.invalid, 'give the destination: --to HOST (or --to local)');
  let last = '';
  const r = await (await rpc()).long('vm.migrate', { id: pos[0]!, to: values.to as string, ...(values.live ? { live: true } : {}), ...(values['no-start'] ? { start: false } : {}) }, (phase, fraction) => {
    if (values.json) return;
    const text = `${phase}${fraction !== undefined ? `: ${Math.round(fraction * 100)}%` : ''}`;
    if (text !== last) io.stderr.write(`${text}\n`);
    last = text;
  });
  for (const w of r.warnings) io.stderr.write(`vmdesk: warning: ${w}\n`);
  print(io, !!values.json, r, `moved "${r.info.name}" to ${r.info.host ? `host "${r.info.host}"` : 'this machine'} (${r.info.state})`);
  return 0;
}

/** Verbs whose first argument (after a subcommand for disk and snapshot) is a VM, which --host qualifies. */
const VM_VERBS = new Set(['info', 'set', 'rename', 'start', 'stop', 'kill', 'pause', 'resume', 'reset', 'delete', 'console', 'screenshot', 'migrate', 'clone', 'export', 'disk', 'snapshot', 'forward', 'link', 'shell', 'suspend', 'share', 'usb']);

/**
 * `--host NAME` on a VM verb: the VM argument becomes NAME:VM, which the daemon resolves to the VM of that
 * name on that host ("local": this library) or refuses saying where the VM is. Other verbs are untouched
 * (serve has a --host of its own).
 */
export function qualifyHost(verb: string, args: string[]): string[] {
  if (!VM_VERBS.has(verb)) return args;
  let host: string | undefined;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--host') {
      host = args[++i];
      if (host === undefined || host.startsWith('-')) throw new VmdeskError(ErrorCode.invalid, '--host needs a host name (vmdesk hosts list)');
    } else if (a.startsWith('--host=')) host = a.slice('--host='.length);
    else rest.push(a);
  }
  if (host === undefined) return args;
  if (!host || host.includes(':')) throw new VmdeskError(ErrorCode.invalid, `--host "${host}" is not a host name (vmdesk hosts list)`);
  const from = verb === 'disk' || verb === 'snapshot' || verb === 'forward' || verb === 'share' || verb === 'usb' ? 1 : 0;
  const at = rest.findIndex((a, i) => i >= from && !a.startsWith('-'));
  if (at < 0) throw new VmdeskError(ErrorCode.invalid, `--host ${host} qualifies a VM name, and none was given`);
  rest[at] = `${host}:${rest[at]}`;
  return rest;
}
