// Host-level CPU limits on one guest process: a CPU time cap through cgroups, pinning through
// sched_setaffinity (taskset -a, every thread). What works depends on the host, found out once:
//   cgroup v1  a writable cpu hierarchy (root, or a container that lets us write it): <cpu mount>/<our
//              cgroup>/vmdesk/<vm>, cpu.cfs_quota_us / cpu.cfs_period_us.
//   cgroup v2  our own cgroup delegated to us (writable, cpu in cgroup.controllers): that is what a systemd
//              unit with Delegate=yes gives, e.g. `systemd-run --user -p Delegate=yes vmdesk daemon run`. The
//              daemon moves itself into a leaf (<our cgroup>/vmdesk-daemon, v2 allows no processes beside
//              child groups with controllers), enables +cpu and makes <our cgroup>/vmdesk-<vm> with cpu.max.
//   neither    no cap, and the reason says which of these it looked for.
// Every path is under `root` (tests give a temporary tree that looks like /proc and /sys/fs/cgroup).
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { formatCpuList, parseCpuList } from '../api/values.js';
import { findOnPath } from './host-tools.js';

const run = promisify(execFile);

export interface LimitSupport {
  available: boolean;
  mechanism?: string;
  reason: string;
}

interface Mount {
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

export function parseMountInfo(text: string): Mount[] {
  const out: Mount[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash < 6 || f.length < dash + 4) continue;
    out.push({ root: unescapeMount(f[3]!), mountPoint: unescapeMount(f[4]!), fsType: f[dash + 1]!, superOptions: f[dash + 3]!.split(',') });
  }
  return out;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** /proc/self/cgroup: controller list ('' for v2) -> path. */
export function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

const PERIOD_US = 100_000;

/** The cfs quota for a cap of `percent` of each of `cpus` vCPUs over one period, at least 1 ms. */
export function quotaFor(percent: number, cpus: number, periodUs = PERIOD_US): number {
  return Math.max(1000, Math.round((percent / 100) * cpus * periodUs));
}

export class CpuCapController {
  readonly support: LimitSupport;
  private readonly kind: 'v1' | 'v2' | undefined;
  /** Where the per-VM groups go. */
  private readonly base: string | undefined;
  /** v2: our own (delegated) cgroup, prepared on first use. */
  private prepared = false;

  constructor(private readonly root = '/') {
    const r = this.detect();
    this.support = r.support;
    this.kind = r.kind;
    this.base = r.base;
  }

  private p(abs: string): string {
    return path.join(this.root, abs);
  }

  private detect(): { support: LimitSupport; kind?: 'v1' | 'v2'; base?: string } {
    if (process.platform !== 'linux' && this.root === '/') return { support: { available: false, reason: `CPU caps use Linux cgroups; this host is ${process.platform}` } };
    let mounts: Mount[];
    let own: Map<string, string>;
    try {
      mounts = parseMountInfo(readFileSync(this.p('/proc/self/mountinfo'), 'utf8'));
      own = parseProcCgroup(readFileSync(this.p('/proc/self/cgroup'), 'utf8'));
    } catch (e) {
      return { support: { available: false, reason: `cannot read this process's cgroups: ${(e as Error).message}` } };
    }
    const tried: string[] = [];
    // cgroup v1: a hierarchy with the cpu controller (hybrid hosts keep it there even beside a v2 mount).
    const v1 = mounts.find((m) => m.fsType === 'cgroup' && m.superOptions.includes('cpu'));
    if (v1) {
      const ownPath = [...own.entries()].find(([ctrl]) => ctrl.split(',').includes('cpu'))?.[1] ?? '/';
      const rel = path.posix.relative(v1.root, ownPath);
      const dir = path.posix.join(v1.mountPoint, rel.startsWith('..') ? '' : rel);
      const base = path.posix.join(dir, 'vmdesk');
      if (writableDir(this.p(dir)) || writableDir(this.p(base))) {
        if (existsSync(this.p(path.posix.join(dir, 'cpu.cfs_quota_us')))) {
          return { kind: 'v1', base, support: { available: true, mechanism: `cgroup v1 cpu controller (${base})`, reason: `CPU caps through cgroup v1 (${base}/<vm>/cpu.cfs_quota_us)` } };
        }
        tried.push(`cgroup v1 cpu hierarchy at ${dir} has no cpu.cfs_quota_us (kernel without CFS bandwidth control)`);
      } else tried.push(`cgroup v1 cpu hierarchy at ${dir} is not writable by VMDesk`);
    }
    const v2 = mounts.find((m) => m.fsType === 'cgroup2');
    const ownV2 = own.get('');
    if (v2 && ownV2 !== undefined && !v1) {
      const dir = path.posix.join(v2.mountPoint, ownV2);
      let controllers: string[] = [];
      try {
        controllers = readFileSync(this.p(path.posix.join(dir, 'cgroup.controllers')), 'utf8').trim().split(/\s+/);
      } catch {
        /* none */
      }
      if (!controllers.includes('cpu')) tried.push(`cgroup v2: the cpu controller is not available in VMDesk's cgroup ${ownV2} (it is not delegated)`);
      else if (!writableDir(this.p(dir))) tried.push(`cgroup v2: VMDesk's cgroup ${ownV2} is not writable (not delegated); run the daemon in a unit with Delegate=yes, e.g. systemd-run --user -p Delegate=yes vmdesk daemon run`);
      else return { kind: 'v2', base: dir, support: { available: true, mechanism: `cgroup v2, delegated (${dir})`, reason: `CPU caps through cgroup v2 in VMDesk's delegated cgroup (${dir}/vmdesk-<vm>/cpu.max)` } };
    } else if (!v1) tried.push('no cgroup file system with the cpu controller is mounted');
    return { support: { available: false, reason: `CPU caps are not available on this host: ${tried.join('; ')}` } };
  }

  private groupDir(key: string): string {
    if (!/^[A-Za-z0-9-]{1,64}$/.test(key)) throw new VmdeskError(ErrorCode.invalid, `invalid cgroup key "${key}"`);
    return this.kind === 'v2' ? path.posix.join(this.base!, `vmdesk-${key}`) : path.posix.join(this.base!, key);
  }

  private require(): void {
    if (!this.support.available) throw new VmdeskError(ErrorCode.host, this.support.reason);
  }

  /** v2: no process may sit beside child groups that use controllers; ours moves into a leaf first. */
  private prepareV2(): void {
    if (this.prepared || this.kind !== 'v2') return;
    const dir = this.base!;
    const subtree = readFileSync(this.p(path.posix.join(dir, 'cgroup.subtree_control')), 'utf8');
    if (!subtree.split(/\s+/).includes('cpu')) {
      const leaf = path.posix.join(dir, 'vmdesk-daemon');
      mkdirSync(this.p(leaf), { recursive: true });
      const procs = readFileSync(this.p(path.posix.join(dir, 'cgroup.procs')), 'utf8').split('\n').filter(Boolean);
      for (const pid of procs) writeFileSync(this.p(path.posix.join(leaf, 'cgroup.procs')), pid);
      writeFileSync(this.p(path.posix.join(dir, 'cgroup.subtree_control')), '+cpu');
    }
    this.prepared = true;
  }

  /** Puts the process (all its threads) into the VM's group and sets its cap; null lifts the cap. */
  apply(key: string, pid: number, cap: { percent: number; cpus: number } | null): void {
    this.require();
    try {
      this.prepareV2();
      const g = this.groupDir(key);
      mkdirSync(this.p(g), { recursive: true });
      if (this.kind === 'v1') {
        writeFileSync(this.p(path.posix.join(g, 'cpu.cfs_period_us')), String(PERIOD_US));
        writeFileSync(this.p(path.posix.join(g, 'cpu.cfs_quota_us')), cap ? String(quotaFor(cap.percent, cap.cpus)) : '-1');
      } else {
        writeFileSync(this.p(path.posix.join(g, 'cpu.max')), cap ? `${quotaFor(cap.percent, cap.cpus)} ${PERIOD_US}` : `max ${PERIOD_US}`);
      }
      writeFileSync(this.p(path.posix.join(g, 'cgroup.procs')), String(pid));
    } catch (e) {
      if (e instanceof VmdeskError) throw e;
      throw new VmdeskError(ErrorCode.host, `cannot apply the CPU cap through ${this.support.mechanism}: ${(e as Error).message}`);
    }
  }

  /** The cap written for the VM's group now (percent of one host CPU over a period), for tests and info. */
  read(key: string): { quotaUs: number | null; periodUs: number } | undefined {
    if (!this.support.available) return undefined;
    try {
      const g = this.groupDir(key);
      if (this.kind === 'v1') {
        const q = Number(readFileSync(this.p(path.posix.join(g, 'cpu.cfs_quota_us')), 'utf8').trim());
        return { quotaUs: q < 0 ? null : q, periodUs: Number(readFileSync(this.p(path.posix.join(g, 'cpu.cfs_period_us')), 'utf8').trim()) };
      }
      const [q, per] = readFileSync(this.p(path.posix.join(g, 'cpu.max')), 'utf8').trim().split(/\s+/);
      return { quotaUs: q === 'max' ? null : Number(q), periodUs: Number(per) };
    } catch {
      return undefined;
    }
  }

  /** Process ids in the VM's group. */
  members(key: string): number[] {
    try {
      return readFileSync(this.p(path.posix.join(this.groupDir(key), 'cgroup.procs')), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  /** Removes the VM's group once its process is gone (a group with processes stays). */
  release(key: string): void {
    if (!this.support.available) return;
    try {
      rmdirSync(this.p(this.groupDir(key)));
    } catch {
      // absent, or a process still in it
    }
  }
}

function writableDir(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

let defaultController: CpuCapController | undefined;

/** The host's CPU cap controller, detected once per process. */
export function cpuCaps(): CpuCapController {
  return (defaultController ??= new CpuCapController());
}

// ---- pinning ----------------------------------------------------------------------------------------------

/** CPUs this process may run on (a container's cpuset included): the CPUs a guest can be pinned to. */
export function allowedCpus(statusText?: string): number[] | undefined {
  try {
    const text = statusText ?? readFileSync('/proc/self/status', 'utf8');
    const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(text);
    return m ? parseCpuList(m[1]!) : undefined;
  } catch {
    return undefined;
  }
}

export function pinningSupport(): LimitSupport {
  if (process.platform !== 'linux') return { available: false, reason: `CPU pinning uses Linux's sched_setaffinity; this host is ${process.platform}` };
  const taskset = findOnPath('taskset');
  if (!taskset) return { available: false, reason: 'CPU pinning needs taskset (util-linux), which is not installed' };
  const cpus = allowedCpus();
  return { available: true, mechanism: 'sched_setaffinity (taskset -a)', reason: `pinning with taskset on every thread${cpus ? ` (CPUs ${formatCpuList(cpus)})` : ''}` };
}

/** Checks a pinning against the CPUs this host lets VMDesk use; EINVAL naming them. */
export function checkPinning(cpus: readonly number[]): void {
  const allowed = allowedCpus();
  if (!allowed) return;
  const missing = cpus.filter((c) => !allowed.includes(c));
  if (missing.length) throw new VmdeskError(ErrorCode.invalid, `host CPU${missing.length > 1 ? 's' : ''} ${formatCpuList(missing)} ${missing.length > 1 ? 'are' : 'is'} not available here (CPUs ${formatCpuList(allowed)})`);
}

/** Sets the affinity of every thread of the process; null: every CPU this host lets us use. */
export async function pinProcess(pid: number, cpus: readonly number[] | null): Promise<void> {
  const support = pinningSupport();
  if (!support.available) throw new VmdeskError(ErrorCode.host, support.reason);
  const list = cpus ?? allowedCpus();
  if (!list?.length) throw new VmdeskError(ErrorCode.host, 'cannot tell which CPUs this host has (no /proc/self/status)');
  checkPinning(list);
  try {
    await run(findOnPath('taskset')!, ['-a', '-p', '-c', formatCpuList(list), String(pid)], { timeout: 10_000 });
  } catch (e) {
    const msg = ((e as { stderr?: string }).stderr || (e as Error).message).trim().split('\n').at(-1);
    throw new VmdeskError(ErrorCode.host, `cannot pin the guest to CPUs ${formatCpuList(list)}: ${msg}`);
  }
}

/** The CPUs each thread of the process may run on (from /proc), for tests and info. */
export function threadAffinities(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  try {
    for (const tid of readdirSafe(`/proc/${pid}/task`)) {
      const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
      if (m) out.set(Number(tid), m[1]!);
    }
  } catch {
    /* gone */
  }
  return out;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
