// Every qemu-img call VMDesk makes: create, info, resize, convert with progress and cancel, internal snapshots.
// The source format is always stated (or given as a json: spec that pins it): qemu-img never probes.
import { spawn } from 'node:child_process';
import { VmdeskError, ErrorCode } from '../api/errors.js';
import { access } from 'node:fs/promises';
import { qemuImgPath } from './host-tools.js';
import { currentCancelSignal } from './cancel.js';

export interface ImgSnapshot {
  /** QEMU's tag (what `qemu-img snapshot -l` calls the name). */
  tag: string;
  vmStateBytes: number;
  dateSec: number;
}

export interface ImgInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile?: string;
  snapshots: ImgSnapshot[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** qemu-img says this when another process (a running QEMU) holds the image's lock. */
const LOCK_ERROR = /Failed to get (?:shared )?"?(?:write|consistent read)"? lock|Is another process using the image/i;

/**
 * Runs qemu-img; errors become EENGINE with its stderr, so the user sees QEMU's own reason (EBUSY when a
 * running VM holds the image, ENOTFOUND for a missing file, ECANCELED when aborted).
 */
export function qemuImg(args: string[], opts: { onStdout?: (chunk: string) => void; signal?: AbortSignal } = {}): Promise<RunResult> {
  const bin = qemuImgPath();
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], signal: opts.signal, env: { ...process.env, LC_ALL: 'C' } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
      opts.onStdout?.(c);
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', (e) => {
      if ((e as Error).name === 'AbortError') reject(new VmdeskError(ErrorCode.cancelled, 'cancelled'));
      else reject(new VmdeskError(ErrorCode.host, `cannot run qemu-img: ${e.message}`));
    });
    child.on('close', (code) => {
      if (code === 0) resolve({ stdout, stderr });
      else {
        const lines = stderr.trim().split('\n').filter(Boolean);
        const last = (lines[lines.length - 1] ?? `exit code ${code}`).replace(/^qemu-img: /, '');
        if (LOCK_ERROR.test(stderr)) reject(new VmdeskError(ErrorCode.busy, `the disk is in use by another process (a running VM?): ${last}`, lines));
        else if (/No such file or directory/i.test(stderr)) reject(new VmdeskError(ErrorCode.notFound, `qemu-img ${args[0]}: ${last}`, lines));
        else reject(new VmdeskError(ErrorCode.engine, `qemu-img ${args[0]} failed: ${last}`, lines));
      }
    });
  });
}

/**
 * Image facts; `shared` (-U) reads an image a running QEMU holds open, without taking its lock. Give the
 * format (or a json: source from the image gate): an image is never probed.
 */
export async function imgInfo(file: string, opts: { shared?: boolean; format?: string } = {}): Promise<ImgInfo> {
  const args = ['info', '--output=json'];
  if (opts.shared) args.push('-U');
  if (opts.format) args.push('-f', opts.format);
  else if (!file.startsWith('json:')) throw new VmdeskError(ErrorCode.internal, `qemu-img info of ${file} without a stated format`);
  args.push(file);
  const { stdout } = await qemuImg(args);
  const j = JSON.parse(stdout) as {
    format: string;
    'virtual-size': number;
    'actual-size'?: number;
    'backing-filename'?: string;
    'full-backing-filename'?: string;
    snapshots?: { name: string; 'vm-state-size': number; 'date-sec': number }[];
  };
  return {
    format: j.format,
    virtualSize: j['virtual-size'],
    actualSize: j['actual-size'] ?? 0,
    backingFile: j['full-backing-filename'] ?? j['backing-filename'],
    snapshots: (j.snapshots ?? []).map((s) => ({ tag: s.name, vmStateBytes: s['vm-state-size'], dateSec: s['date-sec'] })),
  };
}

/**
 * `qemu-img snapshot` has no -f: name the format through --image-opts so a file is never probed (a raw image
 * probed as something else is a classic hazard). Commas in the path are doubled, QEMU's escape.
 */
function qcow2Opts(file: string): string[] {
  return ['--image-opts', `driver=qcow2,file.driver=file,file.filename=${file.replaceAll(',', ',,')}`];
}

export async function snapshotCreate(file: string, tag: string): Promise<void> {
  await qemuImg(['snapshot', '-c', tag, ...qcow2Opts(file)]);
}

export async function snapshotApply(file: string, tag: string): Promise<void> {
  await qemuImg(['snapshot', '-a', tag, ...qcow2Opts(file)]);
}

export async function snapshotDelete(file: string, tag: string): Promise<void> {
  await qemuImg(['snapshot', '-d', tag, ...qcow2Opts(file)]);
}

export type Fraction = (fraction: number) => void;

/** `qemu-img convert -p`: progress lines look like "    (42.00/100%)" separated by carriage returns. */
export function parseConvertProgress(chunk: string): number | undefined {
  const all = [...chunk.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
  const last = all[all.length - 1];
  return last ? Math.min(1, Number(last[1]) / 100) : undefined;
}

export interface ConvertOptions {
  srcFormat?: string;
  dstFormat: 'qcow2' | 'raw' | 'vmdk' | 'vdi' | 'vhdx' | 'vpc';
  /** Compress qcow2 clusters (export). */
  compress?: boolean;
  /** Read the disk as it was in this internal snapshot (-l snapshot.name=TAG). */
  snapshotTag?: string;
  /** Extra -o options, e.g. subformat=streamOptimized. */
  options?: string[];
  /** Read an image that a running QEMU holds (only safe for a snapshot, which nothing writes). */
  shared?: boolean;
  onProgress?: Fraction;
  signal?: AbortSignal;
}

/** Converts src into a new image dst; a partial dst is removed on failure or cancel (ECANCELED). */
export async function convert(src: string, dst: string, o: ConvertOptions): Promise<void> {
  const args = ['convert', '-p'];
  if (o.shared) args.push('-U');
  if (o.srcFormat) args.push('-f', o.srcFormat);
  else if (!src.startsWith('json:')) throw new VmdeskError(ErrorCode.internal, `qemu-img convert of ${src} without a stated format`);
  if (o.snapshotTag) args.push('-l', `snapshot.name=${o.snapshotTag}`);
  args.push('-O', o.dstFormat);
  if (o.compress) args.push('-c');
  for (const opt of o.options ?? []) args.push('-o', opt);
  args.push(src, dst);
  try {
    await qemuImg(args, {
      // Without a signal of its own, a copy stops when the RPC it serves is cancelled (job.cancel); only the
      // copy: clean-up after a cancel still runs its qemu-img calls.
      signal: o.signal ?? currentCancelSignal(),
      onStdout: (c) => {
        const f = parseConvertProgress(c);
        if (f !== undefined) o.onProgress?.(f);
      },
    });
  } catch (e) {
    const { rm } = await import('node:fs/promises');
    await rm(dst, { force: true });
    throw e;
  }
  o.onProgress?.(1);
}

function checkSize(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new VmdeskError(ErrorCode.invalid, `invalid disk size ${bytes}`);
}

/** A new, empty, sparse image; refuses to overwrite an existing file (qemu-img create would truncate it). */
export async function createImage(file: string, bytes: number, format: 'qcow2' | 'raw' = 'qcow2'): Promise<void> {
  checkSize(bytes);
  if (await access(file).then(() => true, () => false)) throw new VmdeskError(ErrorCode.exists, `"${file}" already exists`);
  await qemuImg(['create', '-q', '-f', format, file, String(bytes)]);
}

/** Grows an image to `bytes`; shrinking would destroy data and is refused. */
export async function resize(file: string, format: string, bytes: number): Promise<void> {
  checkSize(bytes);
  const current = await imgInfo(file, { format, shared: true });
  if (bytes < current.virtualSize) {
    throw new VmdeskError(ErrorCode.invalid, `disk "${file}" is ${current.virtualSize} bytes; shrinking to ${bytes} is not supported (it would destroy data)`);
  }
  if (bytes === current.virtualSize) return;
  await qemuImg(['resize', '-q', '-f', format, file, String(bytes)]);
}

/** EBUSY when another process (a running QEMU) holds the image's lock: qemu-img info without -U takes it. */
export async function checkFree(file: string, format: string): Promise<void> {
  await imgInfo(file, { format });
}

export async function isInUse(file: string, format: string): Promise<boolean> {
  try {
    await checkFree(file, format);
    return false;
  } catch (e) {
    if (e instanceof VmdeskError && e.code === ErrorCode.busy) return true;
    throw e;
  }
}

/** A qcow2 overlay on an immutable base image (linked clones). The backing path is stored absolute. */
export async function createOverlay(file: string, backing: string, backingFormat = 'qcow2'): Promise<void> {
  await qemuImg(['create', '-f', 'qcow2', '-F', backingFormat, '-b', backing, file]);
}

/** Consistency check; resolves with qemu-img's report, rejects when the image is corrupt. */
export async function check(file: string, format?: string): Promise<string> {
  const args = ['check'];
  if (format) args.push('-f', format);
  args.push(file);
  return (await qemuImg(args)).stdout;
}
