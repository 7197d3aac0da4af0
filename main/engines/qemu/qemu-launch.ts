// Starts a supervisor's QEMU before the rest of the supervisor is even loaded: its start-up delays the guest.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import type { LaunchSpec } from './control.js';
import { findOnPath } from './host.js';
import { bundleFiles, runtimeFiles } from './layout.js';
import { RUN_HEADER } from './records.js';

export interface LaunchedQemu {
  child: ChildProcess;
  /** Size of serial.log (appended across runs) before this QEMU started. */
  serialLogOffset: number;
  /** An exit or spawn error that happened before the supervisor took the child over. */
  early?: { code: number | null; signal: NodeJS.Signals | null; error?: string };
}

export function launchQemu(spec: LaunchSpec): LaunchedQemu {
  const files = bundleFiles(spec.bundleDir);
  const run = runtimeFiles(spec.runtimeDir);
  mkdirSync(files.logs, { recursive: true });
  for (const p of [run.control, run.qmp, run.serial, run.vnc]) rmSync(p, { force: true });
  let serialLogOffset = 0;
  try {
    serialLogOffset = statSync(files.serialLog).size;
  } catch {
    // first run: no log yet
  }
  const logFd = openSync(files.qemuLog, 'a');
  writeSync(logFd, `${RUN_HEADER}${new Date().toISOString()} starting ${spec.qemuPath} ${spec.args.map((a) => JSON.stringify(a)).join(' ')}\n`);
  // setpriv --pdeathsig makes the kernel kill QEMU if its supervisor dies, so no guest is left running
  // that nobody can reach; exec keeps the pid, so child.pid is QEMU's.
  const setpriv = process.platform === 'linux' ? findOnPath('setpriv') : undefined;
  const [command, args] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', spec.qemuPath, ...spec.args]] : [spec.qemuPath, spec.args];
  const child = spawn(command, args, { stdio: ['ignore', logFd, logFd], cwd: spec.bundleDir });
  closeSync(logFd);
  const launched: LaunchedQemu = { child, serialLogOffset };
  // Listen at once: an 'error' event with no listener would kill the process before the supervisor loads.
  child.once('error', (e) => (launched.early ??= { code: null, signal: null, error: e.message }));
  child.once('exit', (code, signal) => (launched.early ??= { code, signal }));
  return launched;
}
