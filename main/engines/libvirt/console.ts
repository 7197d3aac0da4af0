// A libvirt guest's serial console as VMDesk's SerialPort: `virsh console` under a pty (it insists on a
// terminal), its own banner cut off, the bytes after it streamed to the core's serial hub and appended to the
// bundle's logs/serial.log, so the local and remote consoles look the same to every client. The console
// reconnects when virsh lets go while the guest runs (a snapshot revert starts a new QEMU on the host).
import { createWriteStream, mkdirSync, statSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import type { IPty } from 'node-pty';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { SerialPort } from '../engine.js';
import { virshPath, virshMessage } from './virsh.js';

/** The end of virsh's banner ("Connected to domain 'x'", "Escape character is ^] (Ctrl + ])"). */
const BANNER_END = Buffer.from('Escape character is ^] (Ctrl + ])\r\n');
/** Output before the banner past which it is taken as the guest's (another virsh's wording). */
const BANNER_MAX = 8 * 1024;
/** virsh console's escape key: a guest byte equal to it would detach the console, so input never carries it. */
const ESCAPE = 0x1d;
/** Input held while the console (re)connects, past which it is dropped. */
const PENDING_MAX = 1024 * 1024;

export class LibvirtConsole implements SerialPort {
  readonly logFile: string;
  readonly logStart: number;
  private pty: IPty | undefined;
  private attached = false;
  private closed = false;
  private readonly listeners = new Set<(chunk: Buffer) => void>();
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private log: WriteStream;
  private reconnecting: NodeJS.Timeout | undefined;
  private failures = 0;
  /** Whether the guest still runs: a console that drops is connected again only while it does. */
  wanted: () => boolean = () => true;

  constructor(
    private readonly uri: string,
    private readonly domain: string,
    bundleDir: string,
  ) {
    this.logFile = path.join(bundleDir, 'logs', 'serial.log');
    mkdirSync(path.dirname(this.logFile), { recursive: true, mode: 0o700 });
    let size = 0;
    try {
      size = statSync(this.logFile).size;
    } catch {
      size = 0;
    }
    this.logStart = size;
    this.log = createWriteStream(this.logFile, { flags: 'a', mode: 0o600 });
    this.log.on('error', () => undefined);
  }

  /** Connects `virsh console`; resolves once its banner has passed, so output from here on is the guest's. */
  async connect(timeoutMs = 15_000): Promise<void> {
    if (this.closed) return;
    const pty = await import('node-pty');
    await new Promise<void>((resolve, reject) => {
      const p = pty.spawn(virshPath(), ['-c', this.uri, 'console', '--force', this.domain], {
        name: 'vt100',
        cols: 200,
        rows: 50,
        env: { ...process.env, LC_ALL: 'C', LANG: 'C' } as Record<string, string>,
        encoding: null,
      } as Parameters<typeof pty.spawn>[2]);
      this.pty = p;
      this.attached = false;
      let head = Buffer.alloc(0);
      let settled = false;
      const done = (e?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (e) reject(e);
        else resolve();
      };
      const timer = setTimeout(() => {
        p.kill('SIGKILL');
        done(new VmdeskError(ErrorCode.timeout, `the serial console of "${this.domain}" did not connect within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      p.onData((d: string | Buffer) => {
        const chunk = typeof d === 'string' ? Buffer.from(d, 'utf8') : d;
        if (this.pty !== p) return;
        if (this.attached) return this.emit(chunk);
        head = Buffer.concat([head, chunk]);
        const at = head.indexOf(BANNER_END);
        if (at < 0 && head.length < BANNER_MAX) return;
        this.attached = true;
        this.failures = 0;
        done();
        const rest = at < 0 ? head : head.subarray(at + BANNER_END.length);
        if (rest.length) this.emit(rest);
        this.flush();
      });
      p.onExit(() => {
        if (this.pty !== p) return;
        this.pty = undefined;
        const was = this.attached;
        this.attached = false;
        if (!was) done(new VmdeskError(ErrorCode.engine, `the serial console of "${this.domain}" could not be opened: ${virshMessage(head.toString('utf8'))}`));
        this.scheduleReconnect();
      });
    });
  }

  /** virsh let go (the guest's QEMU was replaced, the connection dropped): connect again while the guest runs. */
  private scheduleReconnect(): void {
    if (this.closed || this.reconnecting || !this.wanted()) return;
    const delay = Math.min(250 * 2 ** this.failures, 10_000);
    this.failures++;
    this.reconnecting = setTimeout(() => {
      this.reconnecting = undefined;
      if (this.closed || !this.wanted()) return;
      this.connect().catch(() => this.scheduleReconnect());
    }, delay);
  }

  /** Drops the current console so it reconnects at once (after a snapshot revert replaced the guest's QEMU). */
  reconnect(): void {
    this.failures = 0;
    const p = this.pty;
    if (p) p.kill('SIGKILL');
    else this.scheduleReconnect();
  }

  private emit(chunk: Buffer): void {
    this.log.write(chunk);
    for (const fn of this.listeners) fn(chunk);
  }

  private flush(): void {
    const p = this.pty;
    if (!p || !this.attached) return;
    for (const b of this.pending.splice(0)) p.write(b);
    this.pendingBytes = 0;
  }

  write(data: Buffer): boolean {
    if (this.closed) return true;
    const clean = data.includes(ESCAPE) ? Buffer.from(data.filter((b) => b !== ESCAPE)) : data;
    if (!clean.length) return true;
    if (this.pty && this.attached) {
      this.pty.write(clean);
      return true;
    }
    if (this.pendingBytes + clean.length <= PENDING_MAX) {
      this.pending.push(clean);
      this.pendingBytes += clean.length;
    }
    return true;
  }

  onceDrain(fn: () => void): void {
    setImmediate(fn);
  }

  onData(fn: (chunk: Buffer) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reconnecting) clearTimeout(this.reconnecting);
    this.pty?.kill('SIGKILL');
    this.pty = undefined;
    this.listeners.clear();
    this.log.end();
  }
}
