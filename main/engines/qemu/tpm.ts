// TPM 2.0 for QEMU guests: one swtpm per running VM, its state in the bundle's tpm/ folder. swtpm listens on
// a control socket in the VM's runtime dir that QEMU's tpm-emulator backend connects to at start-up, so it
// must be up before QEMU is spawned. It is spawned detached like QEMU (a guest outlives the daemon) with
// --terminate: it ends when QEMU's connection goes, and the runtime record keeps its pid and start time so
// the daemon that sees QEMU end (or reaps it) makes sure it has gone.
import { execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { findOnPath } from '../../platform/host-tools.js';
import { connectUnixSocket, processRunning, processStartTime } from '../../platform/process.js';
import { ensureTpmStateDir, TPM_STATE_FILES } from '../../platform/tpm-state.js';

const run = promisify(execFile);

export const SWTPM_MISSING = 'TPM 2.0 needs swtpm, which is not installed; install it with: sudo apt install swtpm swtpm-tools';

export function swtpmSocket(runtimeDir: string): string {
  return join(runtimeDir, 'swtpm.sock');
}

function swtpmPidFile(runtimeDir: string): string {
  return join(runtimeDir, 'swtpm.pid');
}

/** The swtpm binary ($VMDESK_SWTPM, else PATH), or undefined. */
export function swtpmPath(): string | undefined {
  const override = process.env.VMDESK_SWTPM;
  if (override !== undefined) return override === '' ? undefined : findOnPath(override);
  return findOnPath('swtpm');
}

/** A helper process of a guest, as runtime records keep it. */
export interface HelperProcess {
  pid: number;
  startTime: string;
}

/** swtpm's arguments: TPM 2.0, state files private to the user, control socket, its own log. */
export function swtpmArgs(stateDir: string, socket: string, pidFile: string, logFile: string): string[] {
  const opt = (v: string) => v.replaceAll(',', ',,');
  return [
    'socket',
    '--tpm2',
    '--tpmstate',
    `dir=${opt(stateDir)},mode=0600`,
    '--ctrl',
    `type=unixio,path=${opt(socket)},mode=0600`,
    '--pid',
    `file=${opt(pidFile)}`,
    '--log',
    `file=${opt(logFile)},level=1`,
    // Ends with QEMU's connection: a swtpm never outlives its guest.
    '--terminate',
  ];
}

/**
 * A new TPM gets its endorsement keys once, as a real one has from its maker (swtpm_setup --createek; no
 * certificates, which would need a local CA). Without swtpm_setup the TPM starts unprovisioned, which
 * guests accept too (Windows creates what it needs).
 */
export async function provisionTpm(stateDir: string, log: string): Promise<void> {
  if (existsSync(join(stateDir, TPM_STATE_FILES[0]))) return;
  const setup = findOnPath('swtpm_setup');
  if (!setup || !swtpmPath()) return;
  try {
    await run(setup, ['--tpm2', '--tpmstate', stateDir, '--createek', '--not-overwrite', '--logfile', log], { timeout: 60_000 });
  } catch (e) {
    // An unprovisioned TPM still works; leave no half-made state behind.
    for (const f of TPM_STATE_FILES) rmSync(join(stateDir, f), { force: true });
    throw new VmdeskError(ErrorCode.host, `swtpm_setup could not provision the VM's TPM: ${(e as Error).message.split('\n')[0]} (see logs/swtpm.log)`);
  }
}

/** A swtpm an earlier run left behind (QEMU never connected to it) holds the state's lock: it goes first. */
function endStaleSwtpm(runtimeDir: string, socket: string): void {
  let pid: number;
  try {
    pid = Number(readFileSync(swtpmPidFile(runtimeDir), 'utf8').trim());
  } catch {
    return;
  }
  if (!Number.isSafeInteger(pid) || pid <= 1 || !processRunning(pid)) return;
  let cmdline = '';
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return;
  }
  // Only a swtpm serving this VM's socket: a reused pid is someone else's process.
  if (!cmdline.includes('swtpm') || !cmdline.includes(socket)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

/** Starts swtpm for a VM and resolves once its control socket accepts connections. */
export async function startSwtpm(opts: { swtpm: string; bundleDir: string; runtimeDir: string; logFile: string; timeoutMs?: number }): Promise<HelperProcess> {
  const stateDir = ensureTpmStateDir(opts.bundleDir);
  const socket = swtpmSocket(opts.runtimeDir);
  endStaleSwtpm(opts.runtimeDir, socket);
  rmSync(socket, { force: true });
  rmSync(swtpmPidFile(opts.runtimeDir), { force: true });
  await provisionTpm(stateDir, opts.logFile).catch(() => undefined);
  const log = openSync(opts.logFile, 'a');
  let child;
  try {
    child = spawn(opts.swtpm, swtpmArgs(stateDir, socket, swtpmPidFile(opts.runtimeDir), opts.logFile), { detached: true, stdio: ['ignore', log, log] });
  } finally {
    closeSync(log);
  }
  let failed: string | undefined;
  child.once('error', (e) => (failed = e.message));
  child.once('exit', (code, signal) => (failed ??= `exited (${signal ?? `code ${code}`})`));
  child.unref();
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    if (failed) throw new VmdeskError(ErrorCode.host, `swtpm did not start: ${failed}; see logs/swtpm.log`);
    if (existsSync(socket)) {
      // Listening, not just bound: a connection that opens and closes again is harmless to swtpm.
      const ok = await connectUnixSocket(socket).then(
        (s) => (s.destroy(), true),
        () => false,
      );
      if (ok && child.pid) return { pid: child.pid, startTime: processStartTime(child.pid) ?? '' };
    }
    if (Date.now() > deadline) {
      if (child.pid) stopHelper({ pid: child.pid, startTime: processStartTime(child.pid) ?? '' });
      throw new VmdeskError(ErrorCode.host, 'swtpm did not open its control socket in time; see logs/swtpm.log');
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Ends a helper at once (start-up failed). */
export function stopHelper(p: HelperProcess): void {
  if (!processRunning(p.pid, p.startTime || undefined)) return;
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

/** After QEMU has gone: swtpm ends by itself (--terminate); make sure it has, so its state is written and unlocked. */
export async function endHelper(p: HelperProcess | undefined, graceMs = 1000): Promise<void> {
  if (!p) return;
  const alive = () => processRunning(p.pid, p.startTime || undefined);
  for (let waited = 0; waited < graceMs && alive(); waited += 25) await new Promise((r) => setTimeout(r, 25));
  if (!alive()) return;
  try {
    process.kill(p.pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let i = 0; i < 40 && alive(); i++) await new Promise((r) => setTimeout(r, 25));
  stopHelper(p);
}
