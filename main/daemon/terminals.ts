// Terminal streams of one client connection (term.* frames): a shell in the guest over SSH, run by ssh(1)
// under a pty (node-pty) in the daemon and reaching the guest through the VM's own forward on 127.0.0.1
// with the key VMDesk made for it; or, for VMs without one, the guest's serial console. The GUI's terminal
// tab and `vmdesk shell` both speak these frames. Bounded like serial streams: streams per connection and
// per daemon, output paused while the client is behind, input held while the guest is not reading.
import { connect } from 'node:net';
import os from 'node:os';
import type { IPty } from 'node-pty';
import type { Core } from '../core/core.js';
import type { SerialSession } from '../core/serial.js';
import type { ClientFrame, RpcError, ServerFrame } from '../api/rpc.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { findOnPath } from '../platform/host-tools.js';
import { sshTarget, type SshTarget } from '../core/images/guest-info.js';
import { toRpcError } from './dispatch.js';

/** Terminals one connection may hold, and the daemon as a whole (each SSH terminal is an ssh process). */
export const MAX_TERMINALS_PER_CONNECTION = 8;
export const MAX_TERMINALS = 64;
/** Input queued for a pty that nobody reads past which the terminal is closed. */
const MAX_PENDING_INPUT = 4 * 1024 * 1024;
/** How long `auto`/`ssh` terminals wait for the guest's SSH server by default (it may be booting). */
const DEFAULT_WAIT_MS = 120_000;

let open = 0;

type TermFrame = Extract<ClientFrame, { t: 'term.open' | 'term.in' | 'term.resize' | 'term.close' }>;

interface Term {
  sid: number;
  pty?: IPty;
  serial?: SerialSession;
  abort: AbortController;
  ended: boolean;
  cancelDrain?: () => void;
}

export interface TerminalIo {
  send(frame: ServerFrame): void;
  /** Output not yet read by the client. */
  buffered(): number;
  whenDrained(fn: () => void): () => void;
  highWater: number;
  holdInput(why: string): void;
  releaseInput(why: string): void;
}

export class Terminals {
  private readonly terms = new Map<number, Term>();

  constructor(
    private readonly core: Core,
    private readonly io: TerminalIo,
  ) {}

  get count(): number {
    return this.terms.size;
  }

  handle(frame: TermFrame): void {
    switch (frame.t) {
      case 'term.open':
        void this.open(frame);
        return;
      case 'term.in': {
        const t = this.terms.get(frame.sid);
        if (!t || t.ended) return;
        const data = Buffer.from(frame.data, 'base64');
        if (t.pty) {
          if (pendingInput(t.pty) > MAX_PENDING_INPUT) return this.end(t, { error: toRpcError(new VmdeskError(ErrorCode.busy, 'the terminal is not reading its input; closed')) });
          t.pty.write(data as unknown as string);
        } else if (t.serial) {
          const why = `term-in:${t.sid}`;
          if (!t.serial.write(data)) {
            this.io.holdInput(why);
            t.serial.onceDrain(() => this.io.releaseInput(why));
          }
        }
        return;
      }
      case 'term.resize': {
        const t = this.terms.get(frame.sid);
        try {
          t?.pty?.resize(frame.cols, frame.rows);
        } catch {
          /* the pty has just ended */
        }
        return;
      }
      case 'term.close': {
        const t = this.terms.get(frame.sid);
        if (t) this.end(t, {}, false);
        return;
      }
    }
  }

  closeAll(): void {
    for (const t of [...this.terms.values()]) this.end(t, {}, false);
  }

  private fail(sid: number, e: unknown): void {
    this.io.send({ t: 'term.closed', sid, error: toRpcError(e) });
  }

  private end(t: Term, how: { exitCode?: number | null; signal?: number | null; error?: RpcError }, tell = true): void {
    if (t.ended) return;
    t.ended = true;
    open--;
    this.terms.delete(t.sid);
    t.abort.abort();
    t.cancelDrain?.();
    this.io.releaseInput(`term-in:${t.sid}`);
    try {
      t.pty?.kill('SIGHUP');
    } catch {
      /* already gone */
    }
    t.serial?.close();
    if (tell) this.io.send({ t: 'term.closed', sid: t.sid, ...how });
  }

  /** Output to the client; a pty stops being read while the client is behind (its process then blocks). */
  private output(t: Term, chunk: Buffer): void {
    if (t.ended) return;
    this.io.send({ t: 'term.data', sid: t.sid, data: chunk.toString('base64') });
    if (t.pty && !t.cancelDrain && this.io.buffered() > this.io.highWater) {
      t.pty.pause();
      t.cancelDrain = this.io.whenDrained(() => {
        t.cancelDrain = undefined;
        if (!t.ended) t.pty?.resume();
      });
    }
  }

  private async open(f: Extract<TermFrame, { t: 'term.open' }>): Promise<void> {
    if (this.terms.has(f.sid)) return this.fail(f.sid, new VmdeskError(ErrorCode.busy, `terminal ${f.sid} is already open`));
    if (this.terms.size >= MAX_TERMINALS_PER_CONNECTION) return this.fail(f.sid, new VmdeskError(ErrorCode.busy, `too many terminals on this connection (limit ${MAX_TERMINALS_PER_CONNECTION})`));
    if (open >= MAX_TERMINALS) return this.fail(f.sid, new VmdeskError(ErrorCode.busy, `too many terminals open in VMDesk (limit ${MAX_TERMINALS})`));
    const t: Term = { sid: f.sid, abort: new AbortController(), ended: false };
    this.terms.set(f.sid, t);
    open++;
    try {
      const info = await this.core.get(f.vm);
      if (!['running', 'paused', 'starting'].includes(info.state)) throw new VmdeskError(ErrorCode.state, `"${info.name}" is not running (it is ${info.state})`);
      const via = f.via ?? 'auto';
      const target = via === 'serial' ? undefined : await sshTarget(this.core, info.id);
      if (via === 'ssh' && !target) throw new VmdeskError(ErrorCode.invalid, `"${info.name}" was not made from a cloud image with an SSH key and forward; use its serial console`);
      if (!target) {
        if (f.command) throw new VmdeskError(ErrorCode.invalid, `"${info.name}" has no SSH access, and a command cannot be run through the serial console`);
        return this.openSerial(t, info.id, info.name);
      }
      const ssh = findOnPath('ssh');
      if (!ssh) throw new VmdeskError(ErrorCode.host, 'ssh is not installed (Debian package openssh-client)');
      this.io.send({ t: 'term.status', sid: f.sid, message: `waiting for the SSH server of "${info.name}" on ${target.host}:${target.port}` });
      await waitForSsh(target, f.waitMs ?? DEFAULT_WAIT_MS, t.abort.signal, async () => {
        const now = await this.core.get(info.id);
        if (!['running', 'paused', 'starting'].includes(now.state)) throw new VmdeskError(ErrorCode.state, `"${info.name}" stopped`);
      });
      if (t.ended) return;
      const pty = await import('node-pty');
      const p = pty.spawn(ssh, sshArgs(target, info.id, f.command), {
        name: 'xterm-256color',
        cols: f.cols ?? 80,
        rows: f.rows ?? 24,
        cwd: os.homedir(),
        env: sshEnv(),
        encoding: null,
      } as Parameters<typeof pty.spawn>[2]);
      t.pty = p;
      this.io.send({ t: 'term.opened', sid: f.sid, via: 'ssh', detail: `${target.user}@${target.host}:${target.port}` });
      p.onData((d) => this.output(t, typeof d === 'string' ? Buffer.from(d) : (d as unknown as Buffer)));
      p.onExit(({ exitCode, signal }) => this.end(t, { exitCode, signal: signal || null }));
    } catch (e) {
      if (!t.ended) {
        t.ended = true;
        open--;
        this.terms.delete(f.sid);
        this.fail(f.sid, t.abort.signal.aborted && !(e instanceof VmdeskError) ? new VmdeskError(ErrorCode.cancelled, 'closed') : e);
      }
    }
  }

  private openSerial(t: Term, id: string, name: string): void {
    const s = this.core.openSerial(id);
    t.serial = s;
    this.io.send({ t: 'term.opened', sid: t.sid, via: 'serial', detail: `the serial console of "${name}"` });
    if (s.history.length) this.output(t, s.history);
    s.onData((c) => this.output(t, c));
    s.onClose(() => this.end(t, { exitCode: null }));
  }
}

/** What node-pty queued for the pty that the process behind it has not read (its internal write queue). */
function pendingInput(p: IPty): number {
  const q = (p as unknown as { _writeStream?: { _writeQueue?: { buffer: Buffer; offset: number }[] } })._writeStream?._writeQueue;
  return Array.isArray(q) ? q.reduce((n, e) => n + (e.buffer.length - e.offset), 0) : 0;
}

/** ssh(1) with nothing of the user's (config, agent, known hosts): only the VM's key, its own known_hosts, 127.0.0.1. */
export function sshArgs(t: SshTarget, vmId: string, command?: string[]): string[] {
  const o = (s: string) => ['-o', s];
  return [
    '-F', '/dev/null',
    '-i', t.keyFile,
    '-p', String(t.port),
    ...o('IdentitiesOnly=yes'),
    ...o('IdentityAgent=none'),
    ...o(`UserKnownHostsFile=${t.knownHosts}`),
    ...o('GlobalKnownHostsFile=/dev/null'),
    // The guest's host key is learnt on first contact (its own known_hosts in the bundle), then held to.
    ...o('StrictHostKeyChecking=accept-new'),
    ...o(`HostKeyAlias=vmdesk-${vmId}`),
    ...o('BatchMode=yes'),
    ...o('PasswordAuthentication=no'),
    ...o('KbdInteractiveAuthentication=no'),
    ...o('ConnectTimeout=15'),
    ...o('ServerAliveInterval=15'),
    ...o('LogLevel=ERROR'),
    '-t',
    `${t.user}@${t.host}`,
    ...(command ? ['--', ...command] : []),
  ];
}

function sshEnv(): Record<string, string> {
  const env: Record<string, string> = { TERM: 'xterm-256color', PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: os.homedir(), LANG: process.env.LANG ?? 'C.UTF-8' };
  for (const k of ['USER', 'LOGNAME']) if (process.env[k]) env[k] = process.env[k]!;
  return env;
}

/** Resolves once something on target.port speaks SSH (answers with its identification), polling while the guest boots. */
async function waitForSsh(target: SshTarget, waitMs: number, signal: AbortSignal, stillRunning: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    if (signal.aborted) throw new VmdeskError(ErrorCode.cancelled, 'closed');
    if (await banner(target, 10_000)) return;
    await stillRunning();
    if (Date.now() > deadline) throw new VmdeskError(ErrorCode.timeout, `the guest's SSH server did not answer on ${target.host}:${target.port} within ${Math.round(waitMs / 1000)} s (is it still booting? does the image run cloud-init and sshd?)`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

function banner(target: SshTarget, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(target.port, target.host);
    let got = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.setEncoding('latin1');
    // Some servers (dropbear) speak only after the client's identification: send ours first (RFC 4253 4.2).
    sock.on('connect', () => sock.write('SSH-2.0-VMDesk_probe\r\n'));
    sock.on('data', (d: string) => {
      got += d;
      if (got.includes('\n') || got.length > 255) done(got.startsWith('SSH-'));
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}
