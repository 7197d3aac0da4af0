// `vmdesk share add|remove|list` (shared folders) and `vmdesk guest-info` (what the guest agent reports): one
// daemon call each. Loads no schema library, like the rest of the CLI.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import type { RpcResult } from '../api/rpc.js';
import type { Rpc } from './rpc.js';

interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

const SHARE_USAGE = `usage: vmdesk share add NAME HOSTDIR [--tag TAG] [--read-only] [--driver virtiofs|9p]
       vmdesk share remove NAME TAG
       vmdesk share list NAME [--json]

  A host folder the guest mounts (virtiofs, or 9p where virtiofsd cannot run); changed while the VM is
  stopped. The tag (default: the folder's name) is what the guest mounts; list prints the mount command.
  --read-only is enforced on the host. The VM library, VMDesk's runtime folder and folders holding VM
  disks are refused.
`;

function args(argv: string[], options: Record<string, { type: 'string' | 'boolean' }>, count: number, names: string[]) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new VmdeskError(ErrorCode.invalid, (e as Error).message.split('\n')[0]!.replace(/^TypeError \[\w+\]: /, ''));
  }
  if (parsed.positionals.length < count) throw new VmdeskError(ErrorCode.invalid, `missing ${names.slice(parsed.positionals.length).join(' and ')}`);
  if (parsed.positionals.length > count) throw new VmdeskError(ErrorCode.invalid, `unexpected argument "${parsed.positionals[count]}"`);
  return { values: parsed.values as Record<string, string | boolean | undefined>, pos: parsed.positionals };
}

export function formatShares(l: RpcResult<'share.list'>): string {
  if (!l.shares.length) return `"${l.name}" has no shared folders (vmdesk share add ${l.name} HOSTDIR)`;
  const lines = [`shared folders of "${l.name}" (${l.state}):`];
  for (const s of l.shares) {
    const driver = s.active ? `${s.active.driver}, in use` : (s.driver ?? 'auto');
    lines.push(`  ${s.tag}  ${s.hostPath}${s.readOnly ? '  (read-only)' : ''}  [${driver}]`);
    lines.push(`      in the guest: mkdir -p /mnt/${s.tag} && ${s.mount}`);
  }
  for (const n of l.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}

export async function runShareCli(rpc: () => Promise<Rpc>, argv: string[], io: Io): Promise<number> {
  const sub = argv[0];
  const rest = argv.slice(1);
  const out = (json: boolean, value: unknown, text: string) => io.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text + '\n');
  switch (sub) {
    case 'add': {
      const { values, pos } = args(rest, { tag: { type: 'string' }, 'read-only': { type: 'boolean' }, driver: { type: 'string' } }, 2, ['NAME', 'HOSTDIR']);
      const driver = values.driver as string | undefined;
      if (driver !== undefined && driver !== 'virtiofs' && driver !== '9p') throw new VmdeskError(ErrorCode.invalid, `--driver must be virtiofs or 9p, got "${driver}"`);
      const info = await (await rpc()).call('share.add', {
        id: pos[0]!,
        hostPath: path.resolve(pos[1]!),
        ...(values.tag !== undefined ? { tag: values.tag as string } : {}),
        readOnly: !!values['read-only'],
        ...(driver ? { driver: driver as 'virtiofs' | '9p' } : {}),
      });
      const added = info.config?.shares?.at(-1);
      out(!!values.json, info, `shared ${added?.hostPath} with "${info.name}" as ${added?.tag}${added?.readOnly ? ' (read-only)' : ''}; see "vmdesk share list ${info.name}" for the mount command`);
      return 0;
    }
    case 'remove':
    case 'rm': {
      const { values, pos } = args(rest, {}, 2, ['NAME', 'TAG']);
      const info = await (await rpc()).call('share.remove', { id: pos[0]!, tag: pos[1]! });
      out(!!values.json, info, `"${info.name}" no longer shares ${pos[1]}`);
      return 0;
    }
    case 'list':
    case 'ls': {
      const { values, pos } = args(rest, {}, 1, ['NAME']);
      const l = await (await rpc()).call('share.list', { id: pos[0]! });
      out(!!values.json, l, formatShares(l));
      return 0;
    }
    case undefined:
    case '--help':
    case 'help':
      (sub ? io.stdout : io.stderr).write(SHARE_USAGE);
      return sub ? 0 : 2;
    default:
      throw new VmdeskError(ErrorCode.invalid, `unknown share command "${sub}" (vmdesk share --help)`);
  }
}

export function formatGuestAgent(name: string, r: RpcResult<'vm.guestAgent'>): string {
  if (!r.ok) return `"${name}": no answer from the guest agent: ${r.reason ?? 'unknown reason'}`;
  const lines = [`guest agent of "${name}":`];
  if (r.hostname) lines.push(`  host name: ${r.hostname}`);
  if (r.os) lines.push(`  os:        ${r.os}`);
  for (const i of r.interfaces) {
    lines.push(`  ${i.name}${i.mac ? ` (${i.mac})` : ''}: ${i.addresses.map((a) => `${a.address}/${a.prefix}`).join(', ') || 'no address'}`);
  }
  return lines.join('\n');
}

/** `vmdesk guest-info NAME [--json]`: exit 0 when the agent answered, 6 (wrong state) when it did not. */
export async function runGuestInfoCli(rpc: () => Promise<Rpc>, argv: string[], io: Io): Promise<number> {
  const { values, pos } = args(argv, {}, 1, ['NAME']);
  const r = await (await rpc()).call('vm.guestAgent', { id: pos[0]! });
  io.stdout.write(values.json ? JSON.stringify(r, null, 2) + '\n' : formatGuestAgent(pos[0]!, r) + '\n');
  return r.ok ? 0 : 6;
}

/** Options of `vmdesk create` and `vmdesk set` for the guest integration devices. */
export const GUEST_OPTIONS = {
  clipboard: { type: 'string' },
  'guest-agent': { type: 'string' },
  display: { type: 'string' },
} as const;

function onOff(v: unknown, what: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === 'on' || v === 'off') return v === 'on';
  throw new VmdeskError(ErrorCode.invalid, `${what} must be on or off, got "${String(v)}"`);
}

/** --clipboard on|off, --guest-agent on|off, --display vga|virtio as settings fields (absent when not given). */
export function guestSettingsFrom(values: Record<string, unknown>): { clipboard?: boolean; guestAgent?: boolean; display?: 'vga' | 'virtio' } {
  const out: { clipboard?: boolean; guestAgent?: boolean; display?: 'vga' | 'virtio' } = {};
  const clipboard = onOff(values.clipboard, '--clipboard');
  const agent = onOff(values['guest-agent'], '--guest-agent');
  if (clipboard !== undefined) out.clipboard = clipboard;
  if (agent !== undefined) out.guestAgent = agent;
  if (values.display !== undefined) {
    if (values.display !== 'vga' && values.display !== 'virtio') throw new VmdeskError(ErrorCode.invalid, `--display must be vga or virtio, got "${String(values.display)}"`);
    out.display = values.display;
  }
  return out;
}
