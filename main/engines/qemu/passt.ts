// NAT without the host: each "nat" adapter is QEMU's `-netdev stream` (QEMU listens on a unix socket in the
// VM's runtime dir) connected to its own passt process. passt gives the guest QEMU's usual addresses
// (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3 forwarded to the host's resolver) and internet access through
// ordinary host sockets, but with --no-map-gw nothing on the host's loopback (its services, other VMs'
// forwarded ports) is reachable from the guest. Port forwards are passt's -t/-u bound to 127.0.0.1.
//
// passt gets the connection as an inherited fd (--fd): it drops root to "nobody" before binding sockets of
// its own, so it could not create one in a private runtime dir. QEMU's server socket accepts a new client
// after one leaves, so passt can be replaced (new forwards) while the guest runs.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { realpathSync } from 'node:fs';
import type { PortForward } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { connectUnixSocket } from '../../platform/process.js';
import { probeHostPort } from '../../platform/ports.js';
import { findOnPath } from './host.js';

/** The passt binary, or undefined (not Linux, or not installed: `sudo apt install passt`). */
export function passtPath(): string | undefined {
  if (process.platform !== 'linux') return undefined;
  const override = process.env.VMDESK_PASST;
  if (override !== undefined) return override === '' ? undefined : findOnPath(override);
  return findOnPath('passt');
}

export const PASST_MISSING = 'passt is not installed, so NAT guests can reach services on the host\'s loopback (install it: sudo apt install passt)';

/**
 * passt before upstream commit 9178a9e (2023-09-22, first in release 2023_10_04; Debian 12 ships
 * 0.0~git20230309) never sends the ACK that ends the handshake of a forwarded connection until the host's
 * client sends data: tcp_conn_from_sock_finish() asks for the ACK "if needed", and with nothing to
 * acknowledge and an open window it is never needed. The guest's socket stays in SYN_RECV, so a service
 * that speaks first (SMTP, FTP, MySQL, VNC, `nc -l`) never accepts the connection, and passt resets it
 * after its handshake timeout. No passt option changes that path. Services whose client speaks first
 * (HTTP, SSH) work, as their first data carries the ACK.
 */
export const PASST_FIXED_SINCE = 20230922;

const passtDates = new Map<string, number | undefined>();

/** The date (YYYYMMDD) of the passt at this path, from its --version or its distribution package; undefined when unknown. */
export function passtBuildDate(path: string): number | undefined {
  if (passtDates.has(path)) return passtDates.get(path);
  const date = (text: string | undefined): number | undefined => {
    const m = /(20\d\d)[_.]?([01]\d)[_.]?([0-3]\d)/.exec(text ?? '');
    return m ? Number(m[1]! + m[2]! + m[3]!) : undefined;
  };
  const run = (cmd: string, args: string[]): string | undefined => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 3000 });
    return r.status === 0 ? r.stdout : undefined;
  };
  // Upstream builds print their release ("passt 2023_10_04.f851084"); Debian's print "unknown version",
  // so ask the package manager that installed /usr/bin/passt (0.0~git20230309.7c7625d-1, 0^20231004.gf851084-1).
  let found = date(run(path, ['--version'])?.split('\n')[0]);
  let real = path;
  try {
    real = realpathSync(path);
  } catch {
    /* keep the path */
  }
  if (found === undefined && real.startsWith('/usr/')) found = date(run('dpkg-query', ['-W', '-f', '${Version}', 'passt'])) ?? date(run('rpm', ['-q', '--qf', '%{VERSION}', 'passt']));
  passtDates.set(path, found);
  return found;
}

/** The build date (YYYY-MM-DD) of a passt older than the fix (PASST_FIXED_SINCE); undefined when fixed or unknown. */
function oldPasstBuilt(path: string): string | undefined {
  const built = passtBuildDate(path);
  if (built === undefined || built >= PASST_FIXED_SINCE) return undefined;
  const d = String(built);
  return `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}`;
}

/**
 * Guest ports whose usual protocol has the client speak first (SSH: OpenSSH sends its identification at once;
 * HTTP, TLS): through any passt they work, so forwards to them alone (a gallery VM's SSH forward) warn of nothing.
 */
const CLIENT_FIRST_PORTS = new Set([22, 80, 443, 8000, 8080, 8443]);

/** A warning when this passt cannot forward to services that speak first (see PASST_FIXED_SINCE); undefined when fine or unknown. */
export function passtForwardWarning(path: string, forwards: PortForward[]): string | undefined {
  const exposed = forwards.filter((f) => f.protocol === 'tcp' && !CLIENT_FIRST_PORTS.has(f.guestPort));
  if (!exposed.length) return undefined;
  const built = oldPasstBuilt(path);
  if (!built) return undefined;
  return `this host's passt (built ${built}) does not complete a forwarded TCP connection until the host's program sends data first: guest services that speak first (SMTP, FTP, MySQL, VNC, nc -l) are unreachable through "nat" forwards (here guest port${exposed.length > 1 ? 's' : ''} ${exposed.map((f) => f.guestPort).join(', ')}), while HTTP and SSH work. Use "nat-host" for such services, or install passt 2023_10_04 or newer`;
}

/** What `vmdesk host` says of passt: missing, or too old for guest services that speak first; undefined when fine. */
export function passtHostNote(path: string | undefined): string | undefined {
  if (!path) return process.platform === 'linux' ? PASST_MISSING : undefined;
  const built = oldPasstBuilt(path);
  if (!built) return undefined;
  return `passt (built ${built}, at ${path}) predates 2023_10_04: "nat" forwards reach only guest services whose client speaks first (SSH, HTTP), not SMTP, FTP, VNC or MySQL; use "nat-host" for those, or a newer passt (VMDESK_PASST=/path)`;
}

/** passt's arguments for one adapter: QEMU-compatible addressing, no route to the host, forwards on 127.0.0.1. */
export function passtArgs(forwards: PortForward[], fd: number): string[] {
  const args = ['--foreground', '--one-off', '--quiet', '--ipv4-only', '--fd', String(fd)];
  args.push('--address', '10.0.2.15', '--netmask', '24', '--gateway', '10.0.2.2', '--dns', '10.0.2.3', '--dns-forward', '10.0.2.3', '--no-map-gw');
  for (const f of forwards) args.push(f.protocol === 'tcp' ? '-t' : '-u', `127.0.0.1/${f.hostPort}:${f.guestPort}`);
  return args;
}

/**
 * Connects to QEMU's netdev socket (retrying while QEMU is still creating it) and starts passt on that
 * connection. passt quits when QEMU closes it (--one-off), so it never outlives the guest.
 */
export async function startPasst(opts: { passt: string; socket: string; forwards: PortForward[]; log: number; alive: () => boolean; timeoutMs?: number }): Promise<ChildProcess> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    try {
      const sock = await connectUnixSocket(opts.socket);
      const child = spawn(opts.passt, passtArgs(opts.forwards, 3), { stdio: ['ignore', opts.log, opts.log, sock], detached: false });
      // passt holds its own copy of the connection now.
      sock.destroy();
      return child;
    } catch (e) {
      if (!opts.alive() || Date.now() > deadline) throw new VmdeskError(ErrorCode.engine, `cannot connect passt to QEMU's network socket: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/**
 * Host ports a VM is about to forward must be free on 127.0.0.1, or the guest would start without its
 * forward (passt) or not at all (QEMU's user network). Checked before start, with a plain message.
 */
export async function checkHostPortsFree(forwards: PortForward[], vmName: string): Promise<void> {
  for (const f of forwards) {
    const r = await probeHostPort(f.protocol, f.hostPort);
    if (r.state === 'in-use') throw new VmdeskError(ErrorCode.busy, `cannot start "${vmName}": host port ${f.hostPort} (forwarded to guest port ${f.guestPort}) is already in use by another program or VM`);
    if (r.state === 'denied') throw new VmdeskError(ErrorCode.permission, `cannot start "${vmName}": host port ${f.hostPort} needs privileges to listen on; choose a port above 1023`);
    if (r.state === 'error') throw new VmdeskError(ErrorCode.host, `cannot check host port ${f.hostPort}: ${r.message}`);
  }
}
