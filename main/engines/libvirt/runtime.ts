// A guest running on a libvirt host as the daemon holds it. Its state follows the host's domain events
// (`virsh event --loop`), checked against `domstate` where an event alone could mislead (a snapshot revert
// stops one QEMU and starts another) and polled slowly in case the event stream was down. Its serial console
// is `virsh console` (console.ts). The end is classified from libvirt's reason and VMDesk's own intent, and
// written to logs/last-exit.json like every engine's.
import { mkdirSync, promises as fs, rmSync } from 'node:fs';
import path from 'node:path';
import type { AccelChoice, ExitRecord, VmState } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { writeFileAtomicSync, writeJsonAtomic } from '../../platform/atomic.js';
import type { EngineContext, HostTarget, VmRuntime } from '../engine.js';
import type { DomainEvent, LibvirtConnection } from './connection.js';
import { LibvirtConsole } from './console.js';
import { parseDomainXml } from './domain-xml.js';
import { screenshotToPng } from './ppm.js';

/** What a daemon leaves in the VM's runtime dir so the next one finds the domain again. */
export interface LibvirtRecord {
  uri: string;
  host: string;
  domain: string;
  uuid: string;
  startedAt: string;
  accel: AccelChoice;
}

export function recordFile(runtimeDir: string): string {
  return path.join(runtimeDir, 'libvirt.json');
}

export async function readRecord(runtimeDir: string): Promise<LibvirtRecord | undefined> {
  try {
    const text = await fs.readFile(recordFile(runtimeDir), 'utf8');
    if (text.length > 16 * 1024) return undefined;
    const r = JSON.parse(text) as LibvirtRecord;
    return typeof r.domain === 'string' && typeof r.uuid === 'string' && typeof r.uri === 'string' ? r : undefined;
  } catch {
    return undefined;
  }
}

/** A domain's state as `domstate --reason` prints it: "running (booted)", "shut off (destroyed)". */
export interface DomState {
  state: 'running' | 'paused' | 'shutoff' | 'crashed' | 'other';
  reason: string;
  text: string;
}

export function parseDomState(out: string): DomState {
  const text = out.trim().split('\n')[0]?.trim() ?? '';
  const m = /^([a-z ]+?)(?: \(([^)]*)\))?$/.exec(text);
  const word = m?.[1] ?? text;
  const state = word === 'running' || word === 'idle' || word === 'in shutdown' || word === 'blocked' ? 'running' : word === 'paused' || word === 'pmsuspended' ? 'paused' : word === 'shut off' ? 'shutoff' : word === 'crashed' ? 'crashed' : 'other';
  return { state, reason: m?.[2] ?? '', text };
}

export async function domState(conn: LibvirtConnection, domain: string): Promise<DomState> {
  return parseDomState(await conn.query(['domstate', domain, '--reason']));
}

const POLL_MS = 10_000;

export class LibvirtRuntime implements VmRuntime {
  readonly pid = 0;
  readonly serial: LibvirtConsole;
  readonly exited: Promise<ExitRecord>;
  state: VmState;
  private resolveExit!: (e: ExitRecord) => void;
  private readonly listeners = new Set<(s: VmState) => void>();
  private stopIntent: 'shutdown' | 'kill' | undefined;
  private forcedAfterMs: number | undefined;
  private shutdownBy: string | undefined;
  private ended = false;
  private detached = false;
  /** While VMDesk itself works on the domain (snapshots), the pauses and restarts it causes are no news. */
  private quiet = 0;
  private unwatch: () => void;
  private poll: NodeJS.Timeout;
  private vnc: string | undefined;

  constructor(
    private readonly conn: LibvirtConnection,
    private readonly ctx: EngineContext,
    readonly domain: string,
    readonly uuid: string,
    initial: 'running' | 'paused',
    readonly accel: AccelChoice,
    readonly startedAt: string,
    readonly adopted: boolean,
    readonly warnings: readonly string[],
  ) {
    this.state = initial;
    this.exited = new Promise((r) => (this.resolveExit = r));
    this.serial = new LibvirtConsole(conn.uri, uuid, ctx.bundleDir);
    this.serial.wanted = () => !this.ended && !this.detached;
    this.unwatch = conn.watch(domain, (ev) => this.onEvent(ev), () => void this.resync());
    this.poll = setInterval(() => void this.resync(), POLL_MS);
    this.poll.unref();
  }

  get host(): HostTarget {
    return this.conn.host;
  }

  /** The VNC unix socket: on this machine only (a remote host's socket is not reachable here). */
  get vncSocket(): string | undefined {
    return this.vnc;
  }

  /** Reads the live definition for what changes per QEMU process (the VNC socket's path). */
  async refreshLive(): Promise<void> {
    if (!this.conn.local) return;
    try {
      const s = parseDomainXml(await this.conn.query(['dumpxml', this.uuid]));
      this.vnc = s.vncSocket;
    } catch {
      /* keep what we had */
    }
  }

  onState(fn: (state: VmState) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private setState(s: VmState): void {
    if (this.ended || this.state === s) return;
    this.state = s;
    for (const fn of this.listeners) fn(s);
  }

  private onEvent(ev: DomainEvent): void {
    if (this.ended || ev.type !== 'lifecycle') return;
    if (this.quiet > 0) return;
    switch (ev.event) {
      case 'Started':
      case 'Resumed':
        this.setState('running');
        break;
      case 'Suspended':
        this.setState('paused');
        break;
      case 'Shutdown':
        // "Finished after guest request" / "after host request": who asked, for the exit record.
        this.shutdownBy = ev.detail;
        if (this.state !== 'paused') this.setState('stopping');
        break;
      case 'Stopped':
      case 'Crashed':
        void this.confirmEnd(ev.detail);
        break;
      default:
        break;
    }
  }

  /** A Stopped event is the end only if the domain is really off (a revert starts it again at once). */
  private async confirmEnd(detail: string): Promise<void> {
    let st: DomState | undefined;
    try {
      st = await domState(this.conn, this.uuid);
    } catch (e) {
      // Gone from the host altogether (undefined after it stopped) is an end too.
      if ((e as VmdeskError).code === ErrorCode.notFound) st = { state: 'shutoff', reason: detail.toLowerCase(), text: 'undefined' };
      else return;
    }
    if (st.state === 'running' || st.state === 'paused') {
      this.setState(st.state);
      this.serial.reconnect();
      void this.refreshLive();
      return;
    }
    this.finish(this.classify(detail || st.reason, st));
  }

  /** What the host says now; used after VMDesk's own work and when the event stream was down. */
  async resync(): Promise<void> {
    if (this.ended || this.detached || this.quiet > 0) return;
    let st: DomState;
    try {
      st = await domState(this.conn, this.uuid);
    } catch (e) {
      if ((e as VmdeskError).code !== ErrorCode.notFound) return;
      st = { state: 'shutoff', reason: 'undefined', text: 'no longer defined on the host' };
    }
    if (this.ended || this.quiet > 0) return;
    if (st.state === 'running' || st.state === 'paused') this.setState(st.state);
    else this.finish(this.classify(st.reason, st));
  }

  private classify(detail: string, st: DomState): Omit<ExitRecord, 'at' | 'logTail'> {
    const d = detail.toLowerCase();
    const where = `on ${this.conn.label}`;
    if (this.stopIntent === 'kill') return { reason: 'killed', detail: 'forced off' };
    if (this.stopIntent === 'shutdown') {
      if (this.forcedAfterMs !== undefined) return { reason: 'killed', detail: `the guest did not power off within ${this.forcedAfterMs} ms; forced off` };
      return { reason: 'shutdown', detail: 'ACPI power-down; guest shut down' };
    }
    if (st.state === 'crashed' || d.includes('crash') || d.includes('failed') || d.includes('panic')) return { reason: 'crashed', detail: `the guest crashed ${where} (${st.text || detail})` };
    if (d.includes('migrat')) return { reason: 'migrated', detail: `moved away from ${this.conn.label}` };
    if (d.includes('destroy')) return { reason: 'killed', detail: `powered off ${where} by another client (virsh destroy)` };
    if (d.includes('shutdown')) {
      const host = this.shutdownBy?.includes('host');
      return host ? { reason: 'shutdown', detail: `shut down ${where} by another client` } : { reason: 'guest-poweroff', detail: 'the guest powered off' };
    }
    return { reason: 'unknown', detail: `the domain stopped ${where} (${st.text || detail || 'no reason given'})` };
  }

  private finish(e: Omit<ExitRecord, 'at' | 'logTail'>): void {
    if (this.ended) return;
    this.ended = true;
    const exit: ExitRecord = { at: new Date().toISOString(), reason: e.reason, detail: e.detail, exitCode: null, signal: null, logTail: [] };
    try {
      mkdirSync(path.join(this.ctx.bundleDir, 'logs'), { recursive: true, mode: 0o700 });
      writeFileAtomicSync(path.join(this.ctx.bundleDir, 'logs', 'last-exit.json'), JSON.stringify(exit, null, 2) + '\n');
    } catch {
      /* the record in memory still goes out */
    }
    rmSync(recordFile(this.ctx.runtimeDir), { force: true });
    this.stopWatching();
    this.state = exit.reason === 'crashed' ? 'crashed' : 'stopped';
    this.resolveExit(exit);
  }

  private stopWatching(): void {
    clearInterval(this.poll);
    this.unwatch();
    this.serial.close();
  }

  /** Runs VMDesk's own work on the domain; its pauses and QEMU restarts are not reported, the outcome is. */
  async quietly<T>(fn: () => Promise<T>): Promise<T> {
    this.quiet++;
    try {
      return await fn();
    } finally {
      this.quiet--;
      if (this.quiet === 0) await this.resync();
    }
  }

  private async cmd(args: string[], what: string): Promise<void> {
    await this.conn.query(args, { what: `${what} "${this.ctx.config.name}"` });
  }

  async pause(): Promise<void> {
    await this.cmd(['suspend', this.uuid], 'pausing');
    this.setState('paused');
  }

  async resume(): Promise<void> {
    await this.cmd(['resume', this.uuid], 'resuming');
    this.setState('running');
  }

  async reset(): Promise<void> {
    await this.cmd(['reset', this.uuid], 'resetting');
  }

  async shutdown(timeoutMs: number): Promise<ExitRecord> {
    if (this.ended) return this.exited;
    this.stopIntent = 'shutdown';
    this.setState('stopping');
    try {
      await this.cmd(['shutdown', this.uuid, '--mode', 'acpi'], 'shutting down');
    } catch (e) {
      if ((e as VmdeskError).code !== ErrorCode.state) throw e;
    }
    let timer: NodeJS.Timeout | undefined;
    const forced = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
    const first = await Promise.race([this.exited, forced]);
    clearTimeout(timer);
    if (first === 'timeout') {
      this.forcedAfterMs = timeoutMs;
      await this.destroy();
    }
    return this.exited;
  }

  async kill(): Promise<ExitRecord> {
    if (this.ended) return this.exited;
    this.stopIntent = 'kill';
    await this.destroy();
    return this.exited;
  }

  private async destroy(): Promise<void> {
    try {
      await this.cmd(['destroy', this.uuid], 'powering off');
    } catch (e) {
      const code = (e as VmdeskError).code;
      if (code !== ErrorCode.state && code !== ErrorCode.notFound) throw e;
    }
    // The event follows at once; the host's word settles it if the stream is slow or down.
    const t = setTimeout(() => void this.resync(), 2000);
    await this.exited;
    clearTimeout(t);
  }

  async screenshot(): Promise<Buffer> {
    const file = path.join(this.ctx.runtimeDir, `screen-${process.pid}.img`);
    try {
      await this.conn.query(['screenshot', this.uuid, '--file', file], { what: `screenshot of "${this.ctx.config.name}"` });
      const st = await fs.stat(file);
      if (st.size > 16384 * 8192 * 3 + 64) throw new VmdeskError(ErrorCode.engine, 'the screenshot from libvirt is too large');
      return screenshotToPng(await fs.readFile(file));
    } finally {
      await fs.rm(file, { force: true });
    }
  }

  detach(): void {
    if (this.detached || this.ended) return;
    this.detached = true;
    this.stopWatching();
  }

  /** Records what the next daemon needs to find this domain again. */
  async writeRecord(): Promise<void> {
    const rec: LibvirtRecord = { uri: this.conn.host.uri, host: this.conn.host.name, domain: this.domain, uuid: this.uuid, startedAt: this.startedAt, accel: this.accel };
    await writeJsonAtomic(recordFile(this.ctx.runtimeDir), rec);
  }
}
