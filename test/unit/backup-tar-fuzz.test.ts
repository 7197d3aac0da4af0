// Fuzzes the tar reader with fast-check: random mutations of real archives and random header sequences with
// valid checksums (so they reach the size, pax and name logic). Whatever the bytes, readTarIndex must resolve
// with sane entries or reject with VmdeskError EINVAL, quickly, and never allocate more than its header cap.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TAR_LIMITS, TarWriter, readTarIndex } from '../../main/core/backup/tar.js';
import { VmdeskError } from '../../main/api/errors.js';

let dir: string;
let seeds: Buffer[] = [];
let n = 0;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'vmdesk-tarfuzz-'));
  const mine = path.join(dir, 'mine.tar');
  const w = await TarWriter.create(mine);
  await w.add('a.ovf', Buffer.from('<Envelope/>'));
  await w.add('disk1.vmdk', Buffer.alloc(1500, 7));
  await w.add('a.mf', Buffer.from('SHA256(a.ovf)= 00\n'));
  await w.close();
  const src = path.join(dir, 'src');
  mkdirSync(path.join(src, 'd'), { recursive: true });
  writeFileSync(path.join(src, 'd', 'x'.repeat(120)), 'long name');
  writeFileSync(path.join(src, 'small'), 'small');
  const gnu = path.join(dir, 'gnu.tar');
  execFileSync('tar', ['--format=gnu', '-cf', gnu, '-C', src, '.']);
  const pax = path.join(dir, 'pax.tar');
  execFileSync('tar', ['--format=pax', '-cf', pax, '-C', src, 'd', 'small']);
  seeds = [mine, gnu, pax].map((f) => readFileSync(f));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs readTarIndex on `bytes`; checks the outcome, the time taken and the largest allocation. */
async function check(bytes: Uint8Array): Promise<void> {
  const f = path.join(dir, `f${n++ % 8}.tar`);
  writeFileSync(f, bytes);
  let largest = 0;
  const alloc = Buffer.alloc.bind(Buffer);
  const spy = vi.spyOn(Buffer, 'alloc').mockImplementation(((size: number, ...rest: unknown[]) => {
    largest = Math.max(largest, size);
    return (alloc as (...a: unknown[]) => Buffer)(size, ...rest);
  }) as typeof Buffer.alloc);
  const t0 = Date.now();
  try {
    const entries = await readTarIndex(f);
    const names = new Set<string>();
    for (const e of entries) {
      expect(Number.isSafeInteger(e.size) && e.size >= 0).toBe(true);
      expect(e.offset % 512).toBe(0);
      expect(e.offset + e.size).toBeLessThanOrEqual(bytes.length);
      expect(e.name).not.toMatch(/^\/|(^|\/)\.\.?(\/|$)|[\u0000-\u001f\\]/);
      expect(names.has(e.name)).toBe(false);
      names.add(e.name);
    }
  } catch (e) {
    if (!(e instanceof VmdeskError)) throw new Error(`readTarIndex threw something other than VmdeskError: ${String((e as Error)?.stack ?? e)}`);
    expect(e.code).toBe('EINVAL');
  } finally {
    spy.mockRestore();
  }
  expect(Date.now() - t0).toBeLessThan(2000);
  expect(largest).toBeLessThanOrEqual(TAR_LIMITS.metaBytes);
}

function header(name: Uint8Array, sizeField: Uint8Array, type: number, extra: { at: number; bytes: Uint8Array }[]): Buffer {
  const b = Buffer.alloc(512);
  Buffer.from(name).copy(b, 0, 0, 100);
  b.write('0000644\0', 100, 'latin1');
  Buffer.from(sizeField).copy(b, 124, 0, 12);
  b[156] = type;
  b.write('ustar\0' + '00', 257, 'latin1');
  for (const x of extra) Buffer.from(x.bytes).copy(b, x.at % 512);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

const octalText = (v: bigint | number) => Buffer.from(v.toString(8).padStart(11, '0').slice(-11) + '\0', 'latin1');
const sizeField = fc.oneof(
  fc.nat({ max: 4096 }).map(octalText),
  fc.bigInt({ min: 0n, max: 2n ** 33n }).map(octalText),
  fc.bigInt({ min: 0n, max: 2n ** 88n - 1n }).map((v) => {
    const b = Buffer.alloc(12);
    for (let i = 11, x = v; i >= 1; i--, x >>= 8n) b[i] = Number(x & 0xffn);
    b[0] = 0x80;
    return b;
  }),
  fc.uint8Array({ minLength: 12, maxLength: 12 }),
  fc.stringMatching(/^[0-7 ]{0,11}$/).map((s) => Buffer.from(s.padEnd(12, '\0'), 'latin1')),
);
const paxValue = fc.oneof(fc.string({ maxLength: 40 }), fc.bigInt({ min: 0n, max: 2n ** 70n }).map(String), fc.constantFrom('', '-1', '1e9', '0x10', ' 5', '../x', '/abs', 'a\0b'));
const paxRecords = fc
  .array(fc.tuple(fc.constantFrom('size', 'path', 'linkpath', 'comment', 'GNU.sparse.major', 'mtime', 'x'), paxValue), { maxLength: 4 })
  .map((recs) =>
    Buffer.concat(
      recs.map(([k, v]) => {
        const body = Buffer.from(` ${k}=${v}\n`);
        let len = body.length + 1;
        while (String(len).length + body.length !== len) len = String(len).length + body.length;
        return Buffer.concat([Buffer.from(String(len)), body]);
      }),
    ),
  );
const entry = fc.record({
  name: fc.oneof(
    fc.constantFrom('a.ovf', 'disk1.vmdk', './a.ovf', 'a.mf', '../up', '/abs', 'd/', 'a//b', 'x'.repeat(100)).map((s) => Buffer.from(s)),
    fc.uint8Array({ maxLength: 110 }),
    fc.string({ maxLength: 30 }).map((s) => Buffer.from(s)),
  ),
  type: fc.oneof(fc.constantFrom(...'0\x0057xgLK1236S'.split('').map((c) => c.charCodeAt(0))), fc.integer({ min: 0, max: 255 })),
  size: sizeField,
  body: fc.oneof(paxRecords, fc.uint8Array({ maxLength: 1500 }).map((u) => Buffer.from(u))),
  /** Sometimes the declared size matches the body (so the next header is where a tar reader expects it). */
  honest: fc.boolean(),
  extra: fc.array(fc.record({ at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }), { maxLength: 2 }),
});

describe('tar reader fuzzing', () => {
  it('random header sequences (valid checksums) are read or refused with EINVAL, bounded in time and memory', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 6 }), fc.nat({ max: 3 }), async (entries, endBlocks) => {
        const parts: Buffer[] = [];
        for (const e of entries) {
          const size = e.honest ? octalText(e.body.length) : e.size;
          parts.push(header(e.name, size, e.type, e.extra), e.body, Buffer.alloc((512 - (e.body.length % 512)) % 512));
        }
        parts.push(Buffer.alloc(512 * endBlocks));
        await check(Buffer.concat(parts));
      }),
      { numRuns: 400 },
    );
  });

  it('random byte mutations and truncations of real archives are read or refused with EINVAL', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: 2 }),
        fc.array(fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 12 }),
        fc.option(fc.nat(), { nil: undefined }),
        fc.boolean(),
        async (which, muts, cut, fixSums) => {
          const b = Buffer.from(seeds[which]!);
          // Mutations land in headers more often than not: that is where the parsing happens.
          const headers = [0, 512, 1024, 1536, 2048, 2560, 3072].filter((o) => o < b.length);
          for (const m of muts) {
            const at = m.at % 2 === 0 ? headers[m.at % headers.length]! + (m.at % 512) : m.at % b.length;
            b[at] = m.byte;
          }
          // Half the time the checksums are made right again, so the mutation reaches the field it hit.
          if (fixSums) {
            for (let o = 0; o + 512 <= b.length; o += 512) {
              if (b.toString('latin1', o + 257, o + 262) !== 'ustar') continue;
              b.fill(0x20, o + 148, o + 156);
              let sum = 0;
              for (let i = o; i < o + 512; i++) sum += b[i]!;
              b.write(sum.toString(8).padStart(6, '0') + '\0 ', o + 148, 'latin1');
            }
          }
          await check(cut === undefined ? b : b.subarray(0, cut % (b.length + 1)));
        },
      ),
      { numRuns: 400 },
    );
  });
});
