// The tar reader against hostile archives the tests build byte by byte: oversized and malformed pax headers,
// base-256 sizes, unsafe names, duplicates, links and devices, too many entries, truncation. Every one must be
// refused with EINVAL (never a crash, never an allocation the size of what the archive claims).
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TAR_LIMITS, TarWriter, hashEntry, readEntry, readTarIndex } from '../../main/core/backup/tar.js';
import { VmdeskError } from '../../main/api/errors.js';

let dir: string;
let n = 0;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'vmdesk-tarh-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

function file(buf: Buffer): string {
  const f = path.join(dir, `t${n++}.tar`);
  writeFileSync(f, buf);
  return f;
}

/** Largest Buffer.alloc/allocUnsafe the code under test asks for while `fn` runs. */
async function largestAllocation(fn: () => Promise<unknown>): Promise<number> {
  let max = 0;
  const alloc = Buffer.alloc.bind(Buffer);
  const unsafe = Buffer.allocUnsafe.bind(Buffer);
  vi.spyOn(Buffer, 'alloc').mockImplementation(((size: number, ...rest: unknown[]) => {
    max = Math.max(max, size);
    return (alloc as (...a: unknown[]) => Buffer)(size, ...rest);
  }) as typeof Buffer.alloc);
  vi.spyOn(Buffer, 'allocUnsafe').mockImplementation((size: number) => {
    max = Math.max(max, size);
    return unsafe(size);
  });
  try {
    await fn();
  } catch {
    // the caller checks the outcome separately
  }
  vi.restoreAllMocks();
  return max;
}

async function refused(buf: Buffer, message?: RegExp): Promise<VmdeskError> {
  const err = await readTarIndex(file(buf)).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(VmdeskError);
  expect(err).toMatchObject({ code: 'EINVAL' });
  if (message) expect((err as Error).message).toMatch(message);
  return err as VmdeskError;
}

const GiB = 1024 ** 3;
const plain = (name: string, data: string | Buffer, extra: Partial<HeaderSpec> = {}): Buffer[] => {
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return [tarHeader({ name, size: b.length, ...extra }), tarBody(b)];
};

describe('tar reader: sizes', () => {
  it('refuses a 2.5 KB archive whose pax header declares 3 GiB, without allocating it (this aborted Node)', async () => {
    const buf = tarArchive([tarHeader({ name: 'PaxHeaders/x', size: 3 * GiB, type: 'x' })], { endBlocks: 4 });
    expect(buf.length).toBe(2560);
    await refused(buf, /extended header .* declares 3221225472 bytes/);
    expect(await largestAllocation(() => readTarIndex(file(buf)))).toBeLessThanOrEqual(TAR_LIMITS.metaBytes);
  });

  it('refuses a GNU long name (L) or pax global header (g) past the cap', async () => {
    await refused(tarArchive([tarHeader({ name: '././@LongLink', size: 2 * GiB, type: 'L' })]), /extended header/);
    await refused(tarArchive([tarHeader({ name: 'g', size: TAR_LIMITS.metaBytes + 1, type: 'g' }), tarBody(Buffer.alloc(TAR_LIMITS.metaBytes + 1, 0x41))]), /at most 65536/);
  });

  it('refuses a pax "size" that is larger than the file, not an integer, or duplicated', async () => {
    for (const bad of ['3221225472', '1e3', '-5', '12.5', ' 12', '0x10', '', '99999999999999999999']) {
      const buf = tarArchive([tarHeader({ name: 'p', type: 'x', size: paxBody({ size: bad }).length }), tarBody(paxBody({ size: bad })), ...plain('a.bin', 'hello')]);
      const e = await refused(buf);
      expect(e.message).toMatch(bad === '3221225472' ? /truncated: the entry "a.bin" declares 3221225472 bytes/ : /not a whole number/);
      expect(await largestAllocation(() => readTarIndex(file(buf)))).toBeLessThanOrEqual(TAR_LIMITS.metaBytes);
    }
    const twice = Buffer.from('10 size=1\n10 size=2\n');
    await refused(tarArchive([tarHeader({ name: 'p', type: 'x', size: twice.length }), tarBody(twice), ...plain('a', 'x')]), /sets "size" twice/);
  });

  it('refuses malformed pax records', async () => {
    for (const body of ['11 size=5\n', '8 size=5\n', '10 size=5X', 'x size=5\n', '6 abc\n', '10 size=5\n\0\0junk']) {
      const b = Buffer.from(body);
      await refused(tarArchive([tarHeader({ name: 'p', type: 'x', size: b.length }), tarBody(b), ...plain('a', 'hello')]), /pax header/);
    }
  });

  it('reads GNU base-256 sizes and refuses negative or absurd ones', async () => {
    const ok = tarArchive(plain('b256', 'hello world', { sizeField: base256(11) }));
    const [e] = await readTarIndex(file(ok));
    expect(e).toMatchObject({ name: 'b256', size: 11 });
    expect((await readEntry(file(ok), e!)).toString()).toBe('hello world');
    await refused(tarArchive(plain('huge', 'x', { sizeField: base256(2n ** 70n) })), /too large to be real/);
    await refused(tarArchive(plain('neg', 'x', { sizeField: Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]) })), /negative or malformed base-256/);
    await refused(tarArchive(plain('big', 'x', { sizeField: base256(3 * GiB) })), /declares 3221225472 bytes but only/);
  });

  it('refuses a size field that is not octal, and archives that end early', async () => {
    await refused(tarArchive(plain('a', 'x', { sizeField: Buffer.from('0000000001x\0') })), /not an octal number/);
    await refused(Buffer.concat([...plain('a', 'hello'), Buffer.alloc(100)]), /ends inside a header/);
    const cut = Buffer.concat(plain('a', Buffer.alloc(5000, 1))).subarray(0, 2048);
    await refused(cut, /truncated/);
    await refused(tarArchive([tarHeader({ name: 'p', type: 'x', size: 10 }), tarBody(Buffer.from('10 size=5\n'))], { endBlocks: 2 }), /belongs to no entry/);
    const two = paxBody({ path: 'a' });
    await refused(tarArchive([tarHeader({ name: 'p', type: 'x', size: two.length }), tarBody(two), tarHeader({ name: 'p', type: 'x', size: two.length }), tarBody(two), ...plain('a', 'x')]), /two pax headers/);
  });
});

describe('tar reader: names and types', () => {
  it('refuses absolute, climbing, control-character, backslash, overlong and non-UTF-8 names', async () => {
    for (const [name, why] of [
      ['/etc/passwd', /absolute path/],
      ['../x', /climbs out/],
      ['a/../../x', /climbs out/],
      ['a\nb', /control characters/],
      ['a\u0085b', /control characters/],
      ['a\\..\\b', /backslash/],
      ['a//b', /not a plain relative path/],
      ['a/./b', /not a plain relative path/],
    ] as const) {
      await refused(tarArchive(plain(name, 'x')), why);
      // The same through a pax path record, which is not limited to 100 bytes.
      const pax = paxBody({ path: name });
      await refused(tarArchive([tarHeader({ name: 'p', type: 'x', size: pax.length }), tarBody(pax), ...plain('ignored', 'x')]), why);
    }
    const long = paxBody({ path: 'a/'.repeat(600) + 'b' });
    await refused(tarArchive([tarHeader({ name: 'p', type: 'x', size: long.length }), tarBody(long), ...plain('x', 'x')]), /longer than 1024 bytes/);
    const nul = Buffer.from('14 path=a\0bcd\n');
    await refused(tarArchive([tarHeader({ name: 'p', type: 'x', size: nul.length }), tarBody(nul), ...plain('x', 'x')]), /control characters/);
    await refused(tarArchive([tarHeader({ name: Buffer.from([0x61, 0xff, 0xfe]), size: 0 })]), /not valid UTF-8/);
  });

  it('refuses duplicate names, also when spelt differently ("./a" and "a")', async () => {
    await refused(tarArchive([...plain('a', 'x'), ...plain('a', 'y')]), /"a" appears twice/);
    await refused(tarArchive([...plain('./disk.vmdk', 'x'), ...plain('disk.vmdk', 'y')]), /"disk.vmdk" appears twice/);
    await refused(tarArchive([tarHeader({ name: 'd/', type: '5', size: 0 }), ...plain('d', 'y')]), /"d" appears twice/);
  });

  it('refuses links, devices, FIFOs, sparse and unknown entry types', async () => {
    for (const [type, kind] of [
      ['1', 'a hard link'],
      ['2', 'a symbolic link'],
      ['3', 'a device'],
      ['4', 'a device'],
      ['6', 'a FIFO'],
      ['S', 'a sparse file'],
      ['Z', 'of unsupported type'],
    ] as const) {
      await refused(tarArchive([tarHeader({ name: 'disk.vmdk', type, size: 0, linkname: '/etc/shadow' })]), new RegExp(`"disk.vmdk" is ${kind}`));
    }
    const sparse = paxBody({ 'GNU.sparse.major': '1' });
    await refused(tarArchive([tarHeader({ name: 'p', type: 'x', size: sparse.length }), tarBody(sparse), ...plain('a', 'x')]), /sparse/);
  });

  it('checks global pax headers: a comment is fine, a path or size is refused', async () => {
    const comment = paxBody({ comment: 'b6276f6142b291b1097594f6bb7560cfd0f8dc49' });
    const idx = await readTarIndex(file(tarArchive([tarHeader({ name: 'pax_global_header', type: 'g', size: comment.length }), tarBody(comment), ...plain('a', 'x')])));
    expect(idx.map((e) => e.name)).toEqual(['a']);
    const sized = paxBody({ size: '1' });
    await refused(tarArchive([tarHeader({ name: 'g', type: 'g', size: sized.length }), tarBody(sized), ...plain('a', 'x')]), /global pax header sets "size"/);
  });

  it('bounds the number of entries', async () => {
    const many = tarArchive(Array.from({ length: 6 }, (_, i) => tarHeader({ name: `f${i}`, size: 0 })));
    expect(await readTarIndex(file(many), { maxEntries: 6 })).toHaveLength(6);
    await expect(readTarIndex(file(many), { maxEntries: 5 })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/more than 5 entries/) });
    const tooMany = tarArchive(Array.from({ length: TAR_LIMITS.entries + 1 }, (_, i) => tarHeader({ name: `f${i}`, size: 0 })));
    await refused(tooMany, new RegExp(`more than ${TAR_LIMITS.entries} entries`));
  });

  it('refuses bad checksums and archive paths that are not regular files (a FIFO would hang the reader)', async () => {
    const bad = tarArchive(plain('a', 'x'));
    bad[0] = 0x62;
    await refused(bad, /bad header checksum/);
    const fifo = path.join(dir, 'fifo.ova');
    execFileSync('mkfifo', [fifo]);
    await expect(readTarIndex(fifo)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/not a regular file/) });
    await expect(readTarIndex(dir)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(readTarIndex(path.join(dir, 'missing.ova'))).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('tar reader: what real tars write', () => {
  it('reads GNU long names, pax paths, ustar prefixes, directories and "./" prefixes', async () => {
    const src = path.join(dir, 'src');
    const long = 'n'.repeat(150);
    const deep = 'p'.repeat(80);
    mkdirSync(path.join(src, 'sub'), { recursive: true });
    mkdirSync(path.join(src, deep), { recursive: true });
    writeFileSync(path.join(src, 'sub', long), 'long');
    writeFileSync(path.join(src, deep, 'n'.repeat(90)), 'split');
    writeFileSync(path.join(src, 'top.ovf'), '<x/>');
    const gnu = path.join(dir, 'gnu.tar');
    execFileSync('tar', ['--format=gnu', '-cf', gnu, '-C', src, '.']);
    const idx = await readTarIndex(gnu);
    expect(idx.map((e) => e.name).sort()).toEqual([`${deep}/${'n'.repeat(90)}`, `sub/${long}`, 'top.ovf']);
    const posix = path.join(dir, 'posix.tar');
    execFileSync('tar', ['--format=posix', '-cf', posix, '-C', src, 'sub', 'top.ovf']);
    expect((await readTarIndex(posix)).map((e) => e.name).sort()).toEqual([`sub/${long}`, 'top.ovf']);
    const ustar = path.join(dir, 'ustar.tar');
    execFileSync('tar', ['--format=ustar', '-cf', ustar, '-C', src, deep, 'top.ovf']);
    const u = await readTarIndex(ustar);
    expect(u.map((e) => e.name).sort()).toEqual([`${deep}/${'n'.repeat(90)}`, 'top.ovf']);
    expect((await readEntry(ustar, u.find((e) => e.name.startsWith(deep))!)).toString()).toBe('split');
  });

  it('round-trips TarWriter output and hashes with sha1/sha256/sha512; the writer refuses unsafe names', async () => {
    const f = path.join(dir, 'w.tar');
    const w = await TarWriter.create(f);
    await w.add('a.ovf', Buffer.from('descriptor'));
    await w.add('disks/d.vmdk', Buffer.alloc(1000, 3));
    await expect(w.add('../evil', Buffer.from('x'))).rejects.toMatchObject({ code: 'EINTERNAL' });
    await w.close();
    const idx = await readTarIndex(f);
    expect(idx.map((e) => [e.name, e.size])).toEqual([
      ['a.ovf', 10],
      ['disks/d.vmdk', 1000],
    ]);
    for (const algo of ['sha1', 'sha256', 'sha512'] as const) {
      expect(await hashEntry(f, idx[1]!, algo)).toBe(createHash(algo).update(Buffer.alloc(1000, 3)).digest('hex'));
    }
    await expect(readEntry(f, idx[1]!, 999)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/too large/) });
  });
});

function base256(v: number | bigint): Buffer {
  const b = Buffer.alloc(12);
  let x = BigInt(v);
  for (let i = 11; i >= 1; i--) {
    b[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  b[0] = 0x80;
  return b;
}

// ---- fixtures: raw tar bytes, so the tests can say exactly what a hostile archive holds ------------------

interface HeaderSpec {
  name: string | Buffer;
  size: number;
  type?: string;
  /** The raw 12-byte size field (base-256, garbage…) instead of the octal `size`. */
  sizeField?: Buffer;
  linkname?: string;
}

function tarHeader(o: HeaderSpec): Buffer {
  const b = Buffer.alloc(512);
  (Buffer.isBuffer(o.name) ? o.name : Buffer.from(o.name)).copy(b, 0, 0, 100);
  b.write('0000644\0', 100, 'latin1');
  b.write('0000000\0', 108, 'latin1');
  b.write('0000000\0', 116, 'latin1');
  if (o.sizeField) o.sizeField.copy(b, 124, 0, 12);
  else b.write(o.size.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  b.write('00000000000\0', 136, 'latin1');
  b.write('        ', 148, 'latin1');
  b.write(o.type ?? '0', 156, 'latin1');
  if (o.linkname) b.write(o.linkname, 157, 'latin1');
  b.write('ustar\0', 257, 'latin1');
  b.write('00', 263, 'latin1');
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

function tarBody(data: Buffer): Buffer {
  const rest = (512 - (data.length % 512)) % 512;
  return Buffer.concat([data, Buffer.alloc(rest)]);
}

function paxBody(records: Record<string, string>): Buffer {
  return Buffer.concat(
    Object.entries(records).map(([k, v]) => {
      const body = ` ${k}=${v}\n`;
      let len = Buffer.byteLength(body) + 1;
      while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
      return Buffer.from(`${len}${body}`);
    }),
  );
}

function tarArchive(parts: Buffer[], o: { endBlocks?: number } = {}): Buffer {
  return Buffer.concat([...parts, Buffer.alloc(512 * (o.endBlocks ?? 2))]);
}
