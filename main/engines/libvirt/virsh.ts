// Talking to libvirt through virsh: one-shot runs (bounded time and output, cancellable, the whole process
// group killed so an ssh transport goes too) and a persistent interactive virsh per connection, so a query
// costs a round trip on an open connection instead of a process and a (possibly ssh) handshake.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { findOnPath } from '../../platform/host-tools.js';

/** Bytes of output one virsh command may produce (domain XML, lists): far past any real answer. */
export const VIRSH_OUTPUT_MAX = 8 * 1024 * 1024;

/** How long reaching a host may take before VMDesk gives up on it (VMDESK_LIBVIRT_CONNECT_TIMEOUT_MS). */
export function connectTimeoutMs(): number {
  const v = Number(process.env.VMDESK_LIBVIRT_CONNECT_TIMEOUT_MS);
  return Number.isFinite(v) && v >= 100 && v <= 600_000 ? v : 8000;
}

/** Where virsh is, or EHOST saying how to get it. */
export function virshPath(): string {
  const p = findOnPath('virsh');
  if (!p) throw new VmdeskError(ErrorCode.host, 'virsh is not installed (it talks to libvirt hosts); install it: sudo apt install libvirt-clients');
  return p;
}

/** The environment virsh runs with: C locale, so its messages are the ones this module reads. */
function virshEnv(): NodeJS.ProcessEnv {
  return { ...process.env, LC_ALL: 'C', LANG: 'C', VIRSH_DEFAULT_CONNECT_URI: undefined, LIBVIRT_DEFAULT_URI: undefined };
}

/**
 * One argument for virsh's command parser (interactive mode): single-quoted. Quotes, backslashes and control
 * characters are refused, not escaped: nothing VMDesk sends needs them (names are checked, paths are ours).
 */
export function virshArg(s: string): string {
  if (/['\\\u0000-\u001f\u007f]/.test(s)) throw new VmdeskError(ErrorCode.invalid, `"${s.slice(0, 60)}" cannot be passed to virsh (quotes, backslashes and control characters are refused)`);
  return `'${s}'`;
}

/** What virsh said on stderr, as a sentence: its "error:" lines without the prefix, the generic first one dropped. */
export function virshMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => l.replace(/^error:\s*/, ''));
  const useful = lines.filter((l) => !/^failed to connect to the hypervisor$/.test(l) && !/^Authorization not available/.test(l));
  const text = (useful.length ? useful : lines).join('; ');
  return text.length > 600 ? `${text.slice(0, 597)}...` : text || 'virsh failed without saying why';
}

/** A failed virsh command: its stderr, classified. */
export class VirshError extends Error {
  constructor(
    readonly stderr: string,
    readonly kind: 'connect' | 'timeout' | 'not-found' | 'state' | 'exists' | 'cancelled' | 'other',
  ) {
    super(virshMessage(stderr));
  }
}

export function classify(stderr: string): VirshError['kind'] {
  if (/failed to connect to the hypervisor|Cannot recv data|Failed to connect socket|unable to connect to server|End of file while reading data|client socket is closed|Disconnected from .* due to/i.test(stderr)) return 'connect';
  if (/Domain not found|failed to get domain|Storage volume not found|failed to get vol|Storage pool not found|failed to get pool|Domain snapshot not found|no domain with matching/i.test(stderr)) return 'not-found';
  if (/domain is not running|domain is already running|Requested operation is not valid/i.test(stderr)) return 'state';
  if (/already exists/i.test(stderr)) return 'exists';
  return 'other';
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

export interface RunOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /** stderr as it arrives (virsh migrate --verbose reports progress there). */
  onStderr?: (chunk: string) => void;
  /** Fed to virsh's stdin (vol-upload from /dev/stdin), then closed. */
  input?: NodeJS.ReadableStream;
  /** Where stdout goes instead of being collected (vol-download to /dev/stdout). */
  output?: NodeJS.WritableStream;
}

/** Runs `virsh -c URI ARGS…` once; rejects with VirshError (stderr classified) on failure, timeout or cancel. */
export function runVirsh(uri: string, args: string[], opts: RunOptions): Promise<string> {
  const bin = virshPath();
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) return reject(new VirshError('cancelled', 'cancelled'));
    // Its own process group: an ssh transport (virsh's child) goes when virsh is killed. Input goes through
    // cat: Node's stdin pipes are socket pairs, which virsh cannot open as /dev/stdin; cat's pipe it can.
    const child = opts.input
      ? spawn('/bin/sh', ['-c', 'cat | exec "$0" "$@"', bin, '-c', uri, ...args], { env: virshEnv(), detached: true, stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn(bin, ['-c', uri, ...args], { env: virshEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let settled = false;
    let failure: VirshError | undefined;
    const fail = (e: VirshError) => {
      if (failure) return;
      failure = e;
      killGroup(child);
    };
    const timer = setTimeout(() => fail(new VirshError(`did not answer within ${Math.round(opts.timeoutMs / 1000)} s`, 'timeout')), opts.timeoutMs);
    const onAbort = () => fail(new VirshError('cancelled', 'cancelled'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.output) child.stdout!.pipe(opts.output, { end: false });
    else
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString('utf8');
        if (out.length > VIRSH_OUTPUT_MAX) fail(new VirshError(`virsh ${args[0]} printed more than ${VIRSH_OUTPUT_MAX} bytes`, 'other'));
      });
    child.stderr!.on('data', (d: Buffer) => {
      const s = d.toString('utf8');
      if (err.length < 64 * 1024) err += s;
      opts.onStderr?.(s);
    });
    if (opts.input && child.stdin) {
      opts.input.on('error', (e: Error) => fail(new VirshError(`reading the data to send failed: ${e.message}`, 'other')));
      child.stdin.on('error', () => undefined);
      opts.input.pipe(child.stdin);
    }
    child.on('error', (e) => fail(new VirshError(`virsh could not run: ${e.message}`, 'other')));
    child.on('close', (code) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (failure) return reject(failure);
      if (code !== 0) return reject(new VirshError(err || `virsh ${args[0]} exited with ${code}`, classify(err)));
      resolve(out);
    });
  });
}

interface Pending {
  token: string;
  line: string;
  resolve: (out: string) => void;
  reject: (e: VirshError) => void;
  timer: NodeJS.Timeout;
}

/**
 * An interactive `virsh -c URI` kept open: commands are written one at a time, each followed by markers on
 * stdout and stderr (`echo VMD\ESK…`: the backslash keeps the echoed command line from matching its own
 * output), and its answer is what came before the markers. The prompt lines virsh echoes are removed.
 */
export class VirshSession {
  private out = '';
  private err = '';
  private pending: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly salt = randomBytes(6).toString('hex');
  private seq = 0;
  private exitError: VirshError | undefined;

  private constructor(private readonly child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => {
      this.out += d.toString('utf8');
      this.check();
    });
    child.stderr!.on('data', (d: Buffer) => {
      this.err += d.toString('utf8');
      this.check();
    });
    child.stdin!.on('error', () => undefined);
    child.on('close', () => {
      this.closed = true;
      const why = this.exitError ?? new VirshError(this.err.trim() || 'the connection to the host closed', classify(this.err) === 'other' ? 'connect' : classify(this.err));
      this.exitError = why;
      if (this.pending) {
        clearTimeout(this.pending.timer);
        this.pending.reject(why);
        this.pending = undefined;
      }
    });
  }

  /** Opens the session and proves the connection with one command, all within timeoutMs. */
  static async open(uri: string, timeoutMs: number): Promise<VirshSession> {
    // -k/-K: libvirt keepalives, so a host that went away is noticed in seconds rather than never.
    const child = spawn(virshPath(), ['-q', '-k', '5', '-K', '3', '-c', uri], { env: virshEnv(), detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    const s = new VirshSession(child);
    child.on('error', (e) => {
      s.exitError = new VirshError(`virsh could not run: ${e.message}`, 'other');
    });
    try {
      await s.run(['uri'], timeoutMs);
    } catch (e) {
      s.close();
      throw e;
    }
    return s;
  }

  get alive(): boolean {
    return !this.closed;
  }

  /** Runs one command; answers are serialised (virsh reads one line at a time). */
  run(args: string[], timeoutMs: number): Promise<string> {
    const line = args.map((a, i) => (i === 0 ? a : a.startsWith('--') && /^--[a-z-]+$/.test(a) ? a : virshArg(a))).join(' ');
    const next = this.queue.then(() => this.exec(line, timeoutMs));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private exec(line: string, timeoutMs: number): Promise<string> {
    if (this.closed) return Promise.reject(this.exitError ?? new VirshError('the connection to the host closed', 'connect'));
    return new Promise((resolve, reject) => {
      const token = `ESK_${this.salt}_${++this.seq}`;
      const timer = setTimeout(() => {
        this.exitError = new VirshError(`did not answer within ${Math.round(timeoutMs / 1000)} s`, 'timeout');
        this.close();
      }, timeoutMs);
      this.pending = { token, line, resolve, reject, timer };
      this.child.stdin!.write(`${line}\necho --err VMD\\${token}\necho VMD\\${token}\n`);
    });
  }

  private check(): void {
    const p = this.pending;
    if (!p) return;
    if (this.out.length > VIRSH_OUTPUT_MAX + 4096) {
      this.exitError = new VirshError(`virsh printed more than ${VIRSH_OUTPUT_MAX} bytes for one command`, 'other');
      this.close();
      return;
    }
    const mark = `VMDESK_${p.token.slice(4)}`;
    const errMark = `error: ${mark}\n`;
    const outAt = this.out.indexOf(mark);
    const errAt = this.err.indexOf(errMark);
    if (outAt < 0 || errAt < 0) return;
    let out = this.out.slice(0, outAt);
    const err = this.err.slice(0, errAt);
    this.out = this.out.slice(outAt + mark.length);
    this.err = this.err.slice(errAt + errMark.length);
    // The prompt virsh prints and the command line readline echoes (wrapped with \r past 80 columns): the
    // first line when it is our command; the marker commands' echoes at the end.
    const cmd = p.line.split(' ')[0]!;
    if (out.startsWith(`virsh # ${cmd}`)) {
      const nl = out.indexOf('\n');
      out = nl < 0 ? '' : out.slice(nl + 1);
    }
    const tail = out.lastIndexOf('virsh # echo --err VMD');
    if (tail >= 0) out = out.slice(0, tail);
    out = out.replace(/^(virsh # )+/, '').replace(/(virsh # )+$/, '');
    clearTimeout(p.timer);
    this.pending = undefined;
    if (/^error:/m.test(err)) p.reject(new VirshError(err, classify(err)));
    else p.resolve(out);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    killGroup(this.child);
    if (this.pending) {
      clearTimeout(this.pending.timer);
      this.pending.reject(this.exitError ?? new VirshError('the session was closed', 'connect'));
      this.pending = undefined;
    }
  }
}
