// Helpers for the tests of vmdesk-microvm and the micro-VM engine module: a native build that has the
// executable and the addon's hooks for it (rebuilt once when it predates them), and running the executable
// with its ready pipe captured.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { addonFile, ensureAddonBuilt, microvmExeFile, repoRoot } from './harness.js';

export { microvmExeFile, repoRoot };

export interface MicrovmHooks {
  hostArgs(argv: string[]): Record<string, unknown> & { disks: { path: string; readOnly: boolean }[] };
  controlInput(chunks: Buffer[]): { items: ({ request: { id: number; cmd: string; path: string; number: number } } | { reply: Buffer })[]; buffered: number };
  jsonString(bytes: Buffer): Buffer;
  exitRecord(chunks: Buffer[], r: { reason: string; detail: string }): Buffer;
  exitStatusFor(code: string): number;
  processStartTime(pid: number): string;
}

export interface MicrovmNative {
  __test: MicrovmHooks;
  flockFile(fd: number, exclusive: boolean, wait: boolean): boolean;
  funlockFile(fd: number): void;
  spawnDetached(file: string, argv: string[], outputFd: number): { pid: number; readyFd: number };
}

function current(): boolean {
  if (!existsSync(microvmExeFile)) return false;
  const probe = `const a = require(${JSON.stringify(addonFile)}); process.exit(a.__test && a.__test.controlInput && a.spawnDetached && a.waitChild ? 0 : 3)`;
  return spawnSync(process.execPath, ['-e', probe]).status === 0;
}

/** Why these tests cannot run (not Linux, the build fails), or undefined. Needs no /dev/kvm. */
export function microvmNativeSkipReason(): string | undefined {
  if (process.platform !== 'linux') return `vmdesk-microvm exists on Linux only (this is ${process.platform})`;
  const built = ensureAddonBuilt();
  if (built) return built;
  if (current()) return undefined;
  // A build from before the executable's hooks: rebuild once, under the lock native/build.mjs takes too.
  const lock = join(repoRoot, 'native', '.build-lock');
  for (let i = 0; i < 1200; i++) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      try { if (Date.now() - statSync(lock).mtimeMs > 300_000) rmdirSync(lock); } catch { /* gone */ }
      spawnSync('sleep', ['0.5']);
    }
  }
  try {
    if (!current()) {
      const r = spawnSync(process.execPath, [join(repoRoot, 'native', 'build.mjs'), '--quiet'], { encoding: 'utf8', env: { ...process.env, VMDESK_NATIVE_BUILD_LOCKED: '1' } });
      if (r.status !== 0) return `native build failed: ${(r.stderr || r.stdout).slice(-2000)}`;
    }
  } finally {
    try { rmdirSync(lock); } catch { /* ignore */ }
  }
  return current() ? undefined : 'the native build has no vmdesk-microvm hooks even after a rebuild';
}

export function microvmNative(): MicrovmNative {
  return createRequire(import.meta.url)(addonFile) as MicrovmNative;
}

export interface ExeRun {
  status: number | null;
  stdout: string;
  stderr: string;
  /** What the executable wrote on --ready-fd 3 (parsed), when it did. */
  ready: { ok: boolean; pid?: number; error?: { code: string; message: string } } | undefined;
}

/** Runs vmdesk-microvm to completion with fd 3 a pipe; the flags are given as they are, plus --ready-fd 3 when asked. */
export function runExe(args: string[], opts: { readyFd?: boolean; timeoutMs?: number } = {}): ExeRun {
  const r: SpawnSyncReturns<string> = spawnSync(microvmExeFile, opts.readyFd ? [...args, '--ready-fd', '3'] : args, {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    timeout: opts.timeoutMs ?? 20_000,
  });
  const line = (r.output[3] as string | null | undefined)?.split('\n')[0];
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ready: line ? (JSON.parse(line) as ExeRun['ready']) : undefined };
}
