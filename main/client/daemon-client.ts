// Connecting to a library's daemon: start it on demand (a detached process that outlives the client), check
// that it runs the same build (an idle daemon of another build is restarted; a busy one is reported), and
// speak the contract over its unix socket. Used by the CLI, `vmdesk serve` and the Electron shell.
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { FrameClient, RpcCallError, type FrameTransport } from '../api/frame-client.js';
import { PROTOCOL_VERSION } from '../api/values.js';
import { connectUnixSocket } from '../platform/process.js';
import { lineSplitter } from '../platform/lines.js';
import { buildInfo } from '../platform/node-entry.js';
import { ensureRuntimeCopy, nodeCommand, resources } from '../platform/resources.js';
import { daemonSocketPath, ensurePrivateDir, runtimeRoot } from '../platform/paths.js';

/** Frames bigger than this from the daemon end the connection (its answers are bounded far below). */
const MAX_FRAME = 64 * 1024 * 1024;

/** JSON lines over the daemon's socket as a FrameTransport. */
export function socketTransport(sock: Socket): FrameTransport {
  let textFn: (t: string) => void = () => {};
  const closeFns: (() => void)[] = [];
  sock.on(
    'data',
    lineSplitter(
      MAX_FRAME,
      (line) => {
        if (line.length) textFn(line.toString('utf8'));
      },
      () => sock.destroy(),
    ),
  );
  sock.on('error', () => {});
  sock.on('close', () => {
    for (const fn of closeFns) fn();
  });
  return {
    send: (text) => void (sock.writable && sock.write(text + '\n')),
    close: () => sock.destroy(),
    onText: (fn) => void (textFn = fn),
    onClose: (fn) => void closeFns.push(fn),
  };
}

export interface ConnectOptions {
  /** Start the daemon when none runs (default true). */
  autostart?: boolean;
  /** How long to wait for a daemon that is starting. */
  timeoutMs?: number;
  /**
   * Talk to a daemon of another build as it is (same protocol only): `vmdesk daemon status|stop` must reach
   * the daemon an upgrade left running with guests, or its own advice ("run vmdesk daemon stop") is refused.
   */
  anyBuild?: boolean;
}

async function tryConnect(socketPath: string): Promise<Socket | undefined> {
  try {
    return await connectUnixSocket(socketPath);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') return undefined;
    throw new VmdeskError(ErrorCode.host, `cannot reach the VMDesk daemon at ${socketPath}: ${(e as Error).message}`);
  }
}

/**
 * Starts a daemon for `home`, detached (its own session, output to <home>/logs/daemon.log). Resolves the
 * returned promise with the exit code if it ends early (exit code 5: another daemon won the race).
 */
export function spawnDaemon(home: string): { exited: Promise<number | null> } {
  const logs = path.join(home, 'logs');
  mkdirSync(logs, { recursive: true, mode: 0o700 });
  // The daemon runs from the daemon tree resources.ts names, never from an AppImage's mount (copied out first).
  const r = resources();
  try {
    ensureRuntimeCopy(r);
  } catch (e) {
    throw new VmdeskError(ErrorCode.host, `cannot prepare the VMDesk daemon's runtime: ${(e as Error).message}`);
  }
  const cmd = nodeCommand(r, 'daemon/main');
  const out = openSync(path.join(logs, 'daemon.log'), 'a', 0o600);
  try {
    const child = spawn(cmd.command, [...cmd.args, '--home', home], {
      detached: true,
      stdio: ['ignore', out, out],
      env: cmd.env,
      cwd: home,
    });
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code) => resolve(code));
      child.once('error', () => resolve(null));
    });
    child.unref();
    return { exited };
  } finally {
    closeSync(out);
  }
}

/** The last lines of the daemon's log, for an error that says why it did not start. */
function daemonLogTail(home: string): string[] {
  try {
    const text = readFileSync(path.join(home, 'logs', 'daemon.log'), 'utf8');
    return text.split('\n').filter(Boolean).slice(-8);
  } catch {
    return [];
  }
}

async function connectOnce(home: string, opts: ConnectOptions): Promise<FrameClient> {
  const socketPath = daemonSocketPath(home);
  let sock = await tryConnect(socketPath);
  if (!sock) {
    if (opts.autostart === false) throw new VmdeskError(ErrorCode.notFound, `no VMDesk daemon runs for ${home}`);
    ensurePrivateDir(path.dirname(runtimeRoot(home)));
    mkdirSync(home, { recursive: true, mode: 0o700 });
    const { exited } = spawnDaemon(home);
    let ended: number | null | undefined;
    void exited.then((code) => (ended = code));
    const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
    while (!sock) {
      // Exit code 5: another daemon won the start-up race; keep trying to connect to that one.
      if (ended !== undefined && ended !== 5) {
        const tail = daemonLogTail(home);
        throw new VmdeskError(ErrorCode.host, `the VMDesk daemon could not start: ${tail.find((l) => /cannot start|Error/.test(l)) ?? `exit code ${ended}`}`, tail);
      }
      if (Date.now() > deadline) {
        throw new VmdeskError(ErrorCode.timeout, `the VMDesk daemon did not start within ${Math.round((opts.timeoutMs ?? 30_000) / 1000)} s (see ${path.join(home, 'logs', 'daemon.log')})`);
      }
      await new Promise((r) => setTimeout(r, 20));
      sock = await tryConnect(socketPath);
    }
  }
  const client = new FrameClient(socketTransport(sock));
  await Promise.race([
    client.waitHello(),
    new Promise((_, reject) => setTimeout(() => reject(new VmdeskError(ErrorCode.timeout, 'the VMDesk daemon did not greet us')), opts.timeoutMs ?? 30_000).unref()),
  ]);
  return client;
}

/**
 * A connection to the library's daemon, started if needed. A daemon speaking another protocol, or running
 * another build of VMDesk, is restarted when idle; when it runs guests or serves others it is left alone and
 * the caller is told (EBUSY) how to proceed.
 */
export async function connectDaemon(home: string, opts: ConnectOptions = {}): Promise<FrameClient> {
  const abs = path.resolve(home);
  const mine = buildInfo();
  for (let attempt = 0; ; attempt++) {
    const client = await connectOnce(abs, opts);
    const hello = client.hello!;
    const same = hello.version === PROTOCOL_VERSION && (opts.anyBuild || hello.build === mine.build || mine.build === 'source' || hello.build === 'source');
    if (same) return client;
    if (attempt > 0) {
      client.close();
      throw new VmdeskError(ErrorCode.busy, `the VMDesk daemon for ${abs} still runs build ${hello.build} after a restart`);
    }
    let answer: { stopping: boolean; reason?: string };
    try {
      answer = hello.version === PROTOCOL_VERSION ? await client.call('daemon.stop', { ifIdle: true }) : { stopping: false, reason: `it speaks protocol ${hello.version}` };
    } catch (e) {
      client.close();
      throw e instanceof RpcCallError ? new VmdeskError(e.code as ErrorCode, e.message) : e;
    }
    if (!answer.stopping) {
      client.close();
      throw new VmdeskError(
        ErrorCode.busy,
        `a VMDesk daemon of another version (${hello.app ?? '?'}, build ${hello.build ?? '?'}, pid ${hello.pid ?? '?'}) serves ${abs} and is ${answer.reason ?? 'busy'}; once its jobs are done, "vmdesk daemon stop" ends it (its running VMs keep running, and this version's daemon adopts them; other clients are disconnected), or use that version`,
      );
    }
    await new Promise<void>((r) => {
      if (client.isClosed) r();
      else client.onClosed(r);
    });
    // Wait for its socket to go, then start ours.
    for (let i = 0; i < 200 && (await tryConnect(daemonSocketPath(abs)).then((s) => (s?.destroy(), !!s))); i++) await new Promise((r) => setTimeout(r, 25));
  }
}

/** One call on a short-lived connection (the CLI's common case). */
export async function callDaemon<T>(home: string, fn: (c: FrameClient) => Promise<T>, opts: ConnectOptions = {}): Promise<T> {
  const c = await connectDaemon(home, opts);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}
