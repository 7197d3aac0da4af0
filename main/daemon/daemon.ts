// vmdeskd: one per VM library (home). It holds the core (the only writer of the library), serves the one RPC
// contract to every client on a unix socket in the runtime dir (0700 dir, 0600 socket: the socket's
// permissions are the local authentication), pushes events to all, and exits when idle (no guest running,
// no client connected, no job) as VirtualBox's VBoxSVC does. Guests never die with it.
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Core } from '../core/core.js';
import type { VmEvent } from '../api/events.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { PROTOCOL_VERSION, type DaemonStatus } from '../api/rpc.js';
import { acquireLock, lockImplementation } from '../platform/lock.js';
import { daemonSocketPath, ensurePrivateDir, runtimeRoot } from '../platform/paths.js';

export { daemonSocketPath };
import { connectUnixSocket } from '../platform/process.js';
import { buildInfo } from '../platform/node-entry.js';
import { lineChannel } from './channel.js';
import { Session } from './session.js';
import { emptyStats, resolveLimits, type ConnectionLimits, type ServerStats } from './limits.js';
import type { DaemonControl } from './dispatch.js';
import { StatsFeed } from './stats-feed.js';
import { SnapshotManager } from '../core/snapshots/manager.js';
import { SnapshotScheduler, type SchedulerOptions } from '../core/snapshots/scheduler.js';
import { imagesBusy } from '../core/images/activity.js';

/** Idle daemons exit after this long (VMDESK_DAEMON_IDLE_MS overrides; 0 never exits on its own). */
export const DEFAULT_IDLE_EXIT_MS = 30_000;

export interface DaemonOptions {
  home: string;
  idleExitMs?: number;
  limits?: Partial<ConnectionLimits>;
  log?: (line: string) => void;
  /** The snapshot scheduler's tick and clock (tests). */
  scheduler?: SchedulerOptions;
}

export interface RunningDaemon {
  readonly core: Core;
  /** Takes the VMs' scheduled snapshots while they run (tests call its runDue to make time pass). */
  readonly scheduler: SnapshotScheduler;
  readonly socketPath: string;
  stats(): ServerStats & { clients: number };
  /** Resolves when the daemon has stopped (idle exit, daemon.stop, close()). */
  readonly closed: Promise<void>;
  close(): Promise<void>;
}

export async function startDaemon(opts: DaemonOptions): Promise<RunningDaemon> {
  const home = path.resolve(opts.home);
  const log = opts.log ?? (() => {});
  const rtRoot = runtimeRoot(home);
  ensurePrivateDir(path.dirname(rtRoot));
  ensurePrivateDir(rtRoot);
  // One daemon per library: the kernel releases this lock however the holder dies.
  const releaseLock = await acquireLock(rtRoot, `the VMDesk daemon of ${home}`, 0).catch((e: unknown) => {
    if (e instanceof VmdeskError && e.code === ErrorCode.busy) throw new VmdeskError(ErrorCode.busy, `another VMDesk daemon already serves ${home}`);
    throw e;
  });
  const socketPath = daemonSocketPath(home);
  const core = new Core({ home, longLived: true });
  const limits = resolveLimits(opts.limits);
  const counters = emptyStats();
  const sessions = new Set<Session>();
  /** Every client socket, so close() can let them go (server.close() waits for each to end). */
  const sockets = new Set<Socket>();
  const started = new Date().toISOString();
  const { version, build } = buildInfo();
  const idleExitMs = opts.idleExitMs ?? envIdle() ?? DEFAULT_IDLE_EXIT_MS;
  let server: Server | undefined;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let closing = false;

  try {
    await core.boot();
  } catch (e) {
    await releaseLock();
    throw e;
  }

  const broadcast = (ev: VmEvent) => {
    for (const s of sessions) s.pushEvent(ev);
  };
  core.on('event', broadcast);
  const scheduler = new SnapshotScheduler(core, new SnapshotManager(core), { log, ...opts.scheduler }).start();

  // Downloads and copies out of the image cache are jobs too: a download started by a client that left goes on.
  const idle = () => sessions.size === 0 && core.runningCount() === 0 && core.jobs().length === 0 && !imagesBusy(core);

  const statsFeed = new StatsFeed(core);
  const control: DaemonControl = {
    status(): DaemonStatus {
      return {
        pid: process.pid,
        version,
        build,
        protocol: PROTOCOL_VERSION,
        home,
        startedAt: started,
        clients: sessions.size,
        vms: core.count(),
        running: core.runningCount(),
        jobs: core.jobs().map((j) => ({ vmId: j.vmId, method: j.method, startedAt: j.startedAt })),
        rssBytes: process.memoryUsage.rss(),
        locks: lockImplementation(),
        idleExitMs,
      };
    },
    stop(ifIdle) {
      // The asking client is connected: idle means no one else, no guest, no job.
      if (ifIdle && (sessions.size > 1 || core.runningCount() > 0 || core.jobs().length > 0)) {
        return { stopping: false, reason: `busy: ${core.runningCount()} VM(s) running, ${sessions.size - 1} other client(s), ${core.jobs().length} job(s)` };
      }
      setTimeout(() => void close(), 50);
      return { stopping: true };
    },
  };

  // A socket file left by a daemon that died: nobody listens (we hold the lock), so it can go.
  if (existsSync(socketPath)) {
    const alive = await connectUnixSocket(socketPath).then(
      (s) => (s.destroy(), true),
      () => false,
    );
    if (alive) {
      await releaseLock();
      throw new VmdeskError(ErrorCode.busy, `a VMDesk daemon already listens on ${socketPath}`);
    }
    rmSync(socketPath, { force: true });
  }

  server = createServer((sock) => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    const hello = { t: 'hello' as const, version: PROTOCOL_VERSION, app: version, build, pid: process.pid };
    // Each connection has its own usage subscriptions in the one feed.
    let self: Session | undefined;
    const own: DaemonControl = { ...control, stats: statsFeed.clientOf(() => self!) };
    const session = new Session(lineChannel(sock, limits.maxFrameBytes), core, broadcast, limits, counters, hello, own);
    self = session;
    // Connections beyond the limit are answered and dropped rather than held.
    if (sessions.size >= limits.maxConnections) {
      counters.refusedUpgrades++;
      sock.end(JSON.stringify({ t: 'error', id: -1, error: { code: ErrorCode.busy, message: `too many clients (limit ${limits.maxConnections})`, details: [] } }) + '\n');
      session.close();
      return;
    }
    sessions.add(session);
    counters.connections = sessions.size;
    sock.on('close', () => {
      sessions.delete(session);
      statsFeed.drop(session);
      counters.connections = sessions.size;
    });
  });
  await new Promise<void>((resolve, reject) => {
    server!.once('error', reject);
    server!.listen(socketPath, () => {
      server!.off('error', reject);
      resolve();
    });
  });
  chmodSync(socketPath, 0o600);
  log(`vmdeskd ${version} (${build}) serving ${home} on ${socketPath}, pid ${process.pid}`);

  let idleSince = idle() ? Date.now() : 0;
  const idleTimer = setInterval(() => {
    if (!idle()) {
      idleSince = 0;
      return;
    }
    if (!idleSince) idleSince = Date.now();
    if (idleExitMs > 0 && Date.now() - idleSince >= idleExitMs) {
      log('idle: no VM running, no client, no job; exiting');
      void close();
    }
  }, Math.min(1000, Math.max(50, idleExitMs / 4)));
  idleTimer.unref();

  async function close(): Promise<void> {
    if (closing) return closed;
    closing = true;
    clearInterval(idleTimer);
    await scheduler.stop();
    core.off('event', broadcast);
    statsFeed.close();
    for (const s of sessions) s.close();
    // server.close() resolves only once every connection has ended: end them (what was sent, such as the
    // answer to daemon.stop, still goes out), and drop any client that does not hang up in time.
    for (const sock of sockets) {
      sock.end();
      setTimeout(() => sock.destroy(), 2000).unref();
    }
    await new Promise<void>((r) => server?.close(() => r()) ?? r());
    rmSync(socketPath, { force: true });
    // Guests keep running: the next daemon adopts them.
    await core.shutdown();
    await releaseLock();
    resolveClosed();
    return closed;
  }

  return {
    core,
    scheduler,
    socketPath,
    stats: () => {
      const s = { ...counters, clients: sessions.size };
      let buffered = 0;
      let streams = 0;
      let paused = 0;
      let pausedIn = 0;
      for (const x of sessions) {
        const u = x.usage();
        buffered += u.bufferedBytes;
        streams += u.serialStreams;
        paused += u.pausedSerialStreams;
        if (u.inputPaused) pausedIn++;
      }
      return { ...s, bufferedBytes: buffered, serialStreams: streams, pausedSerialStreams: paused, pausedInputs: pausedIn };
    },
    closed,
    close,
  };
}

function envIdle(): number | undefined {
  const v = process.env.VMDESK_DAEMON_IDLE_MS;
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}
