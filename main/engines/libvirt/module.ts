// The libvirt engine as a plug-in: VMs that live on a libvirt host (this machine's qemu:///session or
// qemu:///system, or another machine over ssh), driven through virsh with domain XML in and out. The domain's
// UUID is the VM's id and its name the VM's name; the VM's own disks are qcow2 volumes in the host's storage
// pool, its kernel, initrd and CD are uploaded from this machine. See ARCHITECTURE.md for why virsh.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { AccelChoice, VmConfig } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { DiskProvider, EngineContext, EngineModule, HostTarget, HostedEngine, Progress } from '../engine.js';
import { LibvirtConnection } from './connection.js';
import { buildDomainXml, diskVolumeName, parseDomainXml, volumePrefix } from './domain-xml.js';
import { xmlEscape } from './xml.js';
import { LibvirtRuntime, domState, readRecord, recordFile } from './runtime.js';
import { libvirtSnapshots } from './snapshots.js';
import { createVolume, deleteVolume, downloadVolume, ensurePool, forgetUploads, listVolumes, syncBootFiles, uploadFile, volumeInfo } from './storage.js';

/** Settings of other engines (devices, sharing) this engine does not offer: refused by name, not ignored. */
const NOT_OFFERED: Record<string, string> = {
  shares: 'shared folders',
  usb: 'USB pass-through',
  tpm: 'a TPM',
  secureBoot: 'Secure Boot',
  audio: 'a sound card',
  virtioDrivers: 'a driver disc',
  clipboard: 'a shared clipboard',
  limits: 'resource limits',
};

function requireHost(ctx: EngineContext): HostTarget {
  if (ctx.host) return ctx.host;
  const name = ctx.config.host;
  throw new VmdeskError(
    name ? ErrorCode.notFound : ErrorCode.broken,
    name ? `"${ctx.config.name}" lives on host "${name}", which this library does not know; add it again: vmdesk hosts add ${name} URI` : `"${ctx.config.name}" runs on the libvirt engine but names no host`,
  );
}

/** kvm or qemu (TCG) for the domain, and why. */
async function chooseAccel(conn: LibvirtConnection, config: VmConfig): Promise<{ domainType: 'kvm' | 'qemu'; accel: AccelChoice }> {
  const requested = config.accel;
  if (requested === 'hvf') throw new VmdeskError(ErrorCode.invalid, `HVF is macOS's accelerator; a libvirt host runs KVM or TCG (set --accel auto, kvm or tcg)`);
  if (requested === 'tcg') return { domainType: 'qemu', accel: { requested, used: 'tcg', reason: "software emulation, as chosen in the VM's settings" } };
  if (conn.local) {
    // This machine: the same judgement as the local QEMU engine (a nested KVM that cannot run a stock kernel is passed over).
    const { resolveAccel } = await import('../qemu/accel.js');
    const a = await resolveAccel(requested);
    return { domainType: a.used === 'kvm' ? 'kvm' : 'qemu', accel: a.used === 'hvf' ? { requested, used: 'tcg', reason: 'HVF is not offered by libvirt here; using TCG' } : a };
  }
  let kvm = true;
  let why = '';
  try {
    await conn.query(['domcapabilities', '--virttype', 'kvm'], { timeoutMs: 30_000 });
  } catch (e) {
    kvm = false;
    why = (e as Error).message;
  }
  if (kvm) return { domainType: 'kvm', accel: { requested, used: 'kvm', reason: `KVM on ${conn.label}` } };
  if (requested === 'kvm') throw new VmdeskError(ErrorCode.host, `KVM was requested but ${conn.label} cannot run KVM guests: ${why}`);
  return { domainType: 'qemu', accel: { requested, used: 'tcg', reason: `${conn.label} has no KVM; using TCG (software emulation, slower)` } };
}

/** The domain's name on the host for this UUID, or undefined when it is not defined there. */
async function domainName(conn: LibvirtConnection, uuid: string): Promise<string | undefined> {
  try {
    return (await conn.query(['domname', uuid])).trim() || undefined;
  } catch (e) {
    if ((e as VmdeskError).code === ErrorCode.notFound) return undefined;
    throw e;
  }
}

async function domainUuid(conn: LibvirtConnection, name: string): Promise<string | undefined> {
  try {
    return (await conn.query(['domuuid', name])).trim() || undefined;
  } catch (e) {
    if ((e as VmdeskError).code === ErrorCode.notFound) return undefined;
    throw e;
  }
}

/** A domain named like the VM that is not the VM (someone else's, on a shared host) is refused. */
async function checkNameFree(conn: LibvirtConnection, config: VmConfig): Promise<void> {
  const other = await domainUuid(conn, config.name);
  if (other && other !== config.id) throw new VmdeskError(ErrorCode.exists, `${conn.label} already has a domain named "${config.name}" that is not this VM; rename the VM (vmdesk rename)`);
}

/** Defines (or redefines) the domain from the configuration; a VM renamed while stopped is renamed there first. */
async function define(conn: LibvirtConnection, ctx: EngineContext, host: HostTarget, progress: Progress): Promise<void> {
  const c = ctx.config;
  const { domainType } = await chooseAccel(conn, c);
  const current = await domainName(conn, c.id);
  await checkNameFree(conn, c);
  if (current && current !== c.name) await conn.query(['domrename', c.id, c.name], { what: `renaming the domain of "${c.name}"` });
  const boot = await syncBootFiles(conn, ctx, host.pool, progress);
  const xml = buildDomainXml({ config: c, domainType, pool: host.pool, bootFiles: boot, ...(boot.cdrom ? { cdrom: boot.cdrom } : {}) });
  // Kept in the bundle: the definition VMDesk last sent, for whoever wants to see it.
  const file = path.join(ctx.bundleDir, 'libvirt-domain.xml');
  await fs.writeFile(file, xml, { mode: 0o600 });
  await conn.query(['define', file], { what: `defining "${c.name}"` });
}

/** Removes every volume VMDesk made for this VM (disks, boot files, CD) from the pool. */
async function removeVolumes(conn: LibvirtConnection, pool: string, vmId: string): Promise<void> {
  const prefix = volumePrefix(vmId);
  for (const v of await listVolumes(conn, pool)) if (v.startsWith(prefix)) await deleteVolume(conn, pool, v);
}

async function undefine(conn: LibvirtConnection, uuid: string): Promise<void> {
  try {
    await conn.query(['undefine', uuid, '--snapshots-metadata', '--nvram']);
  } catch (e) {
    if ((e as VmdeskError).code !== ErrorCode.notFound) throw e;
  }
}

/** The guest's runtime on a domain that runs now, reading accel and start time from the record when there is one. */
async function attach(conn: LibvirtConnection, ctx: EngineContext, state: 'running' | 'paused', opts: { adopted: boolean; warnings: string[] }): Promise<LibvirtRuntime> {
  const rec = await readRecord(ctx.runtimeDir);
  const live = parseDomainXml(await conn.query(['dumpxml', ctx.config.id]));
  const accel: AccelChoice = rec?.uuid === ctx.config.id && rec.uri === conn.host.uri ? rec.accel : { requested: ctx.config.accel, used: live.type === 'kvm' ? 'kvm' : 'tcg', reason: `as the domain runs on ${conn.label}` };
  const rt = new LibvirtRuntime(conn, ctx, live.name, ctx.config.id, state, accel, rec?.startedAt ?? new Date().toISOString(), opts.adopted, opts.warnings);
  await rt.refreshLive();
  await rt.serial.connect().catch(() => undefined);
  await fs.mkdir(ctx.runtimeDir, { recursive: true, mode: 0o700 });
  await rt.writeRecord();
  return rt;
}

const disks: DiskProvider = {
  async create() {
    throw new VmdeskError(ErrorCode.invalid, 'disks of VMs on a libvirt host are volumes there; VMDesk makes them when the VM is created or moved');
  },
  async resize() {
    throw new VmdeskError(ErrorCode.invalid, 'resizing the disk of a VM on a libvirt host is not offered; move it to this machine first (vmdesk migrate NAME --to local)');
  },
  async info() {
    throw new VmdeskError(ErrorCode.invalid, 'the disks of a VM on a libvirt host are volumes there, not files on this machine');
  },
  async checkFree() {
    /* libvirt itself refuses a volume another domain runs from */
  },
};

const hosted: HostedEngine = {
  async probe(host) {
    const conn = LibvirtConnection.for(host);
    const out = await conn.query(['version'], { timeoutMs: 30_000 });
    const lib = /Running against daemon:\s*(\S+)/.exec(out)?.[1] ?? /Using library: libvirt (\S+)/.exec(out)?.[1] ?? '?';
    const hv = /Running hypervisor:\s*(.+)/.exec(out)?.[1]?.trim();
    const warnings: string[] = [];
    try {
      await ensurePool(conn, host.pool);
    } catch (e) {
      warnings.push((e as Error).message);
    }
    return { version: `libvirt ${lib}${hv ? `, ${hv}` : ''}`, warnings };
  },

  async guests(host) {
    const conn = LibvirtConnection.for(host);
    const states = await conn.query(['list', '--all']);
    const uuids = await conn.query(['list', '--all', '--uuid', '--name']);
    const byName = new Map<string, string>();
    for (const line of uuids.split('\n')) {
      const m = /^([0-9a-f-]{36})\s+(.+)$/.exec(line.trim());
      if (m) byName.set(m[2]!, m[1]!);
    }
    const out: { name: string; uuid: string; state: string }[] = [];
    for (const line of states.split('\n')) {
      const m = /^\s*(\d+|-)\s+(.+?)\s+(running|idle|paused|in shutdown|shut off|crashed|pmsuspended|blocked|dying)\s*$/.exec(line);
      if (!m || out.length >= 10_000) continue;
      out.push({ name: m[2]!, uuid: byName.get(m[2]!) ?? '', state: m[3]! });
    }
    return out;
  },

  async provision(ctx, opts, progress) {
    const host = requireHost(ctx);
    const conn = LibvirtConnection.for(host);
    const c = ctx.config;
    await ensurePool(conn, host.pool);
    await checkNameFree(conn, c);
    if (await domainName(conn, c.id)) throw new VmdeskError(ErrorCode.exists, `${conn.label} already has a domain with this VM's id (${c.id})`);
    try {
      for (const d of c.disks.filter((x) => x.owned)) {
        const vol = diskVolumeName(c.id, d);
        const size = opts.sizes?.[d.id];
        const src = opts.sources?.[d.id];
        if (size !== undefined) {
          if (d.format !== 'qcow2') throw new VmdeskError(ErrorCode.invalid, `disk ${d.id}: new disks on a libvirt host are qcow2`);
          progress(`creating disk ${d.id} on ${host.name}`, 0);
          await createVolume(conn, host.pool, vol, size, 'qcow2');
        } else if (src) {
          if (src.format !== d.format) throw new VmdeskError(ErrorCode.internal, `disk ${d.id} is ${d.format} but its source is ${src.format}`);
          await uploadFile(conn, host.pool, vol, src.file, `copying disk ${d.id} to ${host.name}`, progress);
        } else {
          throw new VmdeskError(ErrorCode.internal, `disk ${d.id} has neither a size nor a source to be made from`);
        }
      }
      // Uploaded volumes are raw bytes to libvirt until it looks at them again.
      await conn.query(['pool-refresh', host.pool]).catch(() => undefined);
      await define(conn, ctx, host, progress);
    } catch (e) {
      await undefine(conn, c.id).catch(() => undefined);
      await removeVolumes(conn, host.pool, c.id).catch(() => undefined);
      await forgetUploads(ctx);
      throw e;
    }
  },

  async remove(ctx) {
    const host = requireHost(ctx);
    const conn = LibvirtConnection.for(host);
    try {
      const st = await domState(conn, ctx.config.id);
      if (st.state === 'running' || st.state === 'paused') throw new VmdeskError(ErrorCode.state, `"${ctx.config.name}" is ${st.state} on ${conn.label}; shut it down first`);
    } catch (e) {
      if ((e as VmdeskError).code !== ErrorCode.notFound) throw e;
    }
    await undefine(conn, ctx.config.id);
    await removeVolumes(conn, host.pool, ctx.config.id);
    await forgetUploads(ctx);
    await fs.rm(recordFile(ctx.runtimeDir), { force: true });
  },

  async fetchDisk(ctx, diskId, file, progress) {
    const host = requireHost(ctx);
    const d = ctx.config.disks.find((x) => x.id === diskId);
    if (!d?.owned) throw new VmdeskError(ErrorCode.invalid, `disk ${diskId} is not one of the VM's own volumes`);
    await downloadVolume(LibvirtConnection.for(host), host.pool, diskVolumeName(ctx.config.id, d), file, `copying disk ${diskId} from ${host.name}`, progress);
  },

  async migrate(from, to, opts, progress) {
    const src = LibvirtConnection.for(requireHost(from));
    const dstHost = requireHost(to);
    const dst = LibvirtConnection.for(dstHost);
    const c = from.config;
    await ensurePool(dst, dstHost.pool);
    if (await domainName(dst, c.id)) throw new VmdeskError(ErrorCode.exists, `${dst.label} already has a domain with this VM's id`);
    await checkNameFree(dst, to.config);
    const st = await domState(src, c.id);
    const running = st.state === 'running' || st.state === 'paused';
    const live = parseDomainXml(await src.query(['dumpxml', c.id]));
    const domainType = live.type === 'kvm' ? 'kvm' : 'qemu';
    const owned = c.disks.filter((d) => d.owned);
    const made: string[] = [];
    const cleanDst = async () => {
      for (const v of made) await deleteVolume(dst, dstHost.pool, v).catch(() => undefined);
      await forgetUploads(to);
    };
    try {
      const boot = await syncBootFiles(dst, to, dstHost.pool, progress);
      const xml = buildDomainXml({ config: to.config, domainType, pool: dstHost.pool, bootFiles: boot, ...(boot.cdrom ? { cdrom: boot.cdrom } : {}) });
      const xmlFile = path.join(to.bundleDir, 'libvirt-domain.xml');
      if (running) {
        // Empty volumes of the same size on the destination; libvirt copies the disks into them (NBD) while
        // the guest runs on, then moves the guest.
        for (const d of owned) {
          const target = live.disks.find((x) => x.source && 'volume' in x.source && x.source.volume === diskVolumeName(c.id, d))?.target;
          if (!target) throw new VmdeskError(ErrorCode.engine, `disk ${d.id} of "${c.name}" is not in its definition on ${src.label}`);
          const cap = /^Capacity:\s+(\d+)/m.exec(await src.query(['domblkinfo', c.id, target]))?.[1];
          if (!cap) throw new VmdeskError(ErrorCode.engine, `${src.label} did not say how large disk ${d.id} is`);
          const vol = diskVolumeName(c.id, d);
          await createVolume(dst, dstHost.pool, vol, Number(cap), 'qcow2');
          made.push(vol);
        }
        // libvirt wants the guest's own (migratable) definition with only the host's paths changed: the same
        // machine type and device addresses, so the running guest fits the QEMU it moves into.
        let mig = await src.query(['dumpxml', '--migratable', c.id]);
        const swap = (a: string | undefined, b: string | undefined) => {
          if (a && b && a !== b) mig = mig.split(xmlEscape(a)).join(xmlEscape(b));
        };
        swap(live.kernel, boot.kernel);
        swap(live.initrd, boot.initrd);
        const cd = live.disks.find((d) => d.device === 'cdrom' && d.source && 'file' in d.source)?.source;
        swap(cd && 'file' in cd ? cd.file : undefined, boot.cdrom);
        mig = mig.split(`pool='${xmlEscape(requireHost(from).pool)}'`).join(`pool='${xmlEscape(dstHost.pool)}'`);
        await fs.writeFile(xmlFile + '.migrate', mig, { mode: 0o600 });
        progress(`moving "${c.name}" to ${dstHost.name}`, 0);
        const args = ['migrate', '--p2p', '--copy-storage-all', '--persistent', '--undefinesource', '--verbose', '--xml', xmlFile + '.migrate', ...(opts.live ? ['--live'] : []), c.id, dst.uri];
        const { currentCancelSignal } = await import('../../platform/cancel.js');
        const signal = currentCancelSignal();
        const abort = () => void src.query(['domjobabort', c.id]).catch(() => undefined);
        signal?.addEventListener('abort', abort, { once: true });
        try {
          await src.once(args, {
            timeoutMs: 6 * 60 * 60_000,
            what: `moving "${c.name}" to ${dst.label}`,
            onStderr: (s) => {
              const m = /Migration: \[\s*(\d+) %\]/g;
              let last: RegExpExecArray | null = null;
              for (let x = m.exec(s); x; x = m.exec(s)) last = x;
              if (last) progress(`moving "${c.name}" to ${dstHost.name}`, Number(last[1]) / 100);
            },
          });
        } finally {
          signal?.removeEventListener('abort', abort);
          await fs.rm(xmlFile + '.migrate', { force: true });
        }
        await fs.writeFile(xmlFile, xml, { mode: 0o600 });
      } else {
        // A stopped guest: its volumes are copied through this machine, then defined there.
        for (const [i, d] of owned.entries()) {
          const vol = diskVolumeName(c.id, d);
          const tmp = path.join(from.bundleDir, `.moving-${d.id}.qcow2`);
          const part = (p: string, f?: number) => progress(p, f === undefined ? undefined : (i + f) / owned.length);
          try {
            await downloadVolume(src, requireHost(from).pool, vol, tmp, `copying disk ${d.id} from ${src.host.name}`, (p, f) => part(p, f === undefined ? undefined : f / 2));
            await uploadFile(dst, dstHost.pool, vol, tmp, `copying disk ${d.id} to ${dstHost.name}`, (p, f) => part(p, f === undefined ? undefined : 0.5 + f / 2));
            made.push(vol);
          } finally {
            await fs.rm(tmp, { force: true });
          }
        }
        await dst.query(['pool-refresh', dstHost.pool]).catch(() => undefined);
        await fs.writeFile(xmlFile, xml, { mode: 0o600 });
        await dst.query(['define', xmlFile], { what: `defining "${c.name}" on ${dstHost.name}` });
        await undefine(src, c.id);
      }
    } catch (e) {
      await cleanDst();
      throw e;
    }
    // Moved: what is left on the source goes (the domain is gone there; its volumes and boot files remain).
    await removeVolumes(src, requireHost(from).pool, c.id).catch(() => undefined);
    await forgetUploads(from).catch(() => undefined);
    const rec = await readRecord(from.runtimeDir);
    if (rec) await fs.writeFile(recordFile(to.runtimeDir), JSON.stringify({ ...rec, uri: dstHost.uri, host: dstHost.name }), { mode: 0o600 }).catch(() => undefined);
  },
};

export const libvirtEngine: EngineModule = {
  kind: 'libvirt',
  description: 'a libvirt host (qemu:///session, qemu:///system, or another machine over ssh), through virsh',
  capabilities: {
    display: true,
    liveSnapshots: 'full',
    offlineSnapshots: true,
    diskFormats: ['qcow2', 'raw'],
    nativeDiskFormat: 'qcow2',
    linkedClones: false,
    directKernelOnly: false,
    acpi: true,
    diskBuses: ['virtio', 'sata', 'ide', 'scsi'],
    nicModels: ['virtio-net', 'e1000e', 'e1000', 'rtl8139'],
    // libvirt's user network (slirp/passt) lets the guest reach the host's loopback: VMDesk's nat-host.
    networkModes: ['nat-host', 'none'],
  },

  validate(config) {
    if (!config.host) throw new VmdeskError(ErrorCode.invalid, 'the libvirt engine runs VMs on a libvirt host: give --host NAME (see vmdesk hosts add)');
    if (config.accel === 'hvf') throw new VmdeskError(ErrorCode.invalid, 'HVF is macOS\'s accelerator; a libvirt host runs KVM or TCG');
    for (const n of config.network) {
      if (n.forwards.length) throw new VmdeskError(ErrorCode.invalid, 'port forwards are not offered on libvirt hosts (the guest reaches out through the user network; reach it over ssh)');
    }
    const raw = config as unknown as Record<string, unknown>;
    for (const [key, words] of Object.entries(NOT_OFFERED)) {
      const v = raw[key];
      const set = Array.isArray(v) ? v.length > 0 : v && typeof v === 'object' ? Object.keys(v).length > 0 : v !== undefined && v !== false;
      if (set) throw new VmdeskError(ErrorCode.invalid, `the libvirt engine does not offer ${words}; remove it from "${config.name}" first`);
    }
  },

  async check(ctx) {
    const conn = LibvirtConnection.for(requireHost(ctx));
    const { accel } = await chooseAccel(conn, ctx.config);
    return { accel, warnings: accel.used === 'tcg' && accel.requested !== 'tcg' ? [accel.reason] : [] };
  },

  async start(ctx, opts = {}) {
    const host = requireHost(ctx);
    const conn = LibvirtConnection.for(host);
    const c = ctx.config;
    const st = await domState(conn, c.id).catch((e: VmdeskError) => {
      if (e.code === ErrorCode.notFound) return undefined;
      throw e;
    });
    if (st && (st.state === 'running' || st.state === 'paused')) {
      // Started on the host behind VMDesk's back (virsh, virt-manager): take it over rather than fail.
      return attach(conn, ctx, st.state, { adopted: true, warnings: [`"${c.name}" was already running on ${conn.label}; VMDesk took it over`] });
    }
    const { accel } = await chooseAccel(conn, c);
    await ensurePool(conn, host.pool);
    for (const d of c.disks.filter((x) => x.owned)) {
      if (!(await volumeInfo(conn, host.pool, diskVolumeName(c.id, d)))) throw new VmdeskError(ErrorCode.broken, `disk ${d.id} of "${c.name}" (volume ${diskVolumeName(c.id, d)}) is missing from pool "${host.pool}" on ${conn.label}`);
    }
    await define(conn, ctx, host, () => undefined);
    await fs.mkdir(ctx.runtimeDir, { recursive: true, mode: 0o700 });
    const warnings = accel.used === 'tcg' && accel.requested !== 'tcg' ? [accel.reason] : [];
    const rt = new LibvirtRuntime(conn, ctx, c.name, c.id, 'paused', accel, new Date().toISOString(), false, warnings);
    try {
      await conn.eventsReady();
      // Started paused so the console is attached before the guest prints its first byte.
      await conn.query(['start', c.id, '--paused'], { what: `starting "${c.name}"` });
      await rt.writeRecord();
      await rt.serial.connect();
      await rt.refreshLive();
      if (!opts.paused) await rt.resume();
    } catch (e) {
      await conn.query(['destroy', c.id]).catch(() => undefined);
      rt.detach();
      await fs.rm(recordFile(ctx.runtimeDir), { force: true });
      throw e;
    }
    return rt;
  },

  async adopt(ctx) {
    if (!ctx.host) return null;
    const conn = LibvirtConnection.for(ctx.host);
    const st = await domState(conn, ctx.config.id).catch(() => undefined);
    if (!st || (st.state !== 'running' && st.state !== 'paused')) return null;
    return attach(conn, ctx, st.state, { adopted: true, warnings: [] });
  },

  async reapOrphan(ctx) {
    const rec = await readRecord(ctx.runtimeDir);
    if (!rec || !ctx.host || rec.uri !== ctx.host.uri) return undefined;
    const conn = LibvirtConnection.for(ctx.host);
    let st;
    try {
      st = await domState(conn, ctx.config.id);
    } catch (e) {
      // An unreachable host says nothing: the record stays for a daemon that can ask.
      if ((e as VmdeskError).code !== ErrorCode.notFound) return undefined;
      st = { state: 'shutoff' as const, reason: 'undefined', text: 'no longer defined on the host' };
    }
    if (st.state === 'running' || st.state === 'paused') return undefined;
    await fs.rm(recordFile(ctx.runtimeDir), { force: true });
    const reason = st.state === 'crashed' || /crash|fail/.test(st.reason) ? 'crashed' : /destroy/.test(st.reason) ? 'killed' : /shutdown/.test(st.reason) ? 'guest-poweroff' : 'unknown';
    const exit = { at: new Date().toISOString(), reason, detail: `stopped on ${conn.label} while no VMDesk daemon was watching (${st.text})`, exitCode: null, signal: null, logTail: [] };
    await fs.writeFile(path.join(ctx.bundleDir, 'logs', 'last-exit.json'), JSON.stringify(exit, null, 2) + '\n', { mode: 0o600 }).catch(() => undefined);
    return exit;
  },

  snapshots: libvirtSnapshots,
  disks,
  hosted,
};
