// The vmdesk-microvm command line for a VM: its whole configuration as flags (the executable parses no files),
// a pure function of the config and the paths so it can be tested without starting anything.
import { isAbsolute, join } from 'node:path';
import type { EngineContext } from '../engine.js';
import { microvmBundleFiles, microvmRuntimeFiles } from './layout.js';

export interface MicrovmArgvOptions {
  paused?: boolean;
  /** Why KVM and how fast: kept in the runtime record so a daemon that adopts the VM can show it. */
  accelReason?: string;
  /** The fd on which the executable reports that it runs (or why it could not start). */
  readyFd?: number;
}

/** A disk's file: owned disks are relative to the bundle, attached ones absolute. */
export function diskFile(bundleDir: string, path: string): string {
  return isAbsolute(path) ? path : join(bundleDir, path);
}

/** Control characters become spaces and the text is cut to maxBytes of UTF-8 (the executable refuses more). */
function printable(text: string, maxBytes: number): string {
  let s = text.replace(/[\u0000-\u001f\u007f]/g, ' ');
  while (Buffer.byteLength(s) > maxBytes) s = s.slice(0, -1);
  return s;
}

export function microvmArgv(ctx: EngineContext, opts: MicrovmArgvOptions = {}): string[] {
  const c = ctx.config;
  const rt = microvmRuntimeFiles(ctx.runtimeDir);
  const logs = microvmBundleFiles(ctx.bundleDir);
  const args = ['--cpus', String(c.cpus), '--memory', String(c.memoryMiB)];
  if (c.directKernel) {
    args.push('--kernel', c.directKernel.kernel);
    if (c.directKernel.initrd) args.push('--initrd', c.directKernel.initrd);
    if (c.directKernel.cmdline) args.push('--cmdline', c.directKernel.cmdline);
  }
  for (const d of c.disks) args.push(d.readOnly ? '--disk-ro' : '--disk', diskFile(ctx.bundleDir, d.path));
  if (opts.paused) args.push('--paused');
  args.push('--control', rt.control, '--serial', rt.serial, '--serial-log', logs.serialLog, '--exit-record', logs.lastExit, '--record', rt.record);
  args.push('--vm-id', c.id);
  if (opts.accelReason) args.push('--accel-reason', printable(opts.accelReason, 500));
  if (opts.readyFd !== undefined) args.push('--ready-fd', String(opts.readyFd));
  return args;
}
