// One connection per libvirt host: a persistent virsh session for queries and quick commands, one-shot virsh
// runs for long work (snapshots, copies, migration), and the host's domain events (`virsh event --loop`)
// fanned out to the runtimes that watch a domain. Errors carry the host's name; a host that cannot be reached
// fails fast (bounded connect time, and the failure is remembered for a few seconds).
import { spawn, type ChildProcess } from 'node:child_process';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { connectUri, parseHostUri } from '../../api/host-uri.js';
import type { HostTarget } from '../engine.js';
import { connectTimeoutMs, runVirsh, virshPath, VirshError, VirshSession, type RunOptions } from './virsh.js';

/** A lifecycle (or other) event of a domain, as `virsh event` prints it. */
export interface DomainEvent {
  domain: string;
  /** lifecycle, reboot, … */
  type: string;
  /** lifecycle: Started, Suspended, Resumed, Stopped, Shutdown, Crashed, Defined, Undefined, PMSuspended. */
  event: string;
  /** lifecycle: Booted, Paused, Destroyed, Shutdown, Snapshot, Migrated, … */
  detail: string;
}

const EVENT_LINE = /^event '([\w-]+)' for domain '(.*)'(?:: (.*))?$/;

/** Parses one line of `virsh event --all --loop`; undefined for anything else. */
export function parseEventLine(line: string): DomainEvent | undefined {
  const m = EVENT_LINE.exec(line.trim());
  if (!m) return undefined;
  const rest = (m[3] ?? '').trim();
  const sp = rest.indexOf(' ');
  return { type: m[1]!, domain: m[2]!, event: sp < 0 ? rest : rest.slice(0, sp), detail: sp < 0 ? '' : rest.slice(sp + 1) };
}

/** How long a failed connect is remembered: later calls fail at once instead of waiting again. */
const FAILURE_MEMORY_MS = 5000;
/** A query's own limit once connected (a domain start may spend seconds probing QEMU the first time). */
const QUERY_TIMEOUT_MS = 120_000;

export class LibvirtConnection {
  private static readonly all = new Map<string, LibvirtConnection>();

  /** The connection to a host (one per URI), opened on first use. */
  static for(host: HostTarget): LibvirtConnection {
    let c = LibvirtConnection.all.get(host.uri);
    if (!c) {
      c = new LibvirtConnection(host);
      LibvirtConnection.all.set(host.uri, c);
    }
    c.host = host;
    return c;
  }

  /** Closes every connection (daemon shutdown, tests). */
  static closeAll(): void {
    for (const c of LibvirtConnection.all.values()) c.close();
    LibvirtConnection.all.clear();
  }

  readonly uri: string;
  private session: Promise<VirshSession> | undefined;
  private failure: { error: VmdeskError; at: number } | undefined;
  private readonly watchers = new Map<string, Set<(ev: DomainEvent) => void>>();
  private readonly resyncs = new Set<() => void>();
  private events: ChildProcess | undefined;
  private eventRestart: NodeJS.Timeout | undefined;
  private eventBackoff = 500;

  private constructor(public host: HostTarget) {
    this.uri = connectUri(parseHostUri(host.uri));
  }

  /** The host's files (disks, sockets) are on this machine. */
  get local(): boolean {
    return parseHostUri(this.host.uri).local;
  }

  /** "host "lab" (qemu+ssh://…)" for messages. */
  get label(): string {
    return `host "${this.host.name}" (${this.host.uri})`;
  }

  /** A virsh failure as a VmdeskError that names this host. */
  error(e: unknown, what?: string): VmdeskError {
    if (e instanceof VmdeskError) return e;
    if (!(e instanceof VirshError)) return new VmdeskError(ErrorCode.engine, `${what ? `${what}: ` : ''}${(e as Error)?.message ?? String(e)}`);
    const msg = e.message;
    const pre = what ? `${what}: ` : '';
    switch (e.kind) {
      case 'connect':
        return new VmdeskError(ErrorCode.host, `${pre}cannot reach ${this.label}: ${msg}`);
      case 'timeout':
        return new VmdeskError(ErrorCode.timeout, `${pre}${this.label} ${msg}; is it up and reachable?`);
      case 'not-found':
        return new VmdeskError(ErrorCode.notFound, `${pre}${msg} (on ${this.label})`);
      case 'state':
        return new VmdeskError(ErrorCode.state, `${pre}${msg} (on ${this.label})`);
      case 'exists':
        return new VmdeskError(ErrorCode.exists, `${pre}${msg} (on ${this.label})`);
      case 'cancelled':
        return new VmdeskError(ErrorCode.cancelled, `${pre}cancelled`);
      default:
        return new VmdeskError(ErrorCode.engine, `${pre}libvirt on ${this.label}: ${msg}`);
    }
  }

  private open(): Promise<VirshSession> {
    const remembered = this.failure && Date.now() - this.failure.at < FAILURE_MEMORY_MS ? this.failure.error : undefined;
    if (remembered) return Promise.reject(remembered);
    if (!this.session) {
      const s = VirshSession.open(this.uri, connectTimeoutMs()).catch((e: unknown) => {
        const err = e instanceof VirshError && e.kind === 'timeout' ? new VmdeskError(ErrorCode.timeout, `${this.label} did not answer within ${Math.round(connectTimeoutMs() / 1000)} s; is it up and reachable?`) : this.error(e);
        this.failure = { error: err, at: Date.now() };
        this.session = undefined;
        throw err;
      });
      this.session = s;
    }
    return this.session;
  }

  /**
   * One command on the persistent session. A broken or timed-out session is dropped, so the next call
   * connects again.
   */
  async query(args: string[], opts: { timeoutMs?: number; what?: string } = {}): Promise<string> {
    const s = await this.open();
    if (!s.alive) {
      this.session = undefined;
      return this.query(args, opts);
    }
    try {
      return await s.run(args, opts.timeoutMs ?? QUERY_TIMEOUT_MS);
    } catch (e) {
      if (!s.alive || (e instanceof VirshError && (e.kind === 'connect' || e.kind === 'timeout'))) {
        s.close();
        if (this.session) this.session = undefined;
      }
      throw this.error(e, opts.what);
    }
  }

  /** A one-shot virsh for long work (its own connection): bounded, cancellable. */
  async once(args: string[], opts: Partial<RunOptions> & { what?: string } = {}): Promise<string> {
    const remembered = this.failure && Date.now() - this.failure.at < FAILURE_MEMORY_MS ? this.failure.error : undefined;
    if (remembered) throw remembered;
    try {
      return await runVirsh(this.uri, args, { timeoutMs: opts.timeoutMs ?? 30 * 60_000, ...opts });
    } catch (e) {
      throw this.error(e, opts.what);
    }
  }

  // ---- domain events ---------------------------------------------------------------------------------------

  /** Calls fn with every event of this domain; the host's event stream runs while anyone watches. */
  watch(domain: string, fn: (ev: DomainEvent) => void, resync: () => void): () => void {
    let set = this.watchers.get(domain);
    if (!set) this.watchers.set(domain, (set = new Set()));
    set.add(fn);
    this.resyncs.add(resync);
    this.startEvents();
    return () => {
      set!.delete(fn);
      if (!set!.size) this.watchers.delete(domain);
      this.resyncs.delete(resync);
      if (!this.watchers.size) this.stopEvents();
    };
  }

  /** Resolves once the event stream is connected (so nothing that follows is missed), or after a bounded wait. */
  eventsReady(): Promise<void> {
    return this.ready ?? Promise.resolve();
  }

  private ready: Promise<void> | undefined;

  private startEvents(): void {
    if (this.events || this.eventRestart) return;
    let bin: string;
    try {
      bin = virshPath();
    } catch {
      return;
    }
    const child = spawn(bin, ['-k', '5', '-K', '3', '-c', this.uri, 'event', '--all', '--loop'], { env: { ...process.env, LC_ALL: 'C' }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    this.events = child;
    let buf = '';
    let resolveReady!: () => void;
    this.ready = new Promise<void>((r) => (resolveReady = r));
    // virsh prints nothing once registered; a short grace lets it connect before a start that must be seen.
    const readyTimer = setTimeout(() => resolveReady(), 300);
    const started = Date.now();
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      if (buf.length > 1024 * 1024) buf = buf.slice(-4096);
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const ev = parseEventLine(line);
        if (!ev) continue;
        for (const fn of this.watchers.get(ev.domain) ?? []) fn(ev);
      }
    });
    child.stderr!.on('data', () => undefined);
    child.on('error', () => undefined);
    child.on('close', () => {
      clearTimeout(readyTimer);
      resolveReady();
      if (this.events !== child) return;
      this.events = undefined;
      if (!this.watchers.size) return;
      // The stream broke (host restarted, network gone): connect again, and let runtimes check what they missed.
      this.eventBackoff = Date.now() - started > 10_000 ? 500 : Math.min(this.eventBackoff * 2, 15_000);
      this.eventRestart = setTimeout(() => {
        this.eventRestart = undefined;
        this.startEvents();
        for (const r of this.resyncs) r();
      }, this.eventBackoff);
    });
  }

  private stopEvents(): void {
    if (this.eventRestart) clearTimeout(this.eventRestart);
    this.eventRestart = undefined;
    const child = this.events;
    this.events = undefined;
    if (child?.pid) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        child.kill('SIGTERM');
      }
    }
  }

  close(): void {
    this.watchers.clear();
    this.resyncs.clear();
    this.stopEvents();
    void this.session?.then((s) => s.close(), () => undefined);
    this.session = undefined;
  }
}
