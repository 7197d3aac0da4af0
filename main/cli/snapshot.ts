// `vmdesk snapshot …`, `vmdesk clone`, `vmdesk export`, `vmdesk import`: argument parsing and output; the work
// is the daemon's (one RPC call each, progress from its events).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { VmdeskError, ErrorCode } from '../api/errors.js';
import type { SnapshotListingWire, SnapshotViewWire } from '../api/rpc.js';
import type { Rpc } from './rpc.js';

export interface SnapshotCliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  json: boolean;
}

type SnapshotListing = SnapshotListingWire;
type SnapshotView = SnapshotViewWire;

/** The snapshot tree as indented text, children under their parent, "<- current state" where it is. */
export function renderTreeText(l: { current: string | null; snapshots: SnapshotView[] }, label: (n: SnapshotView) => string): string[] {
  const lines: string[] = [];
  const kids = (id: string | null) => l.snapshots.filter((s) => s.parent === id || (id === null && s.parent !== null && !l.snapshots.some((p) => p.id === s.parent)));
  const walk = (n: SnapshotView, prefix: string, last: boolean, root: boolean, depth: number) => {
    const here = l.current === n.id ? '  <- current state' : '';
    lines.push(`${root ? '' : prefix + (last ? '└─ ' : '├─ ')}${label(n)}${here}`);
    if (depth > 10_000) return;
    const c = kids(n.id);
    c.forEach((k, i) => walk(k, root ? '' : prefix + (last ? '   ' : '│  '), i === c.length - 1, false, depth + 1));
  };
  for (const r of kids(null)) walk(r, '', true, true, 0);
  return lines;
}

/** Which importer a file goes to, by its name (the daemon decides the same way). */
function importKind(file: string): 'archive' | 'appliance' | 'disk' {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.vmdesk' || ext === '.tar') return 'archive';
  if (ext === '.ova' || ext === '.ovf') return 'appliance';
  return 'disk';
}

export const SNAPSHOT_USAGE = `usage:
  vmdesk snapshot take NAME SNAP [--description TEXT]   live if running, disk-only if stopped
  vmdesk snapshot list NAME [--tree] [--json]
  vmdesk snapshot info NAME SNAP [--json]
  vmdesk snapshot restore NAME SNAP [--no-save-current] [--dry-run]
                                                         the current state is snapshotted first by default;
                                                         --dry-run says what the restore would do and changes nothing
  vmdesk snapshot delete NAME SNAP [--branch]           --branch also deletes everything below SNAP
  vmdesk snapshot rename NAME SNAP NEWNAME
  vmdesk snapshot describe NAME SNAP TEXT
  vmdesk snapshot thumbnail NAME SNAP FILE.png
  vmdesk snapshot convert-disk NAME DISK                 raw/vmdk/… disk to qcow2, so it can hold snapshots
  vmdesk snapshot compare NAME SNAP [SNAP2]              settings of SNAP against SNAP2 (or against now), in words
  vmdesk snapshot schedule NAME [--every 30m --keep 5 | --off]
                                                         automatic snapshots while NAME runs (5m to 7d; keep 1-100);
                                                         without options, shows the schedule and the next one
  vmdesk snapshot retention [--keep N|all]               how many automatic "Before restoring" snapshots each VM
                                                         keeps (default 3); without --keep, shows it
  vmdesk snapshot prune NAME                             applies retention now (old automatic snapshots go)
  vmdesk snapshot keep NAME SNAP                         keeps an automatic snapshot for good (retention skips it)
  vmdesk clone NAME NEWNAME [--snapshot SNAP] [--linked]
  vmdesk export NAME FILE.vmdesk [--with-snapshots]
  vmdesk export NAME FILE.ova                            OVF 1.0 appliance (VirtualBox, VMware): streamOptimized VMDKs, SHA256 manifest
  vmdesk import FILE [--name NEWNAME] [--cpus N] [--memory MIB] [--format F]
                                                         .vmdesk, .ova, .ovf, .vdi, .vmdk, .vhdx, .vhd, .qcow2, .img, .raw;
                                                         --cpus/--memory override an appliance's or set a disk image's;
                                                         --format (qcow2, raw, vmdk, vdi, vhdx, vhd) for a disk image only
`;

function parse(args: string[], options: ParseArgsConfig['options'], min: number, max: number, names: string[]) {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...options, json: { type: 'boolean' }, help: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new VmdeskError(ErrorCode.invalid, (e as Error).message.split('\n')[0]!.replace(/^TypeError \[\w+\]: /, ''));
  }
  const pos = parsed.positionals;
  if (pos.length < min) throw new VmdeskError(ErrorCode.invalid, `missing ${names.slice(pos.length, min).join(' and ')}`);
  if (pos.length > max) throw new VmdeskError(ErrorCode.invalid, `unexpected argument "${pos[max]}"`);
  return { values: parsed.values as Record<string, string | boolean | undefined>, pos };
}

function intOption(v: string | boolean | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isInteger(n) || n <= 0) throw new VmdeskError(ErrorCode.invalid, `${what} must be a positive whole number`);
  return n;
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** "30m", "2h", "1d", "1h30m" or plain minutes, as minutes. */
export function parseEvery(v: string): number {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m?)?$/.exec(v.trim());
  if (!v.trim() || !m || (m[1] === undefined && m[2] === undefined && m[3] === undefined)) throw new VmdeskError(ErrorCode.invalid, `--every must be a duration such as 30m, 2h or 1d, got "${v}"`);
  return Number(m[1] ?? 0) * 24 * 60 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
}

function everyText(minutes: number): string {
  if (minutes % (24 * 60) === 0) return `${minutes / (24 * 60)}d`;
  if (minutes % 60 === 0) return `${minutes / 60}h`;
  return minutes > 60 ? `${Math.floor(minutes / 60)}h${minutes % 60}m` : `${minutes}m`;
}

function shortTime(iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function label(s: SnapshotView): string {
  const flags = [s.kind, s.auto ? `automatic: ${s.auto === 'safety' ? 'before a restore' : 'scheduled'}` : '', s.stateFile ? 'micro-VM: memory only, disks not captured' : '', s.missingOn.length ? `MISSING on ${s.missingOn.join(',')}` : '', s.adopted ? 'adopted' : '', s.linkedClones.length ? `base of ${s.linkedClones.length} linked clone(s)` : ''].filter(Boolean);
  return `${s.name}  [${s.id}]  ${shortTime(s.time)}  (${flags.join(', ')}${s.vmStateBytes ? `, RAM ${bytes(s.vmStateBytes)}` : ''})`;
}

export function formatListing(l: SnapshotListing, tree: boolean): string {
  const lines: string[] = [];
  if (!l.snapshots.length) lines.push(`"${l.vmName}" has no snapshots`);
  else if (tree) {
    lines.push(...renderTreeText(l, label));
  } else {
    const w = Math.max(4, ...l.snapshots.map((s) => s.name.length));
    lines.push(`${'NAME'.padEnd(w)}  ID          KIND       TAKEN                 PARENT`);
    for (const s of l.snapshots) {
      const parent = s.parent ? l.snapshots.find((p) => p.id === s.parent)?.name ?? s.parent : '-';
      lines.push(`${s.name.padEnd(w)}  ${s.id}  ${s.kind.padEnd(9)}  ${shortTime(s.time).padEnd(20)}  ${parent}${s.isCurrent ? '   <- current state' : ''}${s.missingOn.length ? '   MISSING' : ''}${s.auto ? `   automatic: ${s.auto === 'safety' ? 'before a restore' : 'scheduled'}` : ''}`);
    }
  }
  if (l.schedule) lines.push(`schedule: every ${everyText(l.schedule.everyMinutes)}, the last ${l.schedule.keep} kept${l.schedule.nextAt ? `; next at ${shortTime(l.schedule.nextAt)}` : ' (while running)'}${l.schedule.lastError ? `; last attempt failed: ${l.schedule.lastError}` : ''}`);
  for (const d of l.unsupported) lines.push(`note: disk ${d.diskId} is ${d.format} and cannot hold snapshots; ${d.hint}`);
  for (const n of l.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}

/**
 * Runs one snapshot/clone/export/import command; returns the exit code, throws VmdeskError on failure. The
 * daemon is reached (`connect`) only once the command is more than a request for its usage.
 */
export async function runSnapshotCli(connect: () => Promise<Rpc>, verb: 'snapshot' | 'clone' | 'export' | 'import', args: string[], io: SnapshotCliIo): Promise<number> {
  const out = (value: unknown, text: string) => io.stdout.write(io.json ? JSON.stringify(value, null, 2) + '\n' : text.endsWith('\n') ? text : text + '\n');
  // Progress goes to stderr as lines (scripts read stdout); percentages only when they move.
  let lastLine = '';
  const progress = (phase: string, fraction?: number) => {
    if (io.json) return;
    const line = fraction === undefined ? phase : `${phase}: ${Math.floor(fraction * 100)}%`;
    if (line !== lastLine) io.stderr.write(line + '\n');
    lastLine = line;
  };
  if (args.includes('--help') || args.includes('-h')) {
    io.stdout.write(SNAPSHOT_USAGE);
    return 0;
  }
  const rpc = await connect();

  if (verb === 'clone') {
    const { values, pos } = parse(args, { snapshot: { type: 'string' }, linked: { type: 'boolean' } }, 2, 2, ['NAME', 'NEWNAME']);
    const info = await rpc.long('snapshot.clone', { id: pos[0]!, name: pos[1]!, ...(values.snapshot ? { snapshot: values.snapshot as string } : {}), linked: !!values.linked }, progress);
    out(info, `cloned "${pos[0]}" to "${info.name}" (${info.id})${values.linked ? ', linked' : ''}`);
    return 0;
  }
  if (verb === 'export') {
    const { values, pos } = parse(args, { 'with-snapshots': { type: 'boolean' } }, 2, 2, ['NAME', 'FILE']);
    const file = path.resolve(pos[1]!);
    const ova = path.extname(file).toLowerCase() === '.ova';
    if (ova && values['with-snapshots']) throw new VmdeskError(ErrorCode.invalid, 'an OVA cannot carry snapshots; export to a .vmdesk file to keep them');
    const r = await rpc.long('vm.export', { id: pos[0]!, file, includeSnapshots: !!values['with-snapshots'] }, progress);
    for (const w of r.warnings) io.stderr.write(`warning: ${w}\n`);
    out(r, `exported "${pos[0]}" to ${r.file} (${bytes(r.bytes)}${ova ? ', OVA' : values['with-snapshots'] ? ', with snapshots' : ''})`);
    return 0;
  }
  if (verb === 'import') {
    const { values, pos } = parse(args, { name: { type: 'string' }, cpus: { type: 'string' }, memory: { type: 'string' }, format: { type: 'string' } }, 1, 1, ['FILE']);
    const file = path.resolve(pos[0]!);
    const cpus = intOption(values.cpus, '--cpus');
    const memoryMiB = intOption(values.memory, '--memory');
    const format = values.format as string | undefined;
    const kind = importKind(file);
    if (format !== undefined && kind !== 'disk') throw new VmdeskError(ErrorCode.invalid, '--format applies to bare disk images only (an archive or appliance says what its disks are)');
    if (kind === 'archive' && (cpus !== undefined || memoryMiB !== undefined)) throw new VmdeskError(ErrorCode.invalid, '--cpus and --memory do not apply to a .vmdesk archive (it keeps its settings); change them after import with vmdesk set');
    if (format !== undefined && !['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'vpc', 'vhd'].includes(format)) throw new VmdeskError(ErrorCode.invalid, `--format must be one of qcow2, raw, vmdk, vdi, vhdx, vhd, got "${format}"`);
    const info = await rpc.long(
      'vm.import',
      { file, ...(values.name ? { name: values.name as string } : {}), ...(cpus !== undefined ? { cpus } : {}), ...(memoryMiB !== undefined ? { memoryMiB } : {}), ...(format ? { format: format as 'raw' } : {}) },
      progress,
    );
    for (const w of info.warnings) io.stderr.write(`warning: ${w}\n`);
    const hw = kind === 'appliance' ? `: ${info.config?.cpus} CPU, ${info.config?.memoryMiB} MiB, ${info.config?.disks.length} disk(s)` : kind === 'disk' ? ` from ${path.basename(file)}` : '';
    out(info, `imported "${info.name}" (${info.id})${hw}`);
    return 0;
  }

  const [sub, ...rest] = args;
  switch (sub) {
    case 'take': {
      const { values, pos } = parse(rest, { description: { type: 'string' } }, 2, 2, ['NAME', 'SNAP']);
      const n = await rpc.long('snapshot.take', { id: pos[0]!, name: pos[1]!, ...(values.description !== undefined ? { description: values.description as string } : {}) }, progress);
      out(n, `took ${n.kind} snapshot "${n.name}" (${n.id}) of "${pos[0]}"`);
      return 0;
    }
    case 'list': {
      const { values, pos } = parse(rest, { tree: { type: 'boolean' } }, 1, 1, ['NAME']);
      const l = await rpc.call('snapshot.list', { id: pos[0]! });
      out(l, formatListing(l, !!values.tree));
      return 0;
    }
    case 'info': {
      const { pos } = parse(rest, {}, 2, 2, ['NAME', 'SNAP']);
      const d = await rpc.call('snapshot.info', { id: pos[0]!, snapshot: pos[1]! });
      const lines = [
        `name:        ${d.name}`,
        `id:          ${d.id}`,
        `kind:        ${d.kind}`,
        `taken:       ${shortTime(d.time)}`,
        `parent:      ${d.parent ?? '-'}`,
        `children:    ${d.children.join(', ') || '-'}`,
        `current:     ${d.isCurrent ? 'yes (the current state descends from it)' : 'no'}`,
        `RAM state:   ${bytes(d.vmStateBytes)}`,
        `disks:       ${d.disks.join(', ')}${d.missingOn.length ? `  (MISSING on ${d.missingOn.join(', ')})` : ''}`,
        `thumbnail:   ${d.thumbnailPath ?? '-'}`,
        `description: ${d.description || '-'}`,
      ];
      if (d.linkedClones.length) lines.push(`linked clones: ${d.linkedClones.join(', ')}`);
      if (d.auto) lines.push(`automatic:   ${d.auto === 'safety' ? 'taken before a restore' : 'taken by the schedule'} (retention may delete it; vmdesk snapshot keep keeps it)`);
      lines.push(d.configDiff.length ? 'settings at the snapshot → now:' : 'settings: same as now');
      if (d.changes) for (const c of d.changes) lines.push(`  ${c.label}: ${c.from} → ${c.to}`);
      else for (const c of d.configDiff) lines.push(`  ${c.field}: ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)}`);
      out(d, lines.join('\n'));
      return 0;
    }
    case 'restore': {
      const { values, pos } = parse(rest, { 'no-save-current': { type: 'boolean' }, 'dry-run': { type: 'boolean' } }, 2, 2, ['NAME', 'SNAP']);
      if (values['dry-run']) {
        const plan = await rpc.call('snapshot.restorePlan', { id: pos[0]!, snapshot: pos[1]!, saveCurrent: !values['no-save-current'] });
        const lines = [`restoring "${plan.snapshot.name}" would:`, ...plan.steps.map((x) => `  - ${x}`)];
        for (const b of plan.blockers) lines.push(`cannot restore: ${b}`);
        out(plan, lines.join('\n'));
        return plan.blockers.length ? 1 : 0;
      }
      const r = await rpc.long('snapshot.restore', { id: pos[0]!, snapshot: pos[1]!, saveCurrent: !values['no-save-current'] }, progress);
      for (const w of r.warnings) io.stderr.write(`warning: ${w}\n`);
      out(r, `restored "${r.restored.name}"; "${r.info.name}" is ${r.info.state}${r.safety ? ` (the previous state was saved as "${r.safety.name}")` : ''}${r.pruned?.length ? `\nretention removed older automatic snapshots: ${r.pruned.join(', ')}` : ''}`);
      return 0;
    }
    case 'delete': {
      const { values, pos } = parse(rest, { branch: { type: 'boolean' } }, 2, 2, ['NAME', 'SNAP']);
      const r = await rpc.long('snapshot.delete', { id: pos[0]!, snapshot: pos[1]!, branch: !!values.branch }, progress);
      out(r, `deleted ${r.deleted.length} snapshot${r.deleted.length === 1 ? '' : 's'}`);
      return 0;
    }
    case 'rename': {
      const { pos } = parse(rest, {}, 3, 3, ['NAME', 'SNAP', 'NEWNAME']);
      const n = await rpc.call('snapshot.rename', { id: pos[0]!, snapshot: pos[1]!, name: pos[2]! });
      out(n, `renamed snapshot to "${n.name}"`);
      return 0;
    }
    case 'describe': {
      const { pos } = parse(rest, {}, 3, 3, ['NAME', 'SNAP', 'TEXT']);
      const n = await rpc.call('snapshot.describe', { id: pos[0]!, snapshot: pos[1]!, description: pos[2]! });
      out(n, `updated the description of "${n.name}"`);
      return 0;
    }
    case 'thumbnail': {
      const { pos } = parse(rest, {}, 3, 3, ['NAME', 'SNAP', 'FILE']);
      const { png } = await rpc.call('snapshot.thumbnail', { id: pos[0]!, snapshot: pos[1]! });
      if (!png) throw new VmdeskError(ErrorCode.notFound, `snapshot "${pos[1]}" has no thumbnail (only live snapshots do)`);
      const data = Buffer.from(png, 'base64');
      await fs.writeFile(path.resolve(pos[2]!), data);
      out({ file: path.resolve(pos[2]!), bytes: data.length }, `wrote ${path.resolve(pos[2]!)}`);
      return 0;
    }
    case 'convert-disk': {
      const { pos } = parse(rest, {}, 2, 2, ['NAME', 'DISK']);
      const info = await rpc.long('snapshot.convertDisk', { id: pos[0]!, disk: pos[1]! }, progress);
      out(info, `converted disk ${pos[1]} of "${info.name}" to qcow2`);
      return 0;
    }
    case 'compare': {
      const { pos } = parse(rest, {}, 2, 3, ['NAME', 'SNAP']);
      const c = await rpc.call('snapshot.compare', { id: pos[0]!, from: pos[1]!, ...(pos[2] ? { to: pos[2] } : {}) });
      const against = c.to ? `"${c.to.name}"` : 'now';
      const lines = c.unknown
        ? [`the settings of "${c.from.name}" are not known (it was found on the disks, not taken by VMDesk)`]
        : c.changes.length
          ? [`"${c.from.name}" → ${against}:`, ...c.changes.map((x) => `  ${x.label}: ${x.from} → ${x.to}`)]
          : [`"${c.from.name}" and ${against} have the same settings`];
      out(c, lines.join('\n'));
      return 0;
    }
    case 'schedule': {
      const { values, pos } = parse(rest, { every: { type: 'string' }, keep: { type: 'string' }, off: { type: 'boolean' } }, 1, 1, ['NAME']);
      if (values.off && (values.every !== undefined || values.keep !== undefined)) throw new VmdeskError(ErrorCode.invalid, '--off takes no --every or --keep');
      if (values.off) {
        const info = await rpc.call('snapshot.schedule', { id: pos[0]!, schedule: null });
        out(info, `"${info.name}" has no snapshot schedule now (its scheduled snapshots are kept)`);
        return 0;
      }
      if (values.every === undefined && values.keep === undefined) {
        const l = await rpc.call('snapshot.list', { id: pos[0]! });
        const s = l.schedule;
        out(s ?? null, s ? `every ${everyText(s.everyMinutes)}, the last ${s.keep} kept; ${s.nextAt ? `next at ${shortTime(s.nextAt)}` : 'the next one is taken once it has run that long'}${s.lastError ? `\nlast attempt failed: ${s.lastError}` : ''}` : `"${l.vmName}" has no snapshot schedule`);
        return 0;
      }
      const current = (await rpc.call('snapshot.list', { id: pos[0]! })).schedule;
      const everyMinutes = values.every !== undefined ? parseEvery(values.every as string) : current?.everyMinutes;
      const keep = values.keep !== undefined ? intOption(values.keep, '--keep') : current?.keep ?? 5;
      if (everyMinutes === undefined) throw new VmdeskError(ErrorCode.invalid, 'missing --every (e.g. --every 30m)');
      const info = await rpc.call('snapshot.schedule', { id: pos[0]!, schedule: { everyMinutes, keep: keep! } });
      out(info, `"${info.name}" is snapshotted every ${everyText(everyMinutes)} while it runs; the last ${keep} scheduled snapshots are kept`);
      return 0;
    }
    case 'retention': {
      const { values } = parse(rest, { keep: { type: 'string' } }, 0, 0, []);
      const keep = values.keep === undefined ? undefined : values.keep === 'all' ? null : intOption(values.keep, '--keep');
      const p = await rpc.call('snapshot.preferences', keep === undefined ? {} : { safetyKeep: keep });
      out(p, p.safetyKeep === null ? 'every automatic "Before restoring" snapshot is kept' : `each VM keeps its newest ${p.safetyKeep} automatic "Before restoring" snapshot${p.safetyKeep === 1 ? '' : 's'}`);
      return 0;
    }
    case 'prune': {
      const { pos } = parse(rest, {}, 1, 1, ['NAME']);
      const r = await rpc.long('snapshot.prune', { id: pos[0]! }, progress);
      out(r, r.deleted.length ? `removed ${r.deleted.length} old automatic snapshot${r.deleted.length === 1 ? '' : 's'}: ${r.deleted.join(', ')}` : 'nothing to remove');
      return 0;
    }
    case 'keep': {
      const { pos } = parse(rest, {}, 2, 2, ['NAME', 'SNAP']);
      const n = await rpc.call('snapshot.keep', { id: pos[0]!, snapshot: pos[1]! });
      out(n, `"${n.name}" is kept: retention will not delete it`);
      return 0;
    }
    case undefined:
      throw new VmdeskError(ErrorCode.invalid, `missing snapshot command\n${SNAPSHOT_USAGE}`);
    default:
      throw new VmdeskError(ErrorCode.invalid, `unknown snapshot command "${sub}" (take, list, info, restore, delete, rename, describe, thumbnail, convert-disk, compare, schedule, retention, prune, keep)`);
  }
}
