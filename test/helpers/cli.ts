// Runs the real `vmdesk` binary (bin/vmdesk.js over dist/) in a child process, for CLI tests.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { mkdtemp, readdir, stat } from 'node:fs/promises';
import os from 'node:os';

export const BIN = path.resolve('bin/vmdesk.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function vmdesk(home: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, '--home', home, ...args], { env: { ...process.env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`vmdesk ${args.join(' ')} timed out\n${stdout}\n${stderr}`));
    }, opts.timeoutMs ?? 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

export async function vmdeskJson<T = any>(home: string, args: string[]): Promise<T> {
  const r = await vmdesk(home, [...args, '--json']);
  if (r.code !== 0) throw new Error(`vmdesk ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** An interactive `vmdesk console` session whose output can be awaited line by line. */
export class ConsoleSession {
  private out = '';
  readonly child: ChildProcessWithoutNullStreams;
  private waiters: { re: RegExp; from: number; resolve: (m: RegExpExecArray) => void }[] = [];
  private consumed = 0;

  constructor(home: string, vm: string) {
    this.child = spawn(process.execPath, [BIN, '--home', home, 'console', vm]);
    this.child.stdout.on('data', (d: Buffer) => {
      this.out += d.toString('utf8');
      this.check();
    });
    this.child.stderr.on('data', (d: Buffer) => {
      this.out += d.toString('utf8');
      this.check();
    });
  }

  private check(): void {
    this.waiters = this.waiters.filter((w) => {
      const re = new RegExp(w.re.source, w.re.flags.includes('g') ? w.re.flags : w.re.flags + 'g');
      re.lastIndex = w.from;
      const m = re.exec(this.out);
      if (!m) return true;
      this.consumed = re.lastIndex;
      w.resolve(m);
      return false;
    });
  }

  /** Resolves when `re` appears in output produced after the previous match. */
  waitFor(re: RegExp, timeoutMs = 60_000): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}; console so far:\n${this.out.slice(-2000)}`)), timeoutMs);
      this.waiters.push({ re, from: this.consumed, resolve: (m) => (clearTimeout(timer), resolve(m)) });
      this.check();
    });
  }

  send(text: string): void {
    this.child.stdin.write(text);
  }

  get output(): string {
    return this.out;
  }

  close(): Promise<void> {
    this.child.stdin.end();
    return new Promise((r) => (this.child.exitCode !== null ? r() : this.child.once('close', () => r())));
  }
}

export async function tempHome(prefix = 'vmdesk-test-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Every file under dir with size and mtime: proves that a failed command changed nothing. */
export async function treeSnapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string): Promise<void> {
    for (const name of (await readdir(d).catch(() => [] as string[])).sort()) {
      const p = path.join(d, name);
      const s = await stat(p);
      if (s.isDirectory()) await walk(p);
      // Lock files are flock(2) anchors that stay in place; they hold no state.
      else if (!/^\.lock(\.\d+)?$/.test(name)) out.push(`${path.relative(dir, p)} ${s.size} ${s.mtimeMs}`);
    }
  }
  await walk(dir);
  return out;
}

export function freePort(): Promise<number> {
  return import('node:net').then(
    ({ createServer }) =>
      new Promise((resolve, reject) => {
        const srv = createServer();
        srv.listen(0, '127.0.0.1', () => {
          const port = (srv.address() as { port: number }).port;
          srv.close(() => resolve(port));
        });
        srv.on('error', reject);
      }),
  );
}
