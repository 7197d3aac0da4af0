// A small POSIX tar (ustar + pax size headers) writer and random-access reader: export archives and OVA files.
import { createReadStream, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { VmdeskError, ErrorCode } from '../../api/errors.js';

const BLOCK = 512;
/** The largest size an octal ustar field holds (8 GiB - 1); bigger entries get a pax "size" record. */
const USTAR_MAX = 0o77777777777;

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function header(name: string, size: number, type: '0' | 'x' = '0', mtime = Math.floor(Date.now() / 1000)): Buffer {
  const b = Buffer.alloc(BLOCK, 0);
  const nameBuf = Buffer.from(name, 'utf8');
  if (nameBuf.length > 100) throw new VmdeskError(ErrorCode.internal, `tar entry name too long: ${name}`);
  nameBuf.copy(b, 0);
  b.write(octal(0o644, 8), 100, 'ascii');
  b.write(octal(0, 8), 108, 'ascii');
  b.write(octal(0, 8), 116, 'ascii');
  b.write(octal(Math.min(size, USTAR_MAX), 12), 124, 'ascii');
  b.write(octal(mtime, 12), 136, 'ascii');
  b.write('        ', 148, 'ascii'); // checksum is computed with this field as spaces
  b.write(type, 156, 'ascii');
  b.write('ustar\0', 257, 'ascii');
  b.write('00', 263, 'ascii');
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(octal(sum, 7) + ' ', 148, 'ascii');
  return b;
}

function paxRecord(key: string, value: string): string {
  // "LEN key=value\n" where LEN counts itself: iterate until the length is stable.
  const body = ` ${key}=${value}\n`;
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return `${len}${body}`;
}

/** Appends entries to a tar file; each entry's sha256 is computed while it is written. */
export class TarWriter {
  private constructor(private fh: FileHandle, private pos = 0) {}

  static async create(file: string): Promise<TarWriter> {
    return new TarWriter(await fs.open(file, 'wx', 0o644));
  }

  private async write(buf: Buffer): Promise<void> {
    await this.fh.write(buf, 0, buf.length, this.pos);
    this.pos += buf.length;
  }

  /** Adds an entry of known size from a buffer or a stream; resolves with its sha256 (hex). */
  async add(name: string, data: Buffer | { size: number; stream: Readable }, onBytes?: (done: number, total: number) => void): Promise<{ size: number; sha256: string }> {
    const size = Buffer.isBuffer(data) ? data.length : data.size;
    if (size > USTAR_MAX) {
      const pax = Buffer.from(paxRecord('size', String(size)), 'utf8');
      await this.write(header(`PaxHeaders/${name}`.slice(0, 100), pax.length, 'x'));
      await this.write(pad(pax));
    }
    await this.write(header(name, size));
    const hash = createHash('sha256');
    let written = 0;
    if (Buffer.isBuffer(data)) {
      hash.update(data);
      await this.write(data);
      written = data.length;
    } else {
      for await (const chunk of data.stream) {
        const c = chunk as Buffer;
        hash.update(c);
        await this.write(c);
        written += c.length;
        onBytes?.(written, size);
      }
    }
    if (written !== size) throw new VmdeskError(ErrorCode.internal, `tar entry ${name}: expected ${size} bytes, got ${written}`);
    const rest = (BLOCK - (size % BLOCK)) % BLOCK;
    if (rest) await this.write(Buffer.alloc(rest));
    return { size, sha256: hash.digest('hex') };
  }

  async close(): Promise<void> {
    await this.write(Buffer.alloc(BLOCK * 2));
    await this.fh.sync();
    await this.fh.close();
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

function pad(b: Buffer): Buffer {
  const rest = (BLOCK - (b.length % BLOCK)) % BLOCK;
  return rest ? Buffer.concat([b, Buffer.alloc(rest)]) : b;
}

export interface TarEntry {
  name: string;
  size: number;
  /** Byte offset of the entry's data in the archive. */
  offset: number;
  type: string;
}

function parseOctal(b: Buffer, start: number, len: number): number {
  const field = b.subarray(start, start + len);
  if (field[0]! & 0x80) {
    // GNU base-256 for big numbers.
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  const s = field.toString('ascii').replace(/\0.*$/s, '').trim();
  return s ? Number.parseInt(s, 8) : 0;
}

function cstr(b: Buffer, start: number, len: number): string {
  const f = b.subarray(start, start + len);
  const z = f.indexOf(0);
  return f.subarray(0, z < 0 ? f.length : z).toString('utf8');
}

/** Lists the regular-file entries of a tar archive without reading their contents. */
export async function readTarIndex(file: string): Promise<TarEntry[]> {
  const fh = await fs.open(file, 'r');
  try {
    const { size: total } = await fh.stat();
    const out: TarEntry[] = [];
    let pos = 0;
    let paxSize: number | undefined;
    let paxPath: string | undefined;
    let longName: string | undefined;
    const h = Buffer.alloc(BLOCK);
    while (pos + BLOCK <= total) {
      await fh.read(h, 0, BLOCK, pos);
      if (h.every((x) => x === 0)) break;
      let sum = 0;
      for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
      if (sum !== parseOctal(h, 148, 8)) throw new VmdeskError(ErrorCode.invalid, `${file} is not a tar archive (bad header checksum at byte ${pos})`);
      const type = String.fromCharCode(h[156] || 48);
      let size = parseOctal(h, 124, 12);
      const prefix = cstr(h, 345, 155);
      let name = (prefix ? prefix + '/' : '') + cstr(h, 0, 100);
      const dataAt = pos + BLOCK;
      if (type === 'x' || type === 'L') {
        const body = Buffer.alloc(size);
        await fh.read(body, 0, size, dataAt);
        if (type === 'L') longName = body.toString('utf8').replace(/\0.*$/s, '');
        else
          for (const rec of body.toString('utf8').split('\n')) {
            const m = /^\d+ ([^=]+)=(.*)$/.exec(rec);
            if (m?.[1] === 'size') paxSize = Number(m[2]);
            if (m?.[1] === 'path') paxPath = m[2];
          }
      } else {
        if (paxSize !== undefined) size = paxSize;
        name = paxPath ?? longName ?? name;
        paxSize = paxPath = longName = undefined;
        if (type === '0' || type === '\0' || type === '7') out.push({ name, size, offset: dataAt, type });
      }
      pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
      if (pos > total) throw new VmdeskError(ErrorCode.invalid, `${file} is truncated (entry "${name}" runs past the end)`);
    }
    return out;
  } finally {
    await fh.close();
  }
}

export function entryStream(file: string, e: TarEntry): Readable {
  if (e.size === 0) return createReadStream(file, { start: 1, end: 0 });
  return createReadStream(file, { start: e.offset, end: e.offset + e.size - 1, highWaterMark: 1024 * 1024 });
}

export async function readEntry(file: string, e: TarEntry, max = 64 * 1024 * 1024): Promise<Buffer> {
  if (e.size > max) throw new VmdeskError(ErrorCode.invalid, `archive entry ${e.name} is too large (${e.size} bytes)`);
  const fh = await fs.open(file, 'r');
  try {
    const b = Buffer.alloc(e.size);
    await fh.read(b, 0, e.size, e.offset);
    return b;
  } finally {
    await fh.close();
  }
}

export async function hashEntry(file: string, e: TarEntry, algo: 'sha256' | 'sha1' = 'sha256', onBytes?: (done: number) => void): Promise<string> {
  const h = createHash(algo);
  let done = 0;
  for await (const c of entryStream(file, e)) {
    h.update(c as Buffer);
    done += (c as Buffer).length;
    onBytes?.(done);
  }
  return h.digest('hex');
}
