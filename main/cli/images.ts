// `vmdesk images list|pull|pause|cancel|rm|add|forget` and `vmdesk create NAME --image ID`: the gallery, the
// image cache and VMs made from images, as calls to the daemon (which downloads, verifies and builds).
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { CachedImage, DownloadInfo, GuestInfo, ImageListing, UserSourceInput, Verification } from '../api/images.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { parseSize } from '../api/values.js';
import type { Rpc } from './rpc.js';
import { networkFrom } from './resources.js';

export interface ImagesIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

export const IMAGES_USAGE = `usage: vmdesk images <verb> ...

  list [--json]                 the gallery and your sources: what is cached, partial or downloading,
                                how each was verified, and the cache's size and folder
  pull ID [--json]              download into the cache (progress, speed, ETA); Ctrl-C pauses, and
                                pulling again resumes where it stopped; a cached image is reused
  pause ID | cancel ID          pause a download (kept for resuming) or cancel it (partial file removed)
  rm ID... | rm --all           remove cached images ("remove cached images")
  add ID --url URL (--sha256 HEX | --sha512 HEX | --sums URL [--algorithm sha256|sha512]
         [--sig URL --sig-type detached|clearsigned --keyring FILE])
         [--format qcow2|raw|iso] [--kind cloud|installer] [--name TEXT] [--max-size SIZE]
                                add your own source (checked like the gallery's)
  forget ID                     remove a source you added

Images are checked against their upstream checksum file (sha256/sha512) before use; where upstream signs
it and Debian packages its key (debian-keyring for Debian's installers), the signature is checked with
gpgv. "list" says for every cached image what was and was not verified.
`;

function parse(args: string[], options: ParseArgsConfig['options'], min: number, max: number, names: string): { values: Record<string, string | boolean | string[] | undefined>; pos: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...options, json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new VmdeskError(ErrorCode.invalid, (e as Error).message.split('\n')[0]!.replace(/^TypeError \[\w+\]: /, ''));
  }
  if (parsed.positionals.length < min) throw new VmdeskError(ErrorCode.invalid, `missing ${names}`);
  if (parsed.positionals.length > max) throw new VmdeskError(ErrorCode.invalid, `unexpected argument "${parsed.positionals[max]}"`);
  return { values: parsed.values as Record<string, string | boolean | string[] | undefined>, pos: parsed.positionals };
}

export function bytesText(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

function duration(s: number): string {
  if (s < 60) return `${Math.ceil(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function checkText(v: Verification): string {
  return { signed: `${v.algorithm}+gpg`, unsigned: v.algorithm, unchecked: `${v.algorithm}, sig unchecked`, none: `${v.algorithm} (yours)` }[v.signature];
}

export function formatListing(l: ImageListing): string {
  const rows = l.images.map((i) => {
    const state = i.download && !['done', 'failed', 'cancelled', 'paused'].includes(i.download.state)
      ? `downloading ${i.download.totalBytes ? Math.floor((i.download.bytes / i.download.totalBytes) * 100) : 0}%`
      : i.cached
        ? `cached ${bytesText(i.cached.bytes)}`
        : i.partialBytes !== undefined
          ? `partial ${bytesText(i.partialBytes)}${i.download?.state === 'failed' ? ' (failed)' : ''}`
          : i.entry.kind === 'vendor-page'
            ? 'vendor page'
            : '-';
    return [i.entry.id + (i.source === 'user' ? ' *' : ''), i.entry.kind, i.entry.format, state, i.cached ? checkText(i.cached.verification) : '', i.entry.name];
  });
  const head = ['ID', 'KIND', 'FORMAT', 'STATE', 'CHECKED', 'NAME'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [line(head), ...rows.map(line), ''];
  for (const i of l.images.filter((x) => x.cached)) out.push(`${i.entry.id}: ${i.cached!.verification.summary}`);
  if (l.images.some((x) => x.source === 'user')) out.push('* added by you (vmdesk images forget ID removes it)');
  out.push(`cache: ${l.cacheDir} (${bytesText(l.cacheBytes)}; vmdesk images rm --all frees it)`);
  return out.join('\n');
}

/** One status line: "debian-12: 120.0 MiB of 400.0 MiB (30%), 11.2 MiB/s, 25 s left". */
export function progressText(d: DownloadInfo): string {
  const of = d.totalBytes ? ` of ${bytesText(d.totalBytes)} (${Math.floor((d.bytes / d.totalBytes) * 100)}%)` : '';
  const speed = d.bytesPerSecond ? `, ${bytesText(d.bytesPerSecond)}/s` : '';
  const eta = d.etaSeconds ? `, ${duration(d.etaSeconds)} left` : '';
  const resumed = d.resumedFrom ? `, resumed at ${bytesText(d.resumedFrom)}` : '';
  return `${d.image}: ${d.state === 'running' ? `${bytesText(d.bytes)}${of}${speed}${eta}${resumed}` : d.state}`;
}

/** Pulls with a progress line (redrawn on a terminal, every few seconds otherwise); Ctrl-C pauses. */
export async function pullWithProgress(rpc: Rpc, id: string, io: ImagesIo, quiet: boolean): Promise<CachedImage> {
  const tty = !!io.stderr.isTTY;
  let lastLine = 0;
  let drawn = false;
  const off = rpc.client.onEvent((ev) => {
    if (quiet || ev.type !== 'image-download' || ev.download.image !== id) return;
    const now = Date.now();
    const d = ev.download;
    if (tty) {
      io.stderr.write(`\r\x1b[K${progressText(d)}`);
      drawn = true;
    } else if (now - lastLine > 2000 || d.state !== 'running') {
      lastLine = now;
      io.stderr.write(`${progressText(d)}\n`);
    }
  });
  const onInt = () => {
    void rpc.call('image.pause', { image: id }).catch(() => {});
  };
  process.once('SIGINT', onInt);
  try {
    return await rpc.call('image.pull', { image: id });
  } finally {
    process.off('SIGINT', onInt);
    off();
    if (drawn) io.stderr.write('\n');
  }
}

export async function runImagesCli(rpc: () => Promise<Rpc>, args: string[], io: ImagesIo): Promise<number> {
  const verb = args[0];
  const rest = args.slice(1);
  const print = (json: boolean, value: unknown, text: string) => io.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text + '\n');
  switch (verb) {
    case 'list':
    case 'ls': {
      const { values } = parse(rest, {}, 0, 0, '');
      const l = await (await rpc()).call('image.list', {});
      print(!!values.json, l, formatListing(l));
      return 0;
    }
    case 'pull': {
      const { values, pos } = parse(rest, {}, 1, 1, 'ID');
      const rec = await pullWithProgress(await rpc(), pos[0]!, io, !!values.json);
      print(!!values.json, rec, `${rec.id}: ${rec.file} (${bytesText(rec.bytes)})\nverified: ${rec.verification.summary}`);
      return 0;
    }
    case 'pause': {
      const { values, pos } = parse(rest, {}, 1, 1, 'ID');
      const d = await (await rpc()).call('image.pause', { image: pos[0]! });
      print(!!values.json, d, `pausing ${pos[0]} at ${bytesText(d.bytes)}; "vmdesk images pull ${pos[0]}" resumes it`);
      return 0;
    }
    case 'cancel': {
      const { values, pos } = parse(rest, {}, 1, 1, 'ID');
      const r = await (await rpc()).call('image.cancel', { image: pos[0]! });
      print(!!values.json, r, `cancelled ${pos[0]}; its partial file was removed`);
      return 0;
    }
    case 'rm':
    case 'remove': {
      const { values, pos } = parse(rest, { all: { type: 'boolean' } }, 0, 500, 'ID');
      if (!values.all && !pos.length) throw new VmdeskError(ErrorCode.invalid, 'name the images to remove, or give --all');
      if (values.all && pos.length) throw new VmdeskError(ErrorCode.invalid, 'give either image ids or --all, not both');
      const r = await (await rpc()).call('image.remove', values.all ? { all: true } : { images: pos });
      print(!!values.json, r, r.removed.length ? `removed ${r.removed.join(', ')} (${bytesText(r.freedBytes)} freed)` : 'the cache was empty');
      return 0;
    }
    case 'add': {
      const { values, pos } = parse(
        rest,
        {
          url: { type: 'string' },
          sha256: { type: 'string' },
          sha512: { type: 'string' },
          sums: { type: 'string' },
          algorithm: { type: 'string' },
          sig: { type: 'string' },
          'sig-type': { type: 'string' },
          keyring: { type: 'string' },
          format: { type: 'string' },
          kind: { type: 'string' },
          name: { type: 'string' },
          'max-size': { type: 'string' },
        },
        1,
        1,
        'ID',
      );
      const v = values as Record<string, string | undefined>;
      if (!v.url) throw new VmdeskError(ErrorCode.invalid, '--url is required');
      const given = [v.sha256, v.sha512, v.sums].filter(Boolean).length;
      if (given !== 1) throw new VmdeskError(ErrorCode.invalid, 'give exactly one of --sha256, --sha512 or --sums (VMDesk does not use an image it cannot check)');
      let verify: UserSourceInput['verify'];
      if (v.sums) {
        const algorithm = (v.algorithm ?? 'sha256') as 'sha256' | 'sha512';
        const signature = v.sig || v['sig-type'] || v.keyring ? { type: (v['sig-type'] ?? 'detached') as 'detached', ...(v.sig ? { url: v.sig } : {}), ...(v.keyring ? { keyring: path.resolve(v.keyring) } : {}) } : undefined;
        verify = { sums: v.sums, algorithm, ...(signature ? { signature } : {}) };
      } else verify = { checksum: v.sha256 ? `sha256:${v.sha256.toLowerCase()}` : `sha512:${v.sha512!.toLowerCase()}` };
      const format = (v.format ?? (v.url.toLowerCase().endsWith('.iso') ? 'iso' : v.url.toLowerCase().endsWith('.raw') ? 'raw' : 'qcow2')) as 'qcow2';
      const input: UserSourceInput = {
        id: pos[0]!,
        url: v.url,
        format,
        kind: (v.kind ?? (format === ('iso' as string) ? 'installer' : 'cloud')) as 'cloud',
        verify,
        ...(v.name ? { name: v.name } : {}),
        ...(v['max-size'] ? { maxBytes: parseSize(v['max-size']) } : {}),
      };
      const entry = await (await rpc()).call('image.addSource', input);
      print(!!values.json, entry, `added ${entry.id} (${entry.kind}, ${entry.format}); "vmdesk images pull ${entry.id}" downloads it`);
      return 0;
    }
    case 'forget': {
      const { values, pos } = parse(rest, {}, 1, 1, 'ID');
      const r = await (await rpc()).call('image.removeSource', { image: pos[0]! });
      if (!r.removed) throw new VmdeskError(ErrorCode.notFound, `you added no source "${pos[0]}"`);
      print(!!values.json, r, `forgot ${pos[0]} (its cached image stays until "vmdesk images rm ${pos[0]}")`);
      return 0;
    }
    case undefined:
    case '--help':
    case 'help':
      io.stdout.write(IMAGES_USAGE);
      return verb ? 0 : 2;
    default:
      throw new VmdeskError(ErrorCode.invalid, `unknown images verb "${verb}" (vmdesk images --help)`);
  }
}

const CREATE_OPTIONS = {
  image: { type: 'string' },
  cpus: { type: 'string' },
  memory: { type: 'string' },
  disk: { type: 'string' },
  firmware: { type: 'string' },
  os: { type: 'string' },
  user: { type: 'string' },
  hostname: { type: 'string' },
  package: { type: 'string', multiple: true },
  'user-data': { type: 'string' },
  'ssh-port': { type: 'string' },
  accel: { type: 'string' },
  net: { type: 'string', multiple: true },
  forward: { type: 'string', multiple: true },
} as const satisfies ParseArgsConfig['options'];

const USER_DATA_MAX = 256 * 1024;

/** `vmdesk create NAME --image ID [...]`: pull (with progress) if needed, then the daemon builds the VM. */
export async function createFromImageCli(rpc: () => Promise<Rpc>, args: string[], io: ImagesIo): Promise<number> {
  const { values, pos } = parse(args, CREATE_OPTIONS, 1, 1, 'NAME');
  const v = values as Record<string, string | string[] | boolean | undefined>;
  const num = (s: unknown, what: string) => {
    if (s === undefined) return undefined;
    if (typeof s !== 'string' || !/^\d+$/.test(s)) throw new VmdeskError(ErrorCode.invalid, `${what} must be a whole number, got "${String(s)}"`);
    return Number(s);
  };
  const size = (s: unknown, what: string) => {
    if (s === undefined) return undefined;
    try {
      return parseSize(String(s));
    } catch (e) {
      throw new VmdeskError(ErrorCode.invalid, `${what}: ${(e as Error).message}`);
    }
  };
  let userData: string | undefined;
  if (typeof v['user-data'] === 'string') {
    const file = path.resolve(v['user-data']);
    const st = statSync(file, { throwIfNoEntry: false });
    if (!st?.isFile()) throw new VmdeskError(ErrorCode.notFound, `--user-data ${file} is not a file`);
    if (st.size > USER_DATA_MAX) throw new VmdeskError(ErrorCode.invalid, `--user-data ${file} is larger than ${USER_DATA_MAX} bytes`);
    userData = readFileSync(file, 'utf8');
  }
  const memory = v.memory === undefined ? undefined : /^\d+$/.test(String(v.memory)) ? Number(v.memory) : Math.floor(size(v.memory, '--memory')! / 1024 / 1024);
  const cloudInit = {
    ...(v.user ? { user: String(v.user) } : {}),
    ...(v.hostname ? { hostname: String(v.hostname) } : {}),
    ...(Array.isArray(v.package) && v.package.length ? { packages: v.package.flatMap((p) => p.split(',')).filter(Boolean) } : {}),
    ...(userData !== undefined ? { userData } : {}),
  };
  const network = networkFrom(values);
  const req = {
    name: pos[0]!,
    image: String(v.image),
    ...(v.cpus !== undefined ? { cpus: num(v.cpus, '--cpus') } : {}),
    ...(memory !== undefined ? { memoryMiB: memory } : {}),
    ...(v.disk !== undefined ? { diskBytes: size(v.disk, '--disk') } : {}),
    ...(v.firmware ? { firmware: String(v.firmware) as 'bios' } : {}),
    ...(v.os ? { osType: String(v.os) as 'linux' } : {}),
    ...(Object.keys(cloudInit).length ? { cloudInit } : {}),
    ...(v['ssh-port'] !== undefined ? { sshPort: num(v['ssh-port'], '--ssh-port') } : {}),
    ...(v.accel ? { accel: String(v.accel) as 'auto' } : {}),
    ...(network ? { network } : {}),
  };
  const r = await rpc();
  // Download first, with a progress line, when the image is not cached yet.
  const listing = await r.call('image.list', {});
  const item = listing.images.find((i) => i.entry.id === req.image);
  if (item && !item.cached && item.entry.kind !== 'vendor-page') await pullWithProgress(r, req.image, io, !!values.json);
  const info = await r.long('vm.createFromImage', req, (phase, fraction) => {
    if (!values.json && phase !== 'downloading') io.stderr.write(`${phase}${fraction !== undefined ? `: ${Math.round(fraction * 100)}%` : ''}\n`);
  });
  for (const w of info.warnings) io.stderr.write(`vmdesk: warning: ${w}\n`);
  const guest = await r.call('vm.guestInfo', { id: info.id }).catch(() => undefined);
  const ssh = guest?.ssh ? `; then: vmdesk start ${shellWord(info.name)}; vmdesk shell ${shellWord(info.name)} (or ssh ${guest.ssh.user}@${guest.ssh.host} -p ${guest.ssh.port})` : '';
  io.stdout.write(values.json ? JSON.stringify({ ...info, ...(guest ? { guest } : {}) }, null, 2) + '\n' : `created "${info.name}" (${info.id}) from ${req.image}${ssh}\n`);
  return 0;
}

/** Lines for `vmdesk info`: addresses and SSH access (`vm`: the VM's name, for the shell command). */
export function formatGuest(g: GuestInfo, vm: string): string {
  const lines: string[] = [];
  for (const a of g.addresses) lines.push(`address:   ${a.address}${a.prefix !== undefined ? `/${a.prefix}` : ''} (${a.source === 'nat-dhcp' ? "the NAT's DHCP lease" : 'guest agent'}${a.interface ? `, ${a.interface}` : ''})`);
  if (g.ssh) lines.push(`ssh:       ${g.ssh.user}@${g.ssh.host} -p ${g.ssh.port} -i ${g.ssh.keyFile} (or: vmdesk shell ${shellWord(vm)})`);
  for (const n of g.notes) lines.push(`note:      ${n}`);
  return lines.join('\n');
}

/** A VM name as one shell word (VM names hold letters, digits, spaces and ._+-: quoted when a space is in it). */
function shellWord(name: string): string {
  return name.includes(' ') ? `"${name}"` : name;
}
