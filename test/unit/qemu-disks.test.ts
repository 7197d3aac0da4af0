// qemu-img wrappers against the real qemu-img: create, info, grow-only resize, convert with progress and cancel.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { VmdeskError } from '../../main/api/errors.js';
import { checkFree, convert as imgConvert, createImage, imgInfo, parseConvertProgress, resize } from '../../main/platform/qemu-img.js';

// The old engine-level names, as thin calls over the one qemu-img module.
const createQcow2 = (p: string, bytes: number, onProgress?: (e: { fraction?: number }) => void) => {
  onProgress?.({ fraction: 0 });
  return createImage(p, bytes, 'qcow2').then(() => onProgress?.({ fraction: 1 }));
};
const info = (p: string, format: string) => imgInfo(p, { format, shared: true });
const checkInUse = (p: string, format: string) => checkFree(p, format);
const convert = (src: string, srcFormat: string, dst: string, dstFormat: 'qcow2' | 'raw', onProgress?: (e: { fraction?: number }) => void, signal?: AbortSignal) =>
  imgConvert(src, dst, { srcFormat, dstFormat, onProgress: (f) => onProgress?.({ fraction: f }), signal });

const dir = mkdtempSync(join(tmpdir(), 'vmdesk-disks-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const MiB = 1024 * 1024;

describe('qemu disks', () => {
  it('creates a qcow2 and reports it', async () => {
    const p = join(dir, 'a.qcow2');
    const phases: number[] = [];
    await createQcow2(p, 64 * MiB, (e) => phases.push(e.fraction ?? -1));
    expect(phases).toEqual([0, 1]);
    const i = await info(p, 'qcow2');
    expect(i.format).toBe('qcow2');
    expect(i.virtualSize).toBe(64 * MiB);
    expect(i.actualSize).toBeGreaterThan(0);
    expect(i.backingFile).toBeUndefined();
    await expect(createQcow2(p, MiB)).rejects.toMatchObject({ code: 'EEXIST' });
  });

  it('grows but refuses to shrink', async () => {
    const p = join(dir, 'b.qcow2');
    await createQcow2(p, 32 * MiB);
    await resize(p, 'qcow2', 48 * MiB);
    expect((await info(p, 'qcow2')).virtualSize).toBe(48 * MiB);
    await expect(resize(p, 'qcow2', 16 * MiB)).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('maps a missing image to ENOTFOUND and an unlocked one to not in use', async () => {
    await expect(info(join(dir, 'absent.qcow2'), 'qcow2')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    const p = join(dir, 'c.qcow2');
    await createQcow2(p, MiB);
    await expect(checkInUse(p, 'qcow2')).resolves.toBeUndefined();
  });

  it('converts with progress, and cancels cleaning up the partial output', async () => {
    const src = join(dir, 'src.raw');
    // Non-zero data so the conversion has work to report.
    writeFileSync(src, Buffer.alloc(8 * MiB, 7));
    const dst = join(dir, 'dst.qcow2');
    const fractions: number[] = [];
    await convert(src, 'raw', dst, 'qcow2', (p) => fractions.push(p.fraction ?? 0));
    expect(fractions.at(-1)).toBe(1);
    expect((await info(dst, 'qcow2')).format).toBe('qcow2');

    const ac = new AbortController();
    ac.abort();
    await expect(convert(src, 'raw', join(dir, 'x.qcow2'), 'qcow2', undefined, ac.signal)).rejects.toMatchObject({ code: 'ECANCELED' });
    const big = join(dir, 'big.raw');
    writeFileSync(big, Buffer.alloc(64 * MiB, 1));
    const ac2 = new AbortController();
    const out = join(dir, 'big.qcow2');
    const p = convert(big, 'raw', out, 'qcow2', () => ac2.abort(), ac2.signal);
    setTimeout(() => ac2.abort(), 5);
    await expect(p).rejects.toBeInstanceOf(VmdeskError);
    expect(existsSync(out)).toBe(false);
  });

  it('never probes: a raw disk whose guest wrote a qcow2 header naming a host file stays raw', async () => {
    const secret = join(dir, 'secret.txt');
    writeFileSync(secret, 'host secret');
    const disk = join(dir, 'guest-written.raw');
    // What a guest can do to its own raw disk: write a qcow2 header with a backing file into sector 0.
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', secret, disk, '1M']);
    const i = await info(disk, 'raw');
    expect(i.format).toBe('raw');
    expect(i.backingFile).toBeUndefined();
    const out = join(dir, 'guest-written-copy.qcow2');
    await convert(disk, 'raw', out, 'qcow2');
    expect(readFileSync(out).includes(Buffer.from('host secret'))).toBe(false);
  });

  it('parses qemu-img progress output', () => {
    expect(parseConvertProgress('    (0.00/100%)\r    (12.50/100%)\r')).toBe(0.125);
    expect(parseConvertProgress('nothing')).toBeUndefined();
  });
});
