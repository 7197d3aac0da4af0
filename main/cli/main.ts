// The `vmdesk` command line: a thin client of the library's daemon, one call per verb; failures exit non-zero
// with one line on stderr. It loads no schema library and no core: starting it must cost little.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import path from 'node:path';
import type { CreateVmRequest, NetAdapter, PortForward, VmInfo } from '../api/schema.js';
import { DISK_BUSES, DISK_FORMATS, parseSize } from '../api/values.js';
import { EXIT_CODES, ErrorCode, VmdeskError, isVmdeskError } from '../api/errors.js';
import { attachConsole, type GuestConsole } from './console.js';
import { Rpc } from './rpc.js';
import { GUEST_OPTIONS, guestSettingsFrom } from './share.js';
import { CREATE_DEVICE_OPTIONS, DEVICE_OPTIONS, deviceSettingsFrom } from './devices.js';
import { RESOURCE_OPTIONS, limitsFrom, networkFrom } from './resources.js';
import { connectDaemon } from '../client/daemon-client.js';
import { formatInfo, formatList, formatHost, terminalSafeStream } from './format.js';
import { fromOsError } from '../platform/os-errors.js';
import { defaultHome, makeFilesPrivate, userUmask } from '../platform/paths.js';

export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
}

const USAGE = `usage: vmdesk [--home DIR] <verb> [options]

  list [--json]                         VMs and their state
  create NAME [--cpus N] [--memory MIB] [--disk SIZE] [--iso PATH] [--attach PATH]...
              [--kernel PATH --initrd PATH --cmdline STR] [--os linux|windows|bsd|other]
              [--engine qemu|microvm] [--accel auto|kvm|hvf|tcg] [--firmware bios|uefi]
              [--net MODE[,model=M][,mac=MAC]]... [--forward tcp|udp:HOSTPORT:GUESTPORT]...
              [--cpu-cap PERCENT] [--cpu-pin CPUS] [--memory-target SIZE]
              [--disk-iops N] [--disk-bps SIZE] [--json]
                                        --net, once per card (eth0, eth1, ...); MODE is
                                        nat (default: internet, but not the host's own services
                                        nor other VMs), nat-host (also the host's loopback at
                                        10.0.2.2), internal:NAME (only the VMs on NAME; no host,
                                        no internet), none. Forwards go to the first nat card,
                                        listening on 127.0.0.1 only. --cpu-cap: percent of each
                                        vCPU; --cpu-pin: host CPUs (0,2-3); --memory-target: the
                                        balloon; --disk-iops/--disk-bps: all disks together
  create NAME --image ID [--user U] [--hostname H] [--package P]... [--user-data FILE]
              [--ssh-port N] [--cpus N] [--memory MIB] [--disk SIZE] [--firmware F] [--os OS]
              [--accel A] [--net MODE]... [--forward SPEC]...
                                        a VM from the gallery (vmdesk images list): cloud images
                                        get cloud-init (user, their own SSH key, host name),
                                        installers an empty disk; downloads it first if needed.
                                        The SSH forward goes to the first nat/nat-host card
  images list|pull|pause|cancel|rm|add|forget ...   the image gallery and cache (vmdesk images --help)
  shell NAME [--serial|--ssh] [--wait SECONDS] [-- COMMAND...]
                                        a shell in the guest: ssh with the VM's key through its
                                        forward on 127.0.0.1 (VMs made from cloud images), else
                                        the serial console; exits with the command's status
  info NAME [--json]                    configuration and state (state: stopped, starting,
                                        running, paused, stopping, crashed, saved)
  set NAME [--cpus N] [--memory MIB] [--iso PATH|--no-iso] [--kernel ..] [--initrd ..]
           [--cmdline ..] [--accel ..] [--engine ..] [--firmware ..] [--os ..]
           [--net ..]... [--forward ..]... [--cpu-cap P|none] [--cpu-pin CPUS|none]
           [--memory-target SIZE|none] [--disk-iops N|none] [--disk-bps SIZE|none]
                                        limits and forwards change while the VM runs; other
                                        hardware only while it is stopped (the error says why)
  create|set NAME ... [--clipboard on|off] [--guest-agent on|off] [--display vga|virtio]
                                        clipboard shared with the guest's vdagent (off unless
                                        turned on); QEMU guest agent channel (on for new VMs);
                                        virtio-vga follows the console's size (Linux default)
  create|set NAME ... [--tpm on|off] [--secure-boot on|off] [--usb-tablet on|off]
           [--audio auto|pipewire|pa|alsa|none|off] [--virtio-drivers ISO|--no-virtio-drivers]
                                        TPM 2.0 (swtpm, state in the bundle); Secure Boot with
                                        Microsoft's keys (needs --firmware uefi); sound card;
                                        driver disc in a second CD drive
  create NAME ... [--preset windows11] [--disk-bus virtio|sata|ide|scsi]
                                        windows11: UEFI + Secure Boot + TPM, SATA disk, e1000e,
                                        2 CPUs, 4 GiB, 64 GiB (options given win); --disk-bus:
                                        the new disk's bus (NIC model: --net nat,model=e1000e)
  suspend NAME                          save the guest's memory and devices to disk and stop
                                        (state "saved"); start resumes exactly there
  discard-state NAME                    throw a saved state away; the next start boots afresh
  usb list [NAME] | usb add|remove NAME VENDOR:PRODUCT | usb add|remove NAME --bus N --addr N
                                        host USB passthrough (hot-plugged while running)
  share add NAME HOSTDIR [--tag T] [--read-only] [--driver virtiofs|9p] | share remove NAME TAG
  share list NAME [--json]              shared folders (virtiofs, 9p fallback) and how to mount them
  guest-info NAME [--json]              host name and addresses from the QEMU guest agent
  rename NAME NEWNAME
  start NAME [--paused]                 start (the VM keeps running after vmdesk exits)
  stop NAME [--timeout SECONDS]         ACPI shutdown, forced off after the timeout (default 60)
  kill | pause | resume | reset NAME
  delete NAME [--keep-disks]
  console NAME                          serial console (Ctrl-] detaches); with piped stdin,
                                        copies stdin to the guest and the guest to stdout
  screenshot NAME FILE.png
  disk create NAME SIZE | disk resize NAME DISK SIZE
  disk attach NAME PATH [--format qcow2|raw|vmdk|vdi|vhdx|vpc] [--bus virtio|sata|ide|scsi] [--read-only]
  disk set NAME DISK [--bus virtio|sata|ide|scsi] [--read-only|--read-write]   (VM stopped)
                                        (the format is checked against the file's header;
                                        images naming other files are refused)
  host [--json]                         CPUs, memory, QEMU, accelerators, what running VMs have
                                        committed, and whether CPU caps and pinning work here
  stats NAME [--json] [--watch]         CPU, memory, disk and network use (--watch: every second)
  forward add NAME tcp|udp:HOSTPORT:GUESTPORT [--adapter ethN] | forward remove NAME tcp:HOSTPORT
  forward list NAME                     port forwards on 127.0.0.1, changed while the VM runs too
  link NAME ethN up|down                plug a running VM's network cable in or pull it
  serve [--port N] [--host 127.0.0.1]   serve the GUI to a browser (prints a URL with a token)
        [--unsafe-listen-all]           needed for any non-loopback --host: plain HTTP, the token
                                        travels in clear text
  events [--json]                       what the daemon reports as it happens (VM states, jobs'
                                        progress, downloads) until Ctrl-C
  daemon status [--json] | daemon stop | daemon run [--idle-ms N]
                                        the library's daemon: what it serves; stop it (running
                                        guests keep running and the next daemon adopts them); or
                                        run it in the foreground with its log on the terminal
  snapshot take|list|info|restore|delete|rename|describe|thumbnail|convert-disk NAME [SNAP] ...
  clone NAME NEWNAME [--snapshot SNAP] [--linked]
  export NAME FILE.vmdesk [--with-snapshots] | export NAME FILE.ova (OVF 1.0 appliance)
  import FILE [--name NEWNAME] [--cpus N] [--memory MIB] [--format F]   (.vmdesk, .ova/.ovf, or a disk
                                        image; images naming other files are refused)
                                        (vmdesk snapshot --help for details)
  hosts list [--check] | hosts add NAME URI [--pool POOL] [--no-check] | hosts remove NAME
  hosts domains NAME                    libvirt hosts: qemu:///session, qemu:///system,
                                        qemu+ssh://user@host/system (no passwords stored)
  create NAME --host HOST ...           create the VM on a libvirt host
  migrate NAME --to HOST|local [--live] [--no-start]
                                        move a VM with its disks between this machine and hosts
  --host HOST on any verb that names a VM picks the VM on that host ("local": this library);
  list --host HOST shows only that host's VMs

Exit codes: 0 ok, 2 invalid input, 3 not found, 4 exists, 5 busy, 6 wrong state, 7 host lacks
something (QEMU, accelerator), 8 engine failure, 9 broken VM bundle, 10 cancelled, 11 timeout,
12 no space left on the disk, 13 permission denied or read-only file system, 1 other.
`;

const CONFIG_OPTIONS = {
  cpus: { type: 'string' },
  memory: { type: 'string' },
  disk: { type: 'string' },
  iso: { type: 'string' },
  'no-iso': { type: 'boolean' },
  attach: { type: 'string', multiple: true },
  kernel: { type: 'string' },
  initrd: { type: 'string' },
  cmdline: { type: 'string' },
  'no-kernel': { type: 'boolean' },
  os: { type: 'string' },
  engine: { type: 'string' },
  accel: { type: 'string' },
  firmware: { type: 'string' },
  ...RESOURCE_OPTIONS,
  ...GUEST_OPTIONS,
  ...DEVICE_OPTIONS,
} as const satisfies ParseArgsConfig['options'];

type Values = Record<string, string | boolean | string[] | undefined>;

function parse(args: string[], options: ParseArgsConfig['options'], positionals: number, names: string[]): { values: Values; pos: string[] } {
  args = joinNegativeValues(args, options);
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...options, json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new VmdeskError(ErrorCode.invalid, (e as Error).message.split('\n')[0]!.replace(/^TypeError \[\w+\]: /, ''));
  }
  const pos = parsed.positionals;
  if (pos.length < positionals) throw new VmdeskError(ErrorCode.invalid, `missing ${names.slice(pos.length, positionals).join(' and ')}`);
  if (pos.length > positionals) throw new VmdeskError(ErrorCode.invalid, `unexpected argument "${pos[positionals]}"`);
  return { values: parsed.values as Values, pos };
}

/** "--cpus -3" must reach validation as a value rather than be taken for an unknown option "-3". */
function joinNegativeValues(args: string[], options: ParseArgsConfig['options']): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const next = args[i + 1];
    const takesValue = a.startsWith('--') && !a.includes('=') && options?.[a.slice(2)]?.type === 'string';
    if (takesValue && next !== undefined && /^-\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

function int(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v.trim())) throw new VmdeskError(ErrorCode.invalid, `${what} must be a whole number, got "${v}"`);
  return Number(v);
}

/** --memory takes MiB as a bare number, or a size with a unit (2G). */
function memoryMiB(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (/^-?\d+$/.test(v.trim())) return Number(v);
  try {
    return Math.floor(parseSize(v) / 1024 / 1024);
  } catch (e) {
    throw new VmdeskError(ErrorCode.invalid, `--memory: ${(e as Error).message}`);
  }
}

function size(v: string, what: string): number {
  try {
    return parseSize(v);
  } catch (e) {
    throw new VmdeskError(ErrorCode.invalid, `${what}: ${(e as Error).message}`);
  }
}

function absPath(v: string | undefined): string | undefined {
  return v === undefined ? undefined : path.resolve(v);
}

export { parseForward } from './resources.js';

function directKernel(values: Values): CreateVmRequest['directKernel'] {
  const kernel = absPath(values.kernel as string | undefined);
  if (!kernel) {
    if (values.initrd || values.cmdline !== undefined) throw new VmdeskError(ErrorCode.invalid, '--initrd and --cmdline need --kernel');
    return undefined;
  }
  return { kernel, initrd: absPath(values.initrd as string | undefined), cmdline: (values.cmdline as string | undefined) ?? '' };
}

/** A value that must be one of a fixed list (formats, buses), with the list in the error. */
function oneOf<T extends string>(v: string | undefined, what: string, options: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (!(options as readonly string[]).includes(v)) throw new VmdeskError(ErrorCode.invalid, `${what} must be one of ${options.join(', ')}, got "${v}"`);
  return v as T;
}

function print(io: CliIo, json: boolean, value: unknown, text: string): void {
  io.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text.endsWith('\n') || text === '' ? text : text + '\n');
}

async function run(home: string, verb: string, args: string[], io: CliIo): Promise<number> {
  // Every verb but serve and daemon is one call to the library's daemon (started on demand).
  let conn: Rpc | undefined;
  const rpc = async (): Promise<Rpc> => (conn ??= new Rpc(await connectDaemon(home)));
  try {
    const { qualifyHost } = await import('./hosts.js');
    return await runVerb(verb, qualifyHost(verb, args), io, home, rpc);
  } finally {
    conn?.client.close();
  }
}

async function runVerb(verb: string, args: string[], io: CliIo, home: string, rpc: () => Promise<Rpc>): Promise<number> {
  switch (verb) {
    case 'list': {
      const { values } = parse(args, { host: { type: 'string' } }, 0, []);
      const host = (values.host as string | undefined)?.toLowerCase();
      const vms = (await (await rpc()).call('vm.list', {})).filter((v) => host === undefined || (v.host ?? 'local').toLowerCase() === host);
      print(io, !!values.json, vms, formatList(vms));
      return 0;
    }
    case 'create': {
      if (args.some((a) => a === '--image' || a.startsWith('--image='))) {
        const { createFromImageCli } = await import('./images.js');
        return createFromImageCli(rpc, args, io);
      }
      const { values, pos } = parse(args, { ...CONFIG_OPTIONS, ...CREATE_DEVICE_OPTIONS, host: { type: 'string' } }, 1, ['NAME']);
      if (values.iso && values.kernel) throw new VmdeskError(ErrorCode.invalid, 'give either --iso or --kernel, not both');
      const req: CreateVmRequest = {
        name: pos[0]!,
        cpus: int(values.cpus as string | undefined, '--cpus'),
        memoryMiB: memoryMiB(values.memory as string | undefined),
        diskBytes: values.disk !== undefined ? size(values.disk as string, '--disk') : undefined,
        iso: absPath(values.iso as string | undefined),
        attachDisks: ((values.attach as string[] | undefined) ?? []).map((p) => path.resolve(p)),
        directKernel: directKernel(values),
        osType: values.os as never,
        engine: values.engine as never,
        accel: values.accel as never,
        firmware: values.firmware as never,
        host: values.host as string | undefined,
        network: networkFrom(values),
        limits: limitsFrom(values, true) as CreateVmRequest['limits'],
        ...guestSettingsFrom(values),
        ...(deviceSettingsFrom(values, true) as Partial<CreateVmRequest>),
      };
      if (req.diskBytes === 0) throw new VmdeskError(ErrorCode.invalid, '--disk must be larger than 0');
      for (const k of Object.keys(req) as (keyof CreateVmRequest)[]) if (req[k] === undefined) delete req[k];
      const info = await (await rpc()).long('vm.create', req, (phase, fraction) => {
        if (!values.json && fraction !== undefined) io.stderr.write(`${phase}: ${Math.round(fraction * 100)}%\n`);
      });
      for (const w of info.warnings) io.stderr.write(`vmdesk: warning: ${w}\n`);
      print(io, !!values.json, info, `created "${info.name}" (${info.id})`);
      return 0;
    }
    case 'info': {
      const { values, pos } = parse(args, {}, 1, ['NAME']);
      const info = await (await rpc()).call('vm.get', { id: pos[0]! });
      // What VMDesk knows of the guest's network (addresses, SSH access), for VMs that can have any.
      const found = info.config ? await (await rpc()).call('vm.guestInfo', { id: info.id }).catch(() => undefined) : undefined;
      const guest = found && (found.ssh || found.addresses.length) ? found : undefined;
      const { formatGuest } = await import('./images.js');
      print(io, !!values.json, guest ? { ...info, guest } : info, guest ? `${formatInfo(info)}\n${formatGuest(guest, info.name)}` : formatInfo(info));
      return info.broken ? EXIT_CODES.EBROKEN : 0;
    }
    case 'set': {
      const { values, pos } = parse(args, CONFIG_OPTIONS, 1, ['NAME']);
      if (values.disk || values.attach) throw new VmdeskError(ErrorCode.invalid, 'use "vmdesk disk create|attach|resize" to change disks');
      const patch: Record<string, unknown> = {
        cpus: int(values.cpus as string | undefined, '--cpus'),
        memoryMiB: memoryMiB(values.memory as string | undefined),
        osType: values.os,
        engine: values.engine,
        accel: values.accel,
        firmware: values.firmware,
        // --forward alone replaces the forwards of the VM's first nat card, keeping its cards.
        network: values.net || values.forward ? networkFrom(values, values.net ? undefined : (await (await rpc()).call('vm.get', { id: pos[0]! })).config?.network) : undefined,
        limits: limitsFrom(values, false),
        ...guestSettingsFrom(values),
        ...deviceSettingsFrom(values, false),
      };
      if (values.iso) patch.cdrom = absPath(values.iso as string);
      if (values['no-iso']) patch.cdrom = null;
      if (values['no-kernel']) patch.directKernel = null;
      else if (values.kernel || values.initrd || values.cmdline !== undefined) {
        const cur = (await (await rpc()).call('vm.get', { id: pos[0]! })).config?.directKernel;
        const kernel = absPath(values.kernel as string | undefined) ?? cur?.kernel;
        if (!kernel) throw new VmdeskError(ErrorCode.invalid, '--initrd and --cmdline need --kernel');
        patch.directKernel = { kernel, initrd: absPath(values.initrd as string | undefined) ?? cur?.initrd, cmdline: (values.cmdline as string | undefined) ?? cur?.cmdline ?? '' };
      }
      for (const k of Object.keys(patch)) if (patch[k] === undefined) delete patch[k];
      if (Object.keys(patch).length === 0) throw new VmdeskError(ErrorCode.invalid, 'nothing to change (see vmdesk --help)');
      const info = await (await rpc()).call('vm.update', { id: pos[0]!, patch: patch as never });
      for (const w of info.warnings) io.stderr.write(`vmdesk: warning: ${w}\n`);
      print(io, !!values.json, info, `updated "${info.name}"`);
      return 0;
    }
    case 'rename': {
      const { values, pos } = parse(args, {}, 2, ['NAME', 'NEWNAME']);
      const info = await (await rpc()).call('vm.rename', { id: pos[0]!, name: pos[1]! });
      print(io, !!values.json, info, `renamed to "${info.name}"`);
      return 0;
    }
    case 'start': {
      const { values, pos } = parse(args, { paused: { type: 'boolean' } }, 1, ['NAME']);
      const info = await (await rpc()).call('vm.start', { id: pos[0]!, paused: !!values.paused });
      // What the accelerator is and why, always; a fallback to TCG (the engine's warning) as a warning.
      const fellBack = !!info.accel && info.warnings.includes(info.accel.reason);
      if (info.accel) io.stderr.write(`vmdesk: ${fellBack ? 'warning: ' : ''}accelerator: ${info.accel.used} (${info.accel.reason})\n`);
      for (const w of info.warnings) if (w !== info.accel?.reason) io.stderr.write(`vmdesk: warning: ${w}\n`);
      print(io, !!values.json, info, `started "${info.name}" (${info.state}, ${info.host ? `on host ${info.host}` : `pid ${info.pid ?? '?'}`})`);
      return 0;
    }
    case 'stop': {
      const { values, pos } = parse(args, { timeout: { type: 'string' } }, 1, ['NAME']);
      const t = int(values.timeout as string | undefined, '--timeout');
      if (t !== undefined && (t < 0 || t > 3600)) throw new VmdeskError(ErrorCode.invalid, '--timeout must be 0-3600 seconds');
      const info = await (await rpc()).call('vm.stop', { id: pos[0]!, timeoutMs: (t ?? 60) * 1000 });
      print(io, !!values.json, info, `stopped "${info.name}" (${info.lastExit?.reason ?? 'unknown reason'})`);
      return 0;
    }
    case 'kill':
    case 'pause':
    case 'resume':
    case 'reset': {
      const { values, pos } = parse(args, {}, 1, ['NAME']);
      const info = await (await rpc()).call(`vm.${verb}`, { id: pos[0]! });
      const done = { kill: 'powered off', pause: 'paused', resume: 'resumed', reset: 'reset' }[verb];
      print(io, !!values.json, info, `${done} "${info.name}"`);
      return 0;
    }
    case 'delete': {
      const { values, pos } = parse(args, { 'keep-disks': { type: 'boolean' } }, 1, ['NAME']);
      const r = await (await rpc()).call('vm.delete', { id: pos[0]!, keepDisks: !!values['keep-disks'] });
      print(io, !!values.json, r, `deleted "${pos[0]}"${r.keptDisks.length ? `; kept disks: ${r.keptDisks.join(', ')}` : ''}`);
      return 0;
    }
    case 'console': {
      const { values, pos } = parse(args, { 'linger-ms': { type: 'string' } }, 1, ['NAME']);
      const stream = await openConsole(await rpc(), pos[0]!);
      return attachConsole(stream, io, { lingerMs: int(values['linger-ms'] as string | undefined, '--linger-ms') ?? 1000 });
    }
    case 'screenshot': {
      const { pos } = parse(args, {}, 2, ['NAME', 'FILE']);
      const { png } = await (await rpc()).call('vm.screenshot', { id: pos[0]! });
      const { writeFileAtomic } = await import('../platform/atomic.js');
      await writeFileAtomic(path.resolve(pos[1]!), Buffer.from(png, 'base64'), 0o666 & ~userUmask);
      io.stdout.write(`saved ${path.resolve(pos[1]!)}\n`);
      return 0;
    }
    case 'disk': {
      const sub = args[0];
      const rest = args.slice(1);
      let info: VmInfo;
      if (sub === 'create') {
        const { values, pos } = parse(rest, {}, 2, ['NAME', 'SIZE']);
        info = await (await rpc()).call('disk.create', { id: pos[0]!, bytes: size(pos[1]!, 'SIZE') });
        print(io, !!values.json, info, `added disk ${info.config?.disks.at(-1)?.id} to "${info.name}"`);
      } else if (sub === 'attach') {
        const { values, pos } = parse(rest, { format: { type: 'string' }, bus: { type: 'string' }, 'read-only': { type: 'boolean' } }, 2, ['NAME', 'PATH']);
        const format = oneOf(values.format as string | undefined, '--format', DISK_FORMATS);
        const bus = oneOf(values.bus as string | undefined, '--bus', DISK_BUSES);
        info = await (await rpc()).call('disk.attach', { id: pos[0]!, file: path.resolve(pos[1]!), ...(format ? { format } : {}), ...(bus ? { bus } : {}), readOnly: !!values['read-only'] });
        print(io, !!values.json, info, `attached ${path.resolve(pos[1]!)} to "${info.name}" as ${info.config?.disks.at(-1)?.id}`);
      } else if (sub === 'resize') {
        const { values, pos } = parse(rest, {}, 3, ['NAME', 'DISK', 'SIZE']);
        info = await (await rpc()).call('disk.resize', { id: pos[0]!, disk: pos[1]!, bytes: size(pos[2]!, 'SIZE') });
        print(io, !!values.json, info, `resized ${pos[1]} of "${info.name}"`);
      } else if (sub === 'set') {
        const { values, pos } = parse(rest, { bus: { type: 'string' }, 'read-only': { type: 'boolean' }, 'read-write': { type: 'boolean' } }, 2, ['NAME', 'DISK']);
        const bus = oneOf(values.bus as string | undefined, '--bus', DISK_BUSES);
        if (values['read-only'] && values['read-write']) throw new VmdeskError(ErrorCode.invalid, '--read-only and --read-write contradict each other');
        const readOnly = values['read-only'] ? true : values['read-write'] ? false : undefined;
        if (!bus && readOnly === undefined) throw new VmdeskError(ErrorCode.invalid, 'say what to change: --bus virtio|sata|ide|scsi, --read-only or --read-write');
        info = await (await rpc()).call('disk.set', { id: pos[0]!, disk: pos[1]!, ...(bus ? { bus } : {}), ...(readOnly !== undefined ? { readOnly } : {}) });
        const d = info.config?.disks.find((x) => x.id === pos[1]);
        print(io, !!values.json, info, `disk ${pos[1]} of "${info.name}": ${d?.bus ?? 'virtio'} bus, ${d?.readOnly ? 'read-only' : 'read-write'}`);
      } else {
        throw new VmdeskError(ErrorCode.invalid, 'usage: vmdesk disk create|attach|resize|set ...');
      }
      return 0;
    }
    case 'stats': {
      const { values, pos } = parse(args, { watch: { type: 'boolean' } }, 1, ['NAME']);
      const { statsVerb } = await import('./resources.js');
      return statsVerb(await rpc(), pos[0]!, { json: !!values.json, watch: !!values.watch }, io, () => untilInterrupted());
    }
    case 'forward': {
      const sub = args[0];
      if (sub !== 'add' && sub !== 'remove' && sub !== 'list') throw new VmdeskError(ErrorCode.invalid, 'usage: vmdesk forward add|remove|list NAME [SPEC]');
      const { values, pos } = parse(args.slice(1), sub === 'add' ? { adapter: { type: 'string' } } : {}, sub === 'list' ? 1 : 2, sub === 'list' ? ['NAME'] : ['NAME', 'SPEC']);
      const { forwardVerb } = await import('./resources.js');
      return forwardVerb(await rpc(), sub, pos, values, io);
    }
    case 'link': {
      const { values, pos } = parse(args, {}, 3, ['NAME', 'ADAPTER', 'up|down']);
      const { linkVerb } = await import('./resources.js');
      return linkVerb(await rpc(), pos, !!values.json, io);
    }
    case 'host': {
      const { values } = parse(args, {}, 0, []);
      const host = await (await rpc()).call('host.info', {});
      print(io, !!values.json, host, formatHost(host));
      return 0;
    }
    case 'serve': {
      const { values } = parse(args, { port: { type: 'string' }, host: { type: 'string' }, 'unsafe-listen-all': { type: 'boolean' } }, 0, []);
      const { startServer } = await import('../server/server.js');
      const { isLoopbackHost } = await import('../server/auth.js');
      const port = int(values.port as string | undefined, '--port');
      if (port !== undefined && (port < 0 || port > 65535)) throw new VmdeskError(ErrorCode.invalid, '--port must be 0-65535');
      const host = (values.host as string | undefined) ?? '127.0.0.1';
      // startServer refuses a non-loopback host unless told otherwise; the flag is the user telling it.
      const unsafeListenAll = !!values['unsafe-listen-all'];
      const server = await startServer({ home, host, port: port ?? 0, unsafeListenAll });
      if (!isLoopbackHost(host)) {
        io.stderr.write(
          `vmdesk: WARNING: listening on ${host}, which other machines can reach. VMDesk speaks plain HTTP: the token in the URL below, ` +
            'the session cookie and everything the GUI does travel in clear text, and whoever sees them controls VMDesk and its VMs.\n',
        );
      }
      io.stdout.write(`VMDesk is serving at ${server.url}\n(open it in a browser; Ctrl-C stops the server, running VMs keep running)\n`);
      await untilInterrupted();
      await server.close();
      return 0;
    }
    case 'snapshot':
    case 'clone':
    case 'export':
    case 'import': {
      const { runSnapshotCli } = await import('./snapshot.js');
      const json = args.includes('--json');
      return runSnapshotCli(rpc, verb, args.filter((a) => a !== '--json'), { stdout: io.stdout, stderr: io.stderr, json });
    }
    case 'images': {
      const { runImagesCli } = await import('./images.js');
      return runImagesCli(rpc, args, io);
    }
    case 'shell': {
      const { runShell } = await import('./shell.js');
      return runShell(rpc, args, io);
    }
    case 'suspend': {
      const { runSuspendCli } = await import('./devices.js');
      return runSuspendCli(rpc, args, io);
    }
    case 'discard-state': {
      const { runDiscardStateCli } = await import('./devices.js');
      return runDiscardStateCli(rpc, args, io);
    }
    case 'usb': {
      const { runUsbCli } = await import('./devices.js');
      return runUsbCli(rpc, args, io);
    }
    case 'share': {
      const { runShareCli } = await import('./share.js');
      return runShareCli(rpc, args, io);
    }
    case 'guest-info': {
      const { runGuestInfoCli } = await import('./share.js');
      return runGuestInfoCli(rpc, args, io);
    }
    case 'hosts': {
      const { runHostsCli } = await import('./hosts.js');
      return runHostsCli(rpc, args, io);
    }
    case 'migrate': {
      const { runMigrateCli } = await import('./hosts.js');
      return runMigrateCli(rpc, args, io);
    }
    case 'events': {
      const { values } = parse(args, {}, 0, []);
      return streamEvents(await rpc(), io, !!values.json);
    }
    case 'daemon': {
      const { runDaemonCli } = await import('./daemon.js');
      return runDaemonCli(home, args, io);
    }
    default:
      throw new VmdeskError(ErrorCode.invalid, `unknown verb "${verb}" (see vmdesk --help)`);
  }
}

/** Verbs whose own usage (a sub-command list) answers `--help`. */
const OWN_HELP = new Set(['snapshot', 'images', 'usb', 'share', 'hosts', 'migrate']);

/**
 * The entries of USAGE that describe one verb, with their indented explanation lines: what
 * `vmdesk VERB --help` prints. An entry names its verbs at its start ("create|set NAME", "kill | pause NAME").
 */
export function usageOf(verb: string): string | undefined {
  const entries: string[][] = [];
  for (const line of USAGE.split('\n').slice(1)) {
    if (/^  \S/.test(line)) entries.push([line]);
    else if (/^   +\S/.test(line) && entries.length) entries[entries.length - 1]!.push(line);
    else if (!line.trim()) entries.push([]);
  }
  const names = (first: string) => (/^  ([a-z][\w-]*(?:\s*\|\s*[a-z][\w-]*)*)/.exec(first)?.[1] ?? '').split('|').map((n) => n.trim());
  const mine = entries.filter((e) => e.length && names(e[0]!).includes(verb));
  if (!mine.length) return undefined;
  return `usage: vmdesk [--home DIR] ${verb} ...\n\n${mine.map((e) => e.join('\n')).join('\n')}\n\n(vmdesk --help lists every verb and the exit codes)\n`;
}

/** Entry point; returns the exit code. `argv` excludes node and the script. */
export async function main(argv: string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin }): Promise<number> {
  let home: string | undefined;
  const rest = [...argv];
  while (rest[0]?.startsWith('--home')) {
    const a = rest.shift()!;
    home = a.includes('=') ? a.slice('--home='.length) : rest.shift();
    if (!home) {
      io.stderr.write('vmdesk: --home needs a directory\n');
      return EXIT_CODES.EINVAL;
    }
  }
  let verb = rest.shift();
  // `vmdesk help VERB` is `vmdesk VERB --help`.
  const helpVerb = verb === 'help' && !!rest[0];
  if (helpVerb) verb = rest.shift();
  if (!verb || verb === '--help' || verb === '-h' || verb === 'help') {
    (verb ? io.stdout : io.stderr).write(USAGE);
    return verb ? 0 : EXIT_CODES.EINVAL;
  }
  // VERB --help (or -h) anywhere before a "--" shows that verb's usage instead of running it.
  const dashes = rest.indexOf('--');
  if (helpVerb || (dashes < 0 ? rest : rest.slice(0, dashes)).some((a) => a === '--help' || a === '-h')) {
    if (OWN_HELP.has(verb)) {
      rest.splice(0, rest.length, '--help');
    } else {
      const text = usageOf(verb);
      if (!text) {
        io.stderr.write(`vmdesk: unknown verb "${verb}" (see vmdesk --help)\n`);
        return EXIT_CODES.EINVAL;
      }
      io.stdout.write(text);
      return 0;
    }
  }
  if (verb === '--version') {
    io.stdout.write('vmdesk 0.1.0\n');
    return 0;
  }
  makeFilesPrivate();
  const lib = path.resolve(home ?? defaultHome());
  // Names and descriptions come from other people (imported appliances): never let them drive the terminal.
  // The console verb alone passes the guest's bytes through untouched.
  const shown: CliIo = verb === 'console' || verb === 'shell' ? io : { ...io, stdout: terminalSafeStream(io.stdout), stderr: terminalSafeStream(io.stderr) };
  try {
    return await run(lib, verb, rest, shown);
  } catch (e) {
    const err = isVmdeskError(e) ? e : fromOsError(e);
    shown.stderr.write(`vmdesk: ${err.message}\n`);
    if (process.env.VMDESK_DEBUG) {
      for (const d of err.details) shown.stderr.write(`  ${d}\n`);
      if (!isVmdeskError(e)) shown.stderr.write(`${(e as Error)?.stack ?? ''}\n`);
    }
    return EXIT_CODES[err.code] ?? 1;
  }
}

/** The guest's serial console through the daemon, as the byte stream attachConsole drives. */
async function openConsole(rpc: Rpc, vm: string): Promise<GuestConsole> {
  const data: ((d: Buffer) => void)[] = [];
  // The replay (and any output) can arrive before attachConsole subscribes: kept until it does.
  const early: Buffer[] = [];
  const closed: (() => void)[] = [];
  let error: VmdeskError | undefined;
  let opened = false;
  let resolveOpen!: () => void;
  let rejectOpen!: (e: unknown) => void;
  const ready = new Promise<void>((res, rej) => ((resolveOpen = res), (rejectOpen = rej)));
  const stream = rpc.client.openSerial(vm, {
    onData(b64) {
      opened = true;
      resolveOpen();
      const buf = Buffer.from(b64, 'base64');
      if (!data.length) early.push(buf);
      for (const fn of data) fn(buf);
    },
    onClose(err) {
      if (err) error = new VmdeskError((err.code === 'ENET' ? ErrorCode.host : err.code) as ErrorCode, err.message);
      if (!opened) rejectOpen(error ?? new VmdeskError(ErrorCode.state, `"${vm}" has stopped`));
      for (const fn of closed) fn();
    },
  });
  // A console that cannot open says so at once (not running, unknown VM); otherwise output starts flowing.
  await Promise.race([ready, new Promise<void>((r) => setTimeout(r, 300))]);
  if (error && !opened) throw error;
  return {
    write: (d) => stream.write(d.toString('base64')),
    on(event: 'data' | 'close' | 'error', fn: ((d: Buffer) => void) | (() => void)) {
      if (event === 'data') {
        data.push(fn as (d: Buffer) => void);
        for (const b of early.splice(0)) (fn as (d: Buffer) => void)(b);
      }
      else if (event === 'close') closed.push(fn as () => void);
    },
    destroy: () => stream.close(),
  } as GuestConsole;
}

/** `vmdesk events`: every change the daemon announces, one line (or JSON object) each, until interrupted. */
async function streamEvents(rpc: Rpc, io: CliIo, json: boolean): Promise<number> {
  rpc.client.onEvent((ev) => {
    if (json) io.stdout.write(JSON.stringify(ev) + '\n');
    else if (ev.type === 'progress') io.stdout.write(`progress ${ev.id ? `${ev.id} ` : ''}${ev.phase}${ev.fraction !== undefined ? ` ${Math.round(ev.fraction * 100)}%` : ''}${ev.error ? ` failed: ${ev.error}` : ''}\n`);
    else if (ev.type === 'vm-deleted') io.stdout.write(`deleted ${ev.id}\n`);
    else if (ev.type === 'image-download') io.stdout.write(`download ${ev.download.image} ${ev.download.state} ${ev.download.bytes}${ev.download.totalBytes ? `/${ev.download.totalBytes}` : ''} bytes\n`);
    else if (ev.type === 'image-changed') io.stdout.write(`image ${ev.image} changed\n`);
    else if (ev.type === 'vm-stats') io.stdout.write(`stats ${ev.id} cpu ${ev.stats.cpuPercent ?? '?'}% rss ${ev.stats.memoryRssBytes ?? '?'}\n`);
    else io.stdout.write(`${ev.type.slice(3)} ${ev.info.name} ${ev.info.state}${ev.info.job ? ` (${ev.info.job.method})` : ''}\n`);
  });
  await untilInterrupted((done) => rpc.client.onClosed(done));
  return 0;
}

/** Resolves on Ctrl-C or SIGTERM (or when `also` calls its callback first). */
function untilInterrupted(also?: (done: () => void) => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    also?.(stop);
  });
}
