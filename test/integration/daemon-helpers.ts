// Shared by the daemon acceptance suites (daemon-concurrency, daemon-crash): the real `vmdesk` binary run from a
// private copy of the build, a seeded PRNG, WebSocket clients through `vmdesk serve`'s relay, and what /proc
// says about QEMU processes.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { FrameClient, type FrameTransport } from '../../main/api/frame-client.js';
import { FrozenBuild } from '../helpers/cli.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall time of the process, ms. */
  ms: number;
}

/**
 * The compiled CLI run from a private copy of the build (test/helpers/cli.ts's FrozenBuild: bin/, dist/main,
 * the native addon). Other work in this tree rebuilds dist/ while these suites run: a CLI of a new build finding
 * this suite's busy daemon would be refused as another version, and a half-written dist/ fails to load. The
 * copy is the same code for the whole run, daemon included (the CLI starts the daemon from beside itself).
 */
export class FrozenCli {
  private readonly frozen = new FrozenBuild();

  get dir(): string {
    return this.frozen.dir;
  }

  get bin(): string {
    return this.frozen.bin;
  }

  /** Whether the copy loads the native addon (its daemon reports 'flock' locks then). */
  get hasAddon(): boolean {
    return existsSync(path.join(this.dir, 'native', 'build', 'Release', 'vmdesk_native.node'));
  }

  /** Build stamp of the copy (what its daemon reports in hello and daemon status). */
  build(): string {
    return this.frozen.build;
  }

  run(home: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
    const t0 = Date.now();
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [this.bin, '--home', home, ...args], { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`vmdesk ${args.join(' ')} timed out after ${opts.timeoutMs ?? 120_000} ms\n${stdout}\n${stderr}`));
      }, opts.timeoutMs ?? 120_000);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr, ms: Date.now() - t0 });
      });
      child.stdin.on('error', () => {});
      child.stdin.end(opts.input ?? '');
    });
  }

  async json<T = any>(home: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<T> {
    const r = await this.run(home, [...args, '--json'], opts);
    if (r.code !== 0) throw new Error(`vmdesk ${args.join(' ')} failed (exit ${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  remove(): void {
    this.frozen.remove();
  }
}

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A FrameClient over a WebSocket to `vmdesk serve` (the relay to the daemon), authenticated by header. */
export async function wsClient(port: number, token: string): Promise<FrameClient> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { 'x-vmdesk-token': token } });
  // The hello can arrive in the same read as the upgrade's answer, before 'open' has been handled: keep what
  // comes until the FrameClient listens.
  const early: string[] = [];
  let onText: ((t: string) => void) | undefined;
  ws.on('message', (data) => (onText ? onText(data.toString()) : early.push(data.toString())));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`WebSocket upgrade refused: ${res.statusCode}`)));
  });
  const transport: FrameTransport = {
    send: (text) => {
      if (ws.readyState === ws.OPEN) ws.send(text);
    },
    close: () => ws.close(),
    onText: (fn) => {
      onText = fn;
      for (const t of early.splice(0)) fn(t);
    },
    onClose: (fn) => ws.on('close', () => fn()),
  };
  const client = new FrameClient(transport);
  await client.waitHello();
  return client;
}

/** Command line of a process (NUL-separated arguments joined by spaces); undefined when it is gone. */
export function cmdline(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return undefined;
  }
}

/** True when the process exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const s = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return s !== 'Z' && s !== 'X';
  } catch {
    return false;
  }
}

/** Live (non-zombie) qemu-system processes whose command line mentions `needle` (a home or bundle path). */
export function qemuProcesses(needle: string): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const cl = cmdline(pid);
    if (!cl || !cl.includes('qemu-system') || !cl.includes(needle)) continue;
    if (alive(pid)) out.push({ pid, cmdline: cl });
  }
  return out;
}

/** Live processes whose command line mentions `needle` (daemons of a home: `--home <home>`). */
export function processesMatching(needle: string): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    const cl = cmdline(pid);
    if (cl && cl.includes(needle) && alive(pid)) out.push({ pid, cmdline: cl });
  }
  return out;
}

/** SIGKILLs every live process whose command line mentions `needle` (test clean-up of its own home only). */
export function killMatching(needle: string): number[] {
  const pids = processesMatching(needle).map((p) => p.pid);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  return pids;
}

/** Processes that have `file` open (with the descriptor's flags), for diagnosing who holds a lock. */
export function openedBy(file: string): { pid: number; fd: string; flags: string; cmdline: string }[] {
  const out: { pid: number; fd: string; flags: string; cmdline: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${name}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${name}/fd/${fd}`) !== file) continue;
        const flags = /flags:\s*(\S+)/.exec(readFileSync(`/proc/${name}/fdinfo/${fd}`, 'utf8'))?.[1] ?? '?';
        out.push({ pid: Number(name), fd, flags, cmdline: (cmdline(Number(name)) ?? '').slice(0, 160) });
      } catch {
        /* gone meanwhile */
      }
    }
  }
  return out;
}

export async function waitUntil(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 30_000, stepMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
