// A small POSIX tar (ustar + pax size headers) writer and random-access reader: export archives and OVA files.
// The reader takes archives from anywhere (a downloaded OVA, a .vmdesk file someone sent), so every header
// field is checked before it is used and nothing is ever allocated from a size the archive declares: a 2.5 KB
// archive whose pax header claims 3 GiB once made Node abort (fh.read with a length that is not an int32).
import { createReadStream, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { VmdeskError, ErrorCode } from '../../api/errors.js';

const BLOCK = 512;
/** The largest size an octal ustar field holds (8 GiB - 1); bigger entries get a pax "size" record. */
const USTAR_MAX = 0o77777777777;

/** Bounds on what an archive may declare; generous for OVAs and VMDesk exports, small enough to be harmless. */
export const TAR_LIMITS = {
  /** A pax extended header or a GNU long name: real ones are a few hundred bytes. */
  metaBytes: 64 * 1024,
  /** An entry name, in UTF-8 bytes. */
  nameBytes: 1024,
  /** Entries (files and directories) in one archive. */
  entries: 10_000,
} as const;

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
  private constructor(
    private fh: FileHandle,
    private pos = 0,
  ) {}

  static async create(file: string): Promise<TarWriter> {
    return new TarWriter(await fs.open(file, 'wx', 0o644));
  }

  private async write(buf: Buffer): Promise<void> {
    await this.fh.write(buf, 0, buf.length, this.pos);
    this.pos += buf.length;
  }

  /** Adds an entry of known size from a buffer or a stream; resolves with its sha256 (hex). */
  async add(name: string, data: Buffer | { size: number; stream: Readable }, onBytes?: (done: number, total: number) => void): Promise<{ size: number; sha256: string }> {
    // What this writes, the reader must accept: the same name rules apply.
    let canonical = false;
    try {
      canonical = checkName(name, false, name) === name;
    } catch {
      canonical = false;
    }
    if (!canonical) throw new VmdeskError(ErrorCode.internal, `tar entry name is not a plain relative path: ${name}`);
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

// ---- reader -------------------------------------------------------------------------------------------

export interface TarEntry {
  /** Normalised: no leading "./", no trailing "/", never absolute, never "..". */
  name: string;
  size: number;
  /** Byte offset of the entry's data in the archive. */
  offset: number;
  type: string;
}

function refuse(file: string, what: string): VmdeskError {
  return new VmdeskError(ErrorCode.invalid, `${file} is not a usable tar archive: ${what}`);
}

/** Printable, bounded rendering of a name taken from an archive, for messages. */
function shown(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 80 ? `${clean.slice(0, 77)}...` : clean;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(b: Uint8Array): string | undefined {
  try {
    return utf8.decode(b);
  } catch {
    return undefined;
  }
}

/**
 * A numeric header field: octal digits (leading spaces, then NUL or space terminated), or GNU base-256
 * (first byte 0x80, big-endian). Anything else, negative base-256, or past 2^53 is refused.
 */
function numberField(h: Buffer, start: number, len: number, what: string, file: string): number {
  const f = h.subarray(start, start + len);
  if (f[0] === 0x80) {
    let n = 0n;
    for (let i = 1; i < f.length; i++) n = (n << 8n) | BigInt(f[i]!);
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw refuse(file, `its ${what} field holds a number too large to be real`);
    return Number(n);
  }
  if (f[0]! & 0x80) throw refuse(file, `its ${what} field is a negative or malformed base-256 number`);
  let i = 0;
  while (i < f.length && f[i] === 0x20) i++;
  let n = 0;
  let digits = 0;
  for (; i < f.length && f[i]! >= 0x30 && f[i]! <= 0x37; i++, digits++) n = n * 8 + (f[i]! - 0x30);
  // The rest must be terminators only (NUL or space): "12x" or "1 2" is not a number.
  for (; i < f.length; i++) if (f[i] !== 0 && f[i] !== 0x20) throw refuse(file, `its ${what} field is not an octal number`);
  if (!digits && what !== 'size') throw refuse(file, `its ${what} field is empty`);
  return n;
}

function cstr(b: Buffer, start: number, len: number): Buffer {
  const f = b.subarray(start, start + len);
  const z = f.indexOf(0);
  return z < 0 ? f : f.subarray(0, z);
}

/**
 * Checks and normalises an entry name: relative, no "." or ".." components, no empty components, no
 * control characters or backslashes, bounded length. Returns '' for an archive's root directory ("./").
 */
function checkName(raw: string, isDir: boolean, file: string): string {
  if (!raw) throw refuse(file, 'an entry has an empty name');
  if (Buffer.byteLength(raw, 'utf8') > TAR_LIMITS.nameBytes) throw refuse(file, `an entry name is longer than ${TAR_LIMITS.nameBytes} bytes ("${shown(raw)}")`);
  if (/[\u0000-\u001f\u007f-\u009f]/.test(raw)) throw refuse(file, `the entry name "${shown(raw)}" contains control characters`);
  if (raw.includes('\\')) throw refuse(file, `the entry name "${shown(raw)}" contains a backslash`);
  if (raw.startsWith('/')) throw refuse(file, `the entry "${shown(raw)}" has an absolute path`);
  let n = raw;
  while (n.startsWith('./')) n = n.slice(2);
  if (isDir) n = n.replace(/\/+$/, '');
  if (isDir && (n === '' || n === '.')) return '';
  const parts = n.split('/');
  if (parts.includes('..')) throw refuse(file, `the entry "${shown(raw)}" climbs out of the archive ("..")`);
  if (parts.some((p) => p === '' || p === '.')) throw refuse(file, `the entry name "${shown(raw)}" is not a plain relative path`);
  return n;
}

/** Pax records "LEN key=value\n", each checked: LEN exact, keys unique, UTF-8 throughout. */
function parsePax(body: Buffer, file: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < body.length) {
    if (body[i] === 0) {
      // Some writers pad the body with NULs; anything after the padding is garbage.
      if (body.subarray(i).some((x) => x !== 0)) throw refuse(file, 'a pax header has data after its padding');
      break;
    }
    let j = i;
    while (j < body.length && j - i < 7 && body[j]! >= 0x30 && body[j]! <= 0x39) j++;
    if (j === i || body[j] !== 0x20) throw refuse(file, 'a pax header record has no valid length');
    const len = Number(body.toString('latin1', i, j));
    if (len < j - i + 4 || i + len > body.length || body[i + len - 1] !== 0x0a) throw refuse(file, 'a pax header record has a wrong length');
    const rec = body.subarray(j + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    const key = eq > 0 ? decodeUtf8(rec.subarray(0, eq)) : undefined;
    const value = eq > 0 ? decodeUtf8(rec.subarray(eq + 1)) : undefined;
    if (key === undefined || value === undefined) throw refuse(file, 'a pax header record is not "key=value" in UTF-8');
    if (out.has(key)) throw refuse(file, `a pax header sets "${shown(key)}" twice`);
    out.set(key, value);
    i += len;
  }
  return out;
}

/** The pax "size" value: decimal digits only, a safe integer. */
function paxSize(v: string, file: string): number {
  if (!/^\d{1,16}$/.test(v) || !Number.isSafeInteger(Number(v))) throw refuse(file, `a pax header declares the size "${shown(v)}", which is not a whole number of bytes`);
  return Number(v);
}

async function readFully(fh: FileHandle, buf: Buffer, at: number, file: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, at + done);
    if (bytesRead === 0) throw refuse(file, `it ends early (at byte ${at + done})`);
    done += bytesRead;
  }
}

export interface TarIndexOptions {
  /** At most this many entries (files and directories); TAR_LIMITS.entries by default. */
  maxEntries?: number;
}

/**
 * Lists the regular-file entries of a tar archive without reading their contents. Directories are checked
 * and skipped; links, devices, FIFOs, sparse and unknown entry types, duplicate names, unsafe names and
 * malformed or oversized headers are refused with EINVAL. Reads at most TAR_LIMITS.metaBytes at a time.
 */
export async function readTarIndex(file: string, opts: TarIndexOptions = {}): Promise<TarEntry[]> {
  const maxEntries = opts.maxEntries ?? TAR_LIMITS.entries;
  // Opening a FIFO would block until someone writes to it; a device has no end: only regular files.
  let st;
  try {
    st = await fs.stat(file);
  } catch (e) {
    throw new VmdeskError(ErrorCode.invalid, `${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!st.isFile()) throw new VmdeskError(ErrorCode.invalid, `${file} is not a regular file`);
  const fh = await fs.open(file, 'r');
  try {
    const total = (await fh.stat()).size;
    const out: TarEntry[] = [];
    const seen = new Set<string>();
    let pos = 0;
    let headers = 0;
    // Extended headers ('x' pax, 'L' GNU long name) apply to the next entry only.
    let pending: { size?: number; path?: string; longName?: string; at: number } | undefined;
    const h = Buffer.alloc(BLOCK);
    for (;;) {
      if (pos === total) break; // no end-of-archive blocks: accepted, as GNU tar does
      if (pos + BLOCK > total) throw refuse(file, `it ends inside a header (at byte ${pos})`);
      if (++headers > maxEntries * 3 + 16) throw refuse(file, `it has more than ${maxEntries} entries`);
      await readFully(fh, h, pos, file);
      if (h.every((x) => x === 0)) break;
      let unsigned = 0;
      let signed = 0;
      for (let i = 0; i < BLOCK; i++) {
        const x = i >= 148 && i < 156 ? 32 : h[i]!;
        unsigned += x;
        signed += x > 127 ? x - 256 : x;
      }
      let sum: number | undefined;
      try {
        sum = numberField(h, 148, 8, 'checksum', file);
      } catch {
        sum = undefined;
      }
      if (sum !== unsigned && sum !== signed) throw new VmdeskError(ErrorCode.invalid, `${file} is not a tar archive (bad header checksum at byte ${pos})`);
      const flag = h[156] || 0x30;
      const type = String.fromCharCode(flag);
      const declared = numberField(h, 124, 12, 'size', file);
      const dataAt = pos + BLOCK;
      const remaining = total - dataAt;
      // POSIX ustar has a name prefix at 345; GNU's "ustar  " header keeps other fields there.
      const posix = h.toString('latin1', 257, 263) === 'ustar\0';
      const rawName = (): string => {
        const n = cstr(h, 0, 100);
        const p = posix ? cstr(h, 345, 155) : Buffer.alloc(0);
        const s = decodeUtf8(p.length ? Buffer.concat([p, Buffer.from('/'), n]) : n);
        if (s === undefined) throw refuse(file, `an entry name at byte ${pos} is not valid UTF-8`);
        return s;
      };
      let size = declared;
      if (type === 'x' || type === 'g' || type === 'L' || type === 'K') {
        // Checked against the cap before anything is allocated: the declared size is only a claim.
        if (declared > TAR_LIMITS.metaBytes) throw refuse(file, `an extended header at byte ${pos} declares ${declared} bytes (at most ${TAR_LIMITS.metaBytes})`);
        if (declared > remaining) throw refuse(file, `an extended header at byte ${pos} runs past the end`);
        const body = Buffer.alloc(declared);
        await readFully(fh, body, dataAt, file);
        if (type === 'x') {
          if (pending?.size !== undefined || pending?.path !== undefined) throw refuse(file, `two pax headers precede the entry at byte ${dataAt + declared}`);
          const rec = parsePax(body, file);
          pending ??= { at: pos };
          for (const [k, v] of rec) {
            if (k === 'size') pending.size = paxSize(v, file);
            else if (k === 'path') pending.path = v;
            else if (k.startsWith('GNU.sparse.')) throw refuse(file, 'it holds a sparse entry, which VMDesk does not read');
          }
        } else if (type === 'g') {
          // Global headers (git archive writes one with a comment) may not change names or sizes.
          for (const k of parsePax(body, file).keys()) {
            if (k === 'size' || k === 'path' || k === 'linkpath' || k.startsWith('GNU.sparse.')) throw refuse(file, `a global pax header sets "${shown(k)}"`);
          }
        } else if (type === 'L') {
          if (pending?.longName !== undefined) throw refuse(file, `two long-name headers precede the entry at byte ${dataAt + declared}`);
          const n = decodeUtf8(cstr(body, 0, body.length));
          if (n === undefined) throw refuse(file, `a long entry name at byte ${pos} is not valid UTF-8`);
          pending ??= { at: pos };
          pending.longName = n;
        }
        // 'K' (a link's long target) is read and dropped: the link it belongs to is refused below.
      } else {
        const isFile = type === '0' || type === '7';
        const isDir = type === '5';
        const raw = pending?.path ?? pending?.longName ?? rawName();
        if (pending?.size !== undefined) size = pending.size;
        pending = undefined;
        if (!isFile && !isDir) {
          const kind = type === '1' ? 'a hard link' : type === '2' ? 'a symbolic link' : type === '3' || type === '4' ? 'a device' : type === '6' ? 'a FIFO' : type === 'S' ? 'a sparse file' : `of unsupported type "${shown(type)}"`;
          throw refuse(file, `the entry "${shown(raw)}" is ${kind}; VMDesk reads regular files only`);
        }
        const name = checkName(raw, isDir, file);
        if (isDir && size !== 0) throw refuse(file, `the directory entry "${shown(raw)}" carries data`);
        if (size > remaining) throw refuse(file, `it is truncated: the entry "${shown(raw)}" declares ${size} bytes but only ${Math.max(0, remaining)} follow`);
        if (name) {
          if (seen.has(name)) throw refuse(file, `the entry "${shown(name)}" appears twice`);
          seen.add(name);
          if (seen.size > maxEntries) throw refuse(file, `it has more than ${maxEntries} entries`);
          if (isFile) out.push({ name, size, offset: dataAt, type });
        }
      }
      pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
      if (pos > total) throw refuse(file, `it is truncated (the entry at byte ${dataAt - BLOCK} runs past the end)`);
    }
    if (pending) throw refuse(file, `an extended header at byte ${pending.at} belongs to no entry`);
    return out;
  } finally {
    await fh.close();
  }
}

/** The entries by name (names are unique: readTarIndex refuses duplicates). */
export function indexByName(entries: TarEntry[]): Map<string, TarEntry> {
  return new Map(entries.map((e) => [e.name, e]));
}

export function entryStream(file: string, e: TarEntry): Readable {
  if (e.size === 0) return createReadStream(file, { start: 1, end: 0 });
  return createReadStream(file, { start: e.offset, end: e.offset + e.size - 1, highWaterMark: 1024 * 1024 });
}

export async function readEntry(file: string, e: TarEntry, max = 64 * 1024 * 1024): Promise<Buffer> {
  if (!Number.isSafeInteger(e.size) || e.size < 0 || e.size > max) throw new VmdeskError(ErrorCode.invalid, `archive entry ${e.name} is too large (${e.size} bytes; at most ${max})`);
  const fh = await fs.open(file, 'r');
  try {
    const b = Buffer.alloc(e.size);
    await readFully(fh, b, e.offset, file);
    return b;
  } finally {
    await fh.close();
  }
}

export type HashAlgo = 'sha1' | 'sha256' | 'sha512';

export async function hashEntry(file: string, e: TarEntry, algo: HashAlgo = 'sha256', onBytes?: (done: number) => void): Promise<string> {
  const h = createHash(algo);
  let done = 0;
  for await (const c of entryStream(file, e)) {
    h.update(c as Buffer);
    done += (c as Buffer).length;
    onBytes?.(done);
  }
  if (done !== e.size) throw new VmdeskError(ErrorCode.invalid, `archive entry ${e.name} is truncated (${done} of ${e.size} bytes)`);
  return h.digest('hex');
}
