// Runs the real `vmdesk` binary (bin/vmdesk.js over dist/) in a child process, for CLI tests. Each test file
// runs a private copy of bin/ and dist/main taken when it starts: other work in this tree rebuilds dist/, and a
// CLI of a new build finding the test's daemon (of the old one) busy with its guests is refused (EBUSY), by
// design. The copy is checked against its build stamp, so a copy taken mid-rebuild is taken again.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { mkdtemp, readdir, stat } from 'node:fs/promises';
import os from 'node:os';
import { afterAll } from 'vitest';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

/** The build stamp scripts/build-info.mjs computes for a dist/main (a hash of its compiled code). */
function stampOf(root: string): string {
  const hash = createHash('sha256');
  const walk = (rel: string) => {
    for (const name of readdirSync(path.join(root, rel)).sort()) {
      const r = path.join(rel, name);
      if (statSync(path.join(root, r)).isDirectory()) walk(r);
      else if (name.endsWith('.js')) hash.update(r).update(readFileSync(path.join(root, r)));
    }
  };
  walk(path.join('dist', 'main'));
  return hash.digest('hex').slice(0, 16);
}

/** A private copy of the compiled CLI (and the daemon it starts, which runs from beside it). */
export class FrozenBuild {
  readonly dir: string;
  readonly bin: string;

  constructor() {
    if (!existsSync(path.join(repo, 'dist', 'main', 'cli', 'main.js'))) throw new Error('dist/ is not built: run `npm run build:main` first');
    for (let attempt = 0; ; attempt++) {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-cli-'));
      cpSync(path.join(repo, 'bin'), path.join(dir, 'bin'), { recursive: true });
      cpSync(path.join(repo, 'dist', 'main'), path.join(dir, 'dist', 'main'), { recursive: true });
      cpSync(path.join(repo, 'package.json'), path.join(dir, 'package.json'));
      // Same modules, same native addon (and so the same kind of file locks) as the tree's own build.
      symlinkSync(path.join(repo, 'node_modules'), path.join(dir, 'node_modules'));
      if (existsSync(path.join(repo, 'native'))) symlinkSync(path.join(repo, 'native'), path.join(dir, 'native'));
      const stamped = (JSON.parse(readFileSync(path.join(dir, 'dist', 'main', 'build-info.json'), 'utf8')) as { build: string }).build;
      if (stampOf(dir) === stamped || attempt >= 20) {
        this.dir = dir;
        break;
      }
      // Taken while dist/ was being rebuilt: wait for the rebuild to finish and take it again.
      rmSync(dir, { recursive: true, force: true });
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
    }
    this.bin = path.join(this.dir, 'bin', 'vmdesk.js');
  }

  /** The build its daemon reports (hello, daemon status). */
  get build(): string {
    return (JSON.parse(readFileSync(path.join(this.dir, 'dist', 'main', 'build-info.json'), 'utf8')) as { build: string }).build;
  }

  /** Stamps the copy as another build: the same code, seen by every client as a different VMDesk. */
  setBuild(build: string): void {
    const file = path.join(this.dir, 'dist', 'main', 'build-info.json');
    const info = JSON.parse(readFileSync(file, 'utf8')) as { version: string; build: string };
    writeFileSync(file, JSON.stringify({ ...info, build }) + '\n');
  }

  run(home: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
    return runCli(this.bin, home, args, opts);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** This test file's copy of the CLI, removed after its tests (a hook of the importing file's root suite). */
const frozen = new FrozenBuild();
afterAll(() => frozen.remove());

export const BIN = frozen.bin;
/** The build this file's CLI (and the daemons it starts) runs. */
export const BUILD = frozen.build;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function vmdesk(home: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return runCli(BIN, home, args, opts);
}

function runCli(bin: string, home: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number }): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, '--home', home, ...args], { env: { ...process.env, ...opts.env } });
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
      // Lock files are flock(2) anchors that stay in place; they hold no state. The daemon's log is appended
      // whenever a daemon starts or stops (an idle one may exit between two commands): no state either.
      else if (!/^\.lock(\.\d+)?$/.test(name) && path.relative(dir, p) !== path.join('logs', 'daemon.log')) out.push(`${path.relative(dir, p)} ${s.size} ${s.mtimeMs}`);
    }
  }
  await walk(dir);
  return out;
}

export { freePort } from './ports.js';

/** Stops the library's daemon (running guests keep running), so none lingers after a test file. */
export async function stopDaemon(home: string): Promise<void> {
  const r = await vmdesk(home, ['daemon', 'stop']);
  if (r.code !== 0) throw new Error(`vmdesk daemon stop failed (${r.code}): ${r.stderr}`);
}
