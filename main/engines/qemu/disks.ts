// Disk image operations through qemu-img: create, inspect, grow, convert with progress, and in-use checks.
import { execFile, spawn } from 'node:child_process';
import { access, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { ProgressFn } from '../engine.js';
import { qemuImgPath } from './host.js';

const run = promisify(execFile);

export interface ImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile?: string;
}

/** qemu-img says this when another process (a running QEMU) holds the image's lock. */
const LOCK_ERROR = /Failed to get (?:shared )?"?(?:write|consistent read)"? lock|Is another process using the image/i;

function qemuImgError(what: string, path: string, e: unknown): VmdeskError {
  const err = e as { stderr?: string; message: string; code?: string };
  if (err.code === 'ENOENT' && !err.stderr) return new VmdeskError(ErrorCode.host, 'qemu-img is not installed; install it with: sudo apt install qemu-utils');
  const stderr = (err.stderr ?? err.message).trim();
  const lines = stderr.split('\n').filter(Boolean);
  if (LOCK_ERROR.test(stderr)) return new VmdeskError(ErrorCode.busy, `disk "${path}" is in use by another process (a running VM?)`, lines);
  if (/No such file or directory/i.test(stderr)) return new VmdeskError(ErrorCode.notFound, `disk "${path}" does not exist`, lines);
  return new VmdeskError(ErrorCode.engine, `qemu-img ${what} failed for "${path}": ${lines.at(-1) ?? 'unknown error'}`, lines);
}

async function qemuImg(what: string, path: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await run(qemuImgPath(), args, { timeout: 120_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } });
    return stdout;
  } catch (e) {
    throw qemuImgError(what, path, e);
  }
}

function checkSize(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new VmdeskError(ErrorCode.invalid, `invalid disk size ${bytes}`);
}

/** Creates an empty, sparse qcow2 image; fails rather than overwriting an existing file. */
export async function createQcow2(path: string, bytes: number, onProgress?: ProgressFn): Promise<void> {
  checkSize(bytes);
  onProgress?.({ phase: 'create disk', fraction: 0 });
  // qemu-img create truncates existing files: refuse them here.
  if (await access(path).then(() => true, () => false)) throw new VmdeskError(ErrorCode.exists, `"${path}" already exists`);
  await qemuImg('create', path, ['create', '-q', '-f', 'qcow2', path, String(bytes)]);
  onProgress?.({ phase: 'create disk', fraction: 1 });
}

/**
 * Format and sizes of an image. forceShare (default true) reads it even while a running VM holds it, which
 * is safe for metadata; pass false to learn whether it is locked (see checkInUse).
 */
export async function info(path: string, format: string, opts: { forceShare?: boolean } = {}): Promise<ImageInfo> {
  // The format is always stated: a probed raw disk whose guest wrote a qcow2 header would name any host file.
  const args = ['info', '--output=json', '-f', format];
  if (opts.forceShare !== false) args.push('-U');
  args.push(path);
  const out = await qemuImg('info', path, args);
  const j = JSON.parse(out) as { format: string; 'virtual-size': number; 'actual-size'?: number; 'full-backing-filename'?: string; 'backing-filename'?: string };
  const result: ImageInfo = { format: j.format, virtualSize: j['virtual-size'], actualSize: j['actual-size'] ?? 0 };
  const backing = j['full-backing-filename'] ?? j['backing-filename'];
  if (backing) result.backingFile = backing;
  return result;
}

/** Grows an image to `bytes`; shrinking would destroy data and is refused. */
export async function resize(path: string, format: string, bytes: number): Promise<void> {
  checkSize(bytes);
  const current = await info(path, format);
  if (bytes < current.virtualSize) {
    throw new VmdeskError(ErrorCode.invalid, `disk "${path}" is ${current.virtualSize} bytes; shrinking to ${bytes} is not supported (it would destroy data)`);
  }
  if (bytes === current.virtualSize) return;
  await qemuImg('resize', path, ['resize', '-q', '-f', current.format, path, String(bytes)]);
}

/** Throws EBUSY when another process (a running QEMU) holds the image's lock. */
export async function checkInUse(path: string, format: string): Promise<void> {
  await info(path, format, { forceShare: false });
}

export async function isInUse(path: string, format: string): Promise<boolean> {
  try {
    await checkInUse(path, format);
    return false;
  } catch (e) {
    if (e instanceof VmdeskError && e.code === ErrorCode.busy) return true;
    throw e;
  }
}

/** Parses qemu-img -p progress output ("    (42.17/100%)\r"): the last fraction in the chunk, or undefined. */
export function parseConvertProgress(chunk: string): number | undefined {
  const all = [...chunk.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
  const last = all.at(-1);
  return last ? Math.min(1, Number(last[1]) / 100) : undefined;
}

/** Converts src into a new image dst of format fmt; on failure or cancel the partial dst is removed. */
export function convert(src: string, srcFormat: string, dst: string, fmt: string, onProgress?: ProgressFn, signal?: AbortSignal): Promise<void> {
  const known = /^(qcow2|raw|vmdk|vdi|vhdx|vpc)$/;
  if (!known.test(fmt) || !known.test(srcFormat)) return Promise.reject(new VmdeskError(ErrorCode.invalid, `unsupported disk format "${known.test(fmt) ? srcFormat : fmt}"`));
  if (signal?.aborted) return Promise.reject(new VmdeskError(ErrorCode.cancelled, 'conversion cancelled'));
  return new Promise((resolve, reject) => {
    const child = spawn(qemuImgPath(), ['convert', '-p', '-U', '-f', srcFormat, '-O', fmt, src, dst], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    let stderr = '';
    let cancelled = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      const f = parseConvertProgress(d);
      if (f !== undefined) onProgress?.({ phase: 'convert', fraction: f });
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const onAbort = () => {
      cancelled = true;
      child.kill('SIGTERM');
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (e) => {
      signal?.removeEventListener('abort', onAbort);
      reject(qemuImgError('convert', src, e));
    });
    child.on('close', (code) => {
      signal?.removeEventListener('abort', onAbort);
      if (code === 0 && !cancelled) {
        onProgress?.({ phase: 'convert', fraction: 1 });
        resolve();
        return;
      }
      void rm(dst, { force: true }).finally(() => {
        if (cancelled) reject(new VmdeskError(ErrorCode.cancelled, 'conversion cancelled'));
        else reject(qemuImgError('convert', src, { stderr, message: `exit code ${code}` }));
      });
    });
  });
}
