// A private libvirt daemon for tests: libvirtd as root in its own mount namespace, where its state, run, log
// and configuration directories (/run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt,
// /etc/libvirt) are this test's own directories bound over the system's. Its socket is reached from outside
// as qemu+unix:///system?socket=DIR/run/libvirt-sock. Each daemon has its own host UUID, so two of them on one
// machine are two hosts to libvirt (it refuses to migrate a guest to "the same host"). QEMU runs as root with
// no security driver, its logs in files (no virtlogd), and a storage pool "default" in DIR/pool.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface PrivateLibvirtd {
  dir: string;
  uri: string;
  pool: string;
  /** One virsh command against this daemon (throws with stderr on failure). */
  virsh(...args: string[]): string;
  stop(): Promise<void>;
}

/** Why a private libvirtd cannot run on this machine, or undefined when it can. */
export function libvirtdMissing(): string | undefined {
  if (process.platform !== 'linux') return 'libvirtd runs on Linux only';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'a private libvirtd (in its own mount namespace) needs root';
  for (const bin of ['/usr/sbin/libvirtd', '/usr/bin/virsh', '/usr/bin/unshare']) if (!existsSync(bin)) return `${bin} is not installed (scripts/setup.sh installs libvirt-daemon-system and libvirt-clients)`;
  const u = spawnSync('unshare', ['-m', '--propagation', 'private', 'true']);
  if (u.status !== 0) return `mount namespaces are not available here (unshare -m: ${u.stderr.toString().trim()})`;
  return undefined;
}

const CAPS_CACHE = path.join(os.tmpdir(), 'vmdesk-libvirt-qemu-caps');
const BOUND = ['/run/libvirt', '/var/lib/libvirt', '/var/log/libvirt', '/var/cache/libvirt', '/etc/libvirt'];

/**
 * Daemons (and their QEMUs) left by a test process that died before stopping them: every process whose command
 * line names such a directory is killed, and the directory removed.
 */
function reapOrphans(): void {
  for (const name of readdirSync(os.tmpdir()).filter((n) => n.startsWith('vmd-lv-'))) {
    const dir = path.join(os.tmpdir(), name);
    let owner = 0;
    try {
      owner = Number(readFileSync(path.join(dir, 'owner'), 'utf8'));
      process.kill(owner, 0);
      continue;
    } catch {
      if (!owner && Date.now() - statSync(dir).mtimeMs < 60_000) continue;
    }
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir + '/')) process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function startLibvirtd(): Promise<PrivateLibvirtd> {
  reapOrphans();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vmd-lv-'));
  writeFileSync(path.join(dir, 'owner'), String(process.pid));
  const sub = { run: 'run', lib: 'lib', log: 'log', cache: 'cache', etc: 'etc' } as const;
  for (const d of Object.values(sub)) mkdirSync(path.join(dir, d), { recursive: true, mode: 0o755 });
  for (const d of ['qemu', 'images', 'boot', 'dnsmasq', 'network', 'swtpm', 'qemu/nvram', 'qemu/snapshot', 'qemu/save', 'qemu/dump', 'qemu/checkpoint', 'qemu/ram']) mkdirSync(path.join(dir, sub.lib, d), { recursive: true });
  mkdirSync(path.join(dir, sub.log, 'qemu'), { recursive: true });
  mkdirSync(path.join(dir, 'pool'), { mode: 0o755 });
  const hostUuid = randomUUID();
  writeFileSync(
    path.join(dir, sub.etc, 'libvirtd.conf'),
    [`host_uuid = "${hostUuid}"`, 'unix_sock_rw_perms = "0700"', 'auth_unix_rw = "none"', 'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"', 'keepalive_interval = 5', ''].join('\n'),
  );
  // QEMU as root, no security labels, no cgroups, logs to files: nothing here depends on the machine's set-up.
  writeFileSync(
    path.join(dir, sub.etc, 'qemu.conf'),
    ['user = "root"', 'group = "root"', 'dynamic_ownership = 0', 'remember_owner = 0', 'security_driver = "none"', 'cgroup_controllers = [ ]', 'stdio_handler = "file"', ''].join('\n'),
  );
  // QEMU's capabilities as an earlier test daemon probed them (libvirt checks them against the binary's date
  // and its own version): a start in one second rather than ten.
  if (existsSync(CAPS_CACHE)) cpSync(CAPS_CACHE, path.join(dir, sub.cache, 'qemu'), { recursive: true });
  for (const p of BOUND) mkdirSync(p, { recursive: true });
  const binds = BOUND.map((p, i) => `mount --bind "$D/${[sub.run, sub.lib, sub.log, sub.cache, sub.etc][i]}" ${p}`).join(' && ');
  const child: ChildProcess = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `${binds} && exec /usr/sbin/libvirtd --config "$D/etc/libvirtd.conf" --pid-file "$D/run/libvirtd.pid"`], {
    env: { ...process.env, D: dir, LC_ALL: 'C' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const sock = path.join(dir, sub.run, 'libvirt-sock');
  const uri = `qemu+unix:///system?socket=${sock}`;
  const virsh = (...args: string[]): string => {
    const r = spawnSync('virsh', ['-c', uri, ...args], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' }, timeout: 120_000 });
    if (r.status !== 0) throw new Error(`virsh ${args.join(' ')}: ${r.stderr.trim() || r.error?.message}`);
    return r.stdout;
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`libvirtd exited (${child.exitCode}): ${stderr.trim()} ${readLog(dir)}`);
    if (existsSync(sock)) {
      try {
        // Answers once QEMU's capabilities are probed (seconds on a fresh cache), as every later call needs them.
        virsh('version');
        break;
      } catch {
        /* not ready yet */
      }
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`libvirtd did not answer within 60 s: ${stderr.trim()} ${readLog(dir)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!existsSync(CAPS_CACHE)) {
    const tmp = `${CAPS_CACHE}.${process.pid}`;
    try {
      cpSync(path.join(dir, sub.cache, 'qemu'), tmp, { recursive: true });
      renameSync(tmp, CAPS_CACHE);
    } catch {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  virsh('pool-define-as', 'default', 'dir', '--target', path.join(dir, 'pool'));
  virsh('pool-start', 'default');
  return {
    dir,
    uri,
    pool: 'default',
    virsh,
    async stop() {
      // Guests first (their QEMU outlives libvirtd), then the daemon.
      try {
        for (const name of virsh('list', '--name').split('\n').map((s) => s.trim()).filter(Boolean)) {
          try {
            virsh('destroy', name);
          } catch {
            /* already gone */
          }
        }
      } catch {
        /* the daemon is gone already */
      }
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await Promise.race([new Promise((r) => child.once('exit', r)), new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function readLog(dir: string): string {
  try {
    return readFileSync(path.join(dir, 'log', 'libvirtd.log'), 'utf8').slice(-2000);
  } catch {
    return '';
  }
}
