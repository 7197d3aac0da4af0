// Shared folders for the QEMU engine: which driver each share gets (virtiofs through virtiofsd, 9p as the
// fallback), the virtiofsd processes (started before QEMU, ended after it, found again by an adopting daemon
// through <runtime>/shares.json) and the argv pieces. A read-only share is read-only on the host's side:
// virtiofsd serves a read-only bind mount of the folder, 9p gets readonly=on.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { SharedFolder, VmConfig } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { ActiveShare } from '../engine.js';
import { writeFileAtomicSync } from '../../platform/atomic.js';
import { processRunning, processStartTime } from '../../platform/process.js';
import { findOnPath } from '../../platform/host-tools.js';
import { optValue } from './args.js';
import { mountCommand } from '../../api/rpc-guest.js';

export { mountCommand };

/** A share as QEMU gets it: the driver decided, the canonical host path, virtiofsd's socket. */
export interface ResolvedShare extends ActiveShare {
  /** virtiofsd's vhost-user socket (virtiofs only). */
  socket?: string;
}

interface SharesRecord {
  vmId: string;
  shares: ResolvedShare[];
  virtiofsd: { tag: string; pid: number; startTime: string }[];
}

const VIRTIOFSD_CANDIDATES = ['/usr/lib/qemu/virtiofsd', '/usr/libexec/virtiofsd', '/usr/lib/virtiofsd'];
const VIRTIOFSD_START_MS = 10_000;

export function sharesRecordFile(runtimeDir: string): string {
  return join(runtimeDir, 'shares.json');
}

export function shareSocket(runtimeDir: string, index: number): string {
  return join(runtimeDir, `fs${index}.sock`);
}

/** virtiofsd from the QEMU packages (VMDESK_VIRTIOFSD names another); undefined where there is none (macOS). */
export function virtiofsdPath(): string | undefined {
  if (process.platform !== 'linux') return undefined;
  const env = process.env.VMDESK_VIRTIOFSD;
  if (env !== undefined) return env && existsSync(env) ? env : undefined;
  return VIRTIOFSD_CANDIDATES.find((p) => existsSync(p)) ?? findOnPath('virtiofsd');
}

/**
 * The shares QEMU gets this run, and a warning for each one left out or moved to 9p. A folder that is gone, or
 * whose path now leads elsewhere (a component became a symlink), is left out rather than followed.
 */
export function planShares(config: VmConfig, runtimeDir: string, virtiofsd: string | undefined): { shares: ResolvedShare[]; warnings: string[] } {
  const shares: ResolvedShare[] = [];
  const warnings: string[] = [];
  for (const [i, s] of (config.shares ?? []).entries()) {
    const problem = folderProblem(s);
    if (problem) {
      warnings.push(`shared folder "${s.tag}" left out: ${problem}`);
      continue;
    }
    let driver = s.driver ?? (virtiofsd ? 'virtiofs' : '9p');
    if (driver === 'virtiofs' && !virtiofsd) {
      warnings.push(`shared folder "${s.tag}" uses 9p: virtiofsd is not installed here (the guest mounts it with: ${mountCommand({ ...s, driver: '9p' })})`);
      driver = '9p';
    }
    shares.push({ tag: s.tag, hostPath: s.hostPath, readOnly: s.readOnly, driver, ...(driver === 'virtiofs' ? { socket: shareSocket(runtimeDir, i) } : {}) });
  }
  return { shares, warnings };
}

function folderProblem(s: SharedFolder): string | undefined {
  try {
    if (!statSync(s.hostPath).isDirectory()) return `${s.hostPath} is no longer a folder`;
    if (realpathSync(s.hostPath) !== s.hostPath) return `${s.hostPath} now leads to ${realpathSync(s.hostPath)} (a symlink); add the share again if that is meant`;
  } catch {
    return `${s.hostPath} does not exist any more`;
  }
  return undefined;
}

/**
 * QEMU arguments for the shares. virtiofs needs the guest's RAM shared with virtiofsd: a memfd backend,
 * named pc.ram as QEMU's own default RAM block is, so saved states stay loadable either way.
 */
export function shareArgs(shares: readonly ResolvedShare[], memoryMiB: number): { machine: string[]; args: string[] } {
  const args: string[] = [];
  const machine: string[] = [];
  if (shares.some((s) => s.driver === 'virtiofs')) {
    args.push('-object', `memory-backend-memfd,id=pc.ram,size=${memoryMiB}M,share=on`);
    machine.push('memory-backend=pc.ram');
  }
  shares.forEach((s, i) => {
    if (s.driver === 'virtiofs') {
      if (!s.socket) throw new VmdeskError(ErrorCode.internal, `shared folder "${s.tag}" has no virtiofsd socket`);
      args.push('-chardev', `socket,id=fs${i},path=${optValue('virtiofsd socket path', s.socket)}`);
      args.push('-device', `vhost-user-fs-pci,chardev=fs${i},tag=${optValue('share tag', s.tag)},id=share${i}`);
    } else {
      // mapped-xattr: the guest's owners and modes live in extended attributes, never as host ownership.
      args.push('-fsdev', `local,id=fsdev${i},path=${optValue('shared folder path', s.hostPath)},security_model=mapped-xattr${s.readOnly ? ',readonly=on' : ''}`);
      args.push('-device', `virtio-9p-pci,fsdev=fsdev${i},mount_tag=${optValue('share tag', s.tag)},id=share${i}`);
    }
  });
  return { machine, args };
}

/** virtiofsd's -o list splits at commas; a backslash escapes the next character. */
function fuseOptValue(v: string): string {
  return v.replace(/[\\,]/g, (c) => `\\${c}`);
}

/**
 * The command that runs virtiofsd for one share. Read-only shares, and every share when VMDesk does not run
 * as root, go through unshare: a private mount namespace holding a read-only bind mount of the folder (and, as
 * a user, a user namespace, so virtiofsd's own sandbox can be set up without privileges).
 */
export function virtiofsdCommand(binary: string, share: ResolvedShare, asRoot: boolean): { file: string; argv: string[] } {
  const own = [`--socket-path=${share.socket}`, '-o', `source=${fuseOptValue(share.hostPath)}`, '-o', 'cache=auto', '-o', 'sandbox=namespace', '-o', 'no_posix_lock', '-o', 'log_level=warn'];
  if (asRoot && !share.readOnly) return { file: binary, argv: own };
  const unshare = asRoot ? ['--mount', '--propagation', 'private'] : ['--user', '--map-root-user', '--mount', '--propagation', 'private'];
  // The folder reaches sh as $1 and virtiofsd's arguments as "$@": nothing is interpolated into the script.
  const script = share.readOnly ? 'mount --bind -o ro "$1" "$1" || exit 97; shift; exec "$@"' : 'shift; exec "$@"';
  return { file: 'unshare', argv: [...unshare, '/bin/sh', '-c', script, 'vmdesk-share', share.hostPath, binary, ...own] };
}

/** Starts virtiofsd for every virtiofs share; on any failure the ones started are stopped and it throws. */
export async function startVirtiofsd(opts: { vmId: string; runtimeDir: string; logFile: string; binary: string; shares: ResolvedShare[] }): Promise<SharesRecord> {
  const record: SharesRecord = { vmId: opts.vmId, shares: opts.shares, virtiofsd: [] };
  const asRoot = process.getuid?.() === 0;
  const log = openSync(opts.logFile, 'a');
  try {
    for (const s of opts.shares) {
      if (s.driver !== 'virtiofs' || !s.socket) continue;
      rmSync(s.socket, { force: true });
      const cmd = virtiofsdCommand(opts.binary, s, asRoot);
      const child = spawn(cmd.file, cmd.argv, { detached: true, stdio: ['ignore', log, log] });
      let exited: string | undefined;
      child.once('error', (e) => (exited = e.message));
      child.once('exit', (code, signal) => (exited = signal ? `signal ${signal}` : `exit code ${code}`));
      child.unref();
      if (child.pid) record.virtiofsd.push({ tag: s.tag, pid: child.pid, startTime: processStartTime(child.pid) ?? '' });
      const deadline = Date.now() + VIRTIOFSD_START_MS;
      while (!exited && !existsSync(s.socket) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      if (exited || !existsSync(s.socket)) {
        throw new VmdeskError(ErrorCode.host, `virtiofsd for shared folder "${s.tag}" did not start (${exited ?? 'no socket after 10 s'}); see logs/virtiofsd.log, or use 9p for it (vmdesk share add --driver 9p)`);
      }
    }
    writeFileAtomicSync(sharesRecordFile(opts.runtimeDir), JSON.stringify(record, null, 2) + '\n');
    return record;
  } catch (e) {
    await stopVirtiofsd(record);
    throw e;
  } finally {
    closeSync(log);
  }
}

export function readSharesRecord(runtimeDir: string, vmId: string): SharesRecord | undefined {
  try {
    const r = JSON.parse(readFileSync(sharesRecordFile(runtimeDir), 'utf8')) as SharesRecord;
    return r.vmId === vmId && Array.isArray(r.shares) && Array.isArray(r.virtiofsd) ? r : undefined;
  } catch {
    return undefined;
  }
}

/** A record for a run whose shares are all 9p (no process to follow, but activeShares reads it). */
export function writeSharesRecord(runtimeDir: string, vmId: string, shares: ResolvedShare[]): void {
  writeFileAtomicSync(sharesRecordFile(runtimeDir), JSON.stringify({ vmId, shares, virtiofsd: [] } satisfies SharesRecord, null, 2) + '\n');
}

/** virtiofsd leaves when QEMU disconnects; whatever is still there a moment later is ended. */
export async function stopVirtiofsd(record: SharesRecord | undefined, runtimeDir?: string): Promise<void> {
  const alive = () => (record?.virtiofsd ?? []).filter((p) => processRunning(p.pid, p.startTime || undefined));
  for (let i = 0; i < 20 && alive().length; i++) await new Promise((r) => setTimeout(r, 25));
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    for (const p of alive()) {
      try {
        process.kill(p.pid, sig);
      } catch {
        /* gone */
      }
    }
    for (let i = 0; i < 40 && alive().length; i++) await new Promise((r) => setTimeout(r, 25));
  }
  for (const s of record?.shares ?? []) if (s.socket) rmSync(s.socket, { force: true });
  if (runtimeDir) rmSync(sharesRecordFile(runtimeDir), { force: true });
}

export function activeShares(record: SharesRecord | undefined): ActiveShare[] {
  return (record?.shares ?? []).map((s) => ({ tag: s.tag, hostPath: s.hostPath, readOnly: s.readOnly, driver: s.driver }));
}
