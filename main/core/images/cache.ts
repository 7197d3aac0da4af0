// The image cache of a library (<home>/images, private to the user) and the downloads that fill it: one
// download per image at a time, joined by every caller that asks for it, with progress events (bytes, speed,
// ETA), pause (the partial file is kept and resumed with an HTTP Range request), cancel (it is removed), and
// automatic resumption after a dropped connection. Nothing enters the cache before its checksum matches the
// upstream checksum file (or the user's checksum) and it has passed the image gate; a failed check removes
// the partial file.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import type { Readable } from 'node:stream';
import path from 'node:path';
import type { Dispatcher } from 'undici';
import { CachedImage, type DownloadInfo, type GalleryEntry, type ImageListing, type Verification } from '../../api/images.js';
import type { VmEvent } from '../../api/events.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { fsyncDir, writeJsonAtomic } from '../../platform/atomic.js';
import { ensurePrivateDir } from '../../platform/paths.js';
import { admitImage } from './gate.js';
import { ImageSources, allEntries, findEntry } from './catalogue.js';
import { FileSink } from './sink.js';
import { fetchSmall, makeDispatcher, open, responseHeader, describeHttpError, type HttpOptions } from './http.js';
import { SIGNATURE_MAX_BYTES, SUMS_MAX_BYTES, clearsignedBody, gpgVerify, parseSums, pickFile } from './sums.js';

/** Progress events at most this often per download. */
const TICK_MS = 250;
/** Speed is measured over this window. */
const SPEED_WINDOW_MS = 3000;
/** Reads of a partial file being resumed go in steps of this size. */
const READ_STEP = 1024 * 1024;
/** The response body's buffer: bigger than undici's 64 KiB so the socket is paused less often. */
const BODY_BUFFER = 1024 * 1024;
/** Dropped connections resumed automatically before the download fails (it can still be resumed by hand). */
const AUTO_RESUMES = 3;

interface Expected {
  algorithm: 'sha256' | 'sha512';
  hex: string;
  /** The image's URL (the catalogue's, with {file} filled in). */
  url: string;
  verification: Omit<Verification, 'digest'>;
  /** A signature over the image itself, to check after the download. */
  imageSignature?: { url: string; keyring: string };
}

interface PartialMeta {
  url: string;
  expected: string;
  etag?: string;
  lastModified?: string;
}

class Stop extends Error {
  constructor(readonly why: 'pause' | 'cancel') {
    super(why);
  }
}

interface Download {
  info: DownloadInfo;
  controller: AbortController;
  stop?: 'pause' | 'cancel';
  promise: Promise<CachedImage>;
  listeners: Set<(info: DownloadInfo) => void>;
}

export interface ImageServiceOptions extends HttpOptions {
  /** Resolves the VMs that use a cached file (CD-ROMs): such an image cannot be removed. */
  usersOf?: (file: string) => Promise<string[]>;
}

export class ImageService {
  readonly dir: string;
  readonly cacheDir: string;
  readonly partialDir: string;
  readonly sources: ImageSources;
  private readonly downloads = new Map<string, Download>();
  /** The last state of downloads that ended paused or failed, for lists. */
  private readonly ended = new Map<string, DownloadInfo>();
  private readonly holds = new Map<string, number>();
  private dispatcher: Dispatcher | undefined;

  constructor(
    home: string,
    private readonly emit: (ev: VmEvent) => void,
    private readonly opts: ImageServiceOptions = {},
  ) {
    this.dir = path.join(home, 'images');
    this.cacheDir = path.join(this.dir, 'cache');
    this.partialDir = path.join(this.dir, 'partial');
    this.sources = new ImageSources(this.dir);
  }

  private ensureDirs(): void {
    ensurePrivateDir(this.dir);
    ensurePrivateDir(this.cacheDir);
    ensurePrivateDir(this.partialDir);
  }

  private http(): Dispatcher {
    return (this.dispatcher ??= makeDispatcher(this.opts));
  }

  /** Downloads running, or copies out of the cache in progress. */
  busy(): boolean {
    return this.downloads.size > 0 || this.holds.size > 0;
  }

  async close(): Promise<void> {
    for (const d of this.downloads.values()) {
      d.stop = 'pause';
      d.controller.abort();
    }
    await Promise.allSettled([...this.downloads.values()].map((d) => d.promise));
    await this.dispatcher?.close().catch(() => {});
  }

  private files(id: string, format: GalleryEntry['format']) {
    return {
      image: path.join(this.cacheDir, `${id}.${format === 'iso' ? 'iso' : format === 'raw' ? 'img' : 'qcow2'}`),
      meta: path.join(this.cacheDir, `${id}.json`),
      part: path.join(this.partialDir, `${id}.part`),
      partMeta: path.join(this.partialDir, `${id}.json`),
    };
  }

  // ---- the cache ---------------------------------------------------------------------------------------

  /** A cached image, if its record and its file agree; a record without its file is dropped. */
  async cached(id: string): Promise<CachedImage | undefined> {
    const meta = path.join(this.cacheDir, `${id}.json`);
    let rec: CachedImage;
    try {
      const text = await fs.readFile(meta, 'utf8');
      const r = CachedImage.safeParse(JSON.parse(text));
      if (!r.success) return undefined;
      rec = r.data;
    } catch {
      return undefined;
    }
    // The record names its file; only one inside the cache folder is accepted.
    if (path.dirname(rec.file) !== this.cacheDir || rec.id !== id) return undefined;
    const st = await fs.stat(rec.file).catch(() => undefined);
    if (!st?.isFile() || st.size !== rec.bytes) return undefined;
    return rec;
  }

  async list(): Promise<ImageListing> {
    const out: ImageListing['images'] = [];
    let total = 0;
    for (const { entry, source } of await allEntries(this.sources)) {
      const cached = await this.cached(entry.id);
      if (cached) total += cached.bytes;
      const part = await fs.stat(path.join(this.partialDir, `${entry.id}.part`)).catch(() => undefined);
      if (part) total += part.size;
      const dl = this.downloads.get(entry.id)?.info ?? this.ended.get(entry.id);
      const usedBy = cached && this.opts.usersOf ? await this.opts.usersOf(cached.file) : [];
      out.push({ entry, source, ...(cached ? { cached } : {}), ...(part ? { partialBytes: part.size } : {}), ...(dl ? { download: { ...dl } } : {}), usedBy });
    }
    const { builtinCatalogue } = await import('./catalogue.js');
    return { cacheDir: this.cacheDir, catalogueVersion: builtinCatalogue().catalogueVersion, cacheBytes: total, images: out };
  }

  /** Keeps an image from being removed while a VM is made from it. */
  async hold(id: string): Promise<() => void> {
    this.holds.set(id, (this.holds.get(id) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.holds.get(id) ?? 1) - 1;
      if (n <= 0) this.holds.delete(id);
      else this.holds.set(id, n);
    };
  }

  /** Removes cached images (and partial downloads); `ids` undefined removes every one. */
  async remove(ids: string[] | undefined): Promise<{ removed: string[]; freedBytes: number }> {
    this.ensureDirs();
    const targets = ids ?? [...new Set([...(await fs.readdir(this.cacheDir)), ...(await fs.readdir(this.partialDir))].map((n) => n.replace(/\.(json|part|qcow2|img|iso)$/, '')))].filter((n) => /^[a-z0-9][a-z0-9._-]*$/.test(n));
    const removed: string[] = [];
    let freed = 0;
    for (const id of targets) {
      if (this.downloads.has(id)) throw new VmdeskError(ErrorCode.busy, `"${id}" is being downloaded; cancel it first (vmdesk images cancel ${id})`);
      if (this.holds.has(id)) throw new VmdeskError(ErrorCode.busy, `a VM is being made from "${id}" right now; try again when it is done`);
      const cached = await this.cached(id);
      if (cached && this.opts.usersOf) {
        const users = await this.opts.usersOf(cached.file);
        if (users.length) throw new VmdeskError(ErrorCode.busy, `"${id}" is the CD-ROM of ${users.map((u) => `"${u}"`).join(', ')}; eject it first (vmdesk set NAME --no-iso)`);
      }
    }
    for (const id of targets) {
      let any = false;
      for (const ext of ['qcow2', 'img', 'iso', 'json']) {
        const f = path.join(this.cacheDir, `${id}.${ext}`);
        const st = await fs.stat(f).catch(() => undefined);
        if (!st) continue;
        if (ext !== 'json') freed += st.size;
        await fs.rm(f, { force: true });
        any = true;
      }
      for (const ext of ['part', 'json']) {
        const f = path.join(this.partialDir, `${id}.${ext}`);
        const st = await fs.stat(f).catch(() => undefined);
        if (!st) continue;
        if (ext === 'part') freed += st.size;
        await fs.rm(f, { force: true });
        any = true;
      }
      this.ended.delete(id);
      if (any) {
        removed.push(id);
        this.emit({ type: 'image-changed', image: id });
      }
    }
    if (ids && ids.length && !removed.length) throw new VmdeskError(ErrorCode.notFound, `nothing cached for ${ids.map((i) => `"${i}"`).join(', ')}`);
    return { removed, freedBytes: freed };
  }

  // ---- downloads ---------------------------------------------------------------------------------------

  /**
   * The image in the cache: at once when it is there, else downloaded (or the running download joined).
   * A paused download rejects with ECANCELED saying so; pull again to resume it.
   */
  async pull(id: string, onProgress?: (info: DownloadInfo) => void): Promise<CachedImage> {
    const { entry } = await findEntry(this.sources, id);
    if (entry.kind === 'vendor-page') throw new VmdeskError(ErrorCode.invalid, `"${id}" cannot be downloaded by VMDesk: ${entry.note ?? `get it from ${entry.url}`}`);
    const have = await this.cached(id);
    if (have) return have;
    let d = this.downloads.get(id);
    if (!d) d = this.start(entry);
    if (onProgress) {
      const fn = onProgress;
      d.listeners.add(fn);
      const dd = d;
      return d.promise.finally(() => dd.listeners.delete(fn));
    }
    return d.promise;
  }

  pause(id: string): DownloadInfo {
    const d = this.downloads.get(id);
    if (!d) throw new VmdeskError(ErrorCode.state, `"${id}" is not being downloaded`);
    d.stop = 'pause';
    d.controller.abort(new Stop('pause'));
    return { ...d.info };
  }

  /** Stops a download and removes its partial file; a paused one's partial file goes too. */
  async cancel(id: string): Promise<{ cancelled: boolean }> {
    const d = this.downloads.get(id);
    if (d) {
      d.stop = 'cancel';
      d.controller.abort(new Stop('cancel'));
      await d.promise.catch(() => {});
      return { cancelled: true };
    }
    const part = path.join(this.partialDir, `${id}.part`);
    const had = await fs.stat(part).then(() => true, () => false);
    await fs.rm(part, { force: true });
    await fs.rm(path.join(this.partialDir, `${id}.json`), { force: true });
    if (this.ended.delete(id) || had) this.emit({ type: 'image-changed', image: id });
    if (!had) throw new VmdeskError(ErrorCode.state, `"${id}" is not being downloaded`);
    return { cancelled: true };
  }

  private start(entry: GalleryEntry): Download {
    this.ensureDirs();
    const info: DownloadInfo = { image: entry.id, state: 'connecting', bytes: 0, bytesPerSecond: 0, startedAt: new Date().toISOString() };
    const d: Download = { info, controller: new AbortController(), listeners: new Set(), promise: undefined as unknown as Promise<CachedImage> };
    this.downloads.set(entry.id, d);
    this.ended.delete(entry.id);
    d.promise = this.run(d, entry).then(
      (rec) => {
        this.downloads.delete(entry.id);
        this.update(d, { state: 'done', etaSeconds: 0 }, true);
        this.emit({ type: 'image-changed', image: entry.id });
        return rec;
      },
      (e: unknown) => {
        this.downloads.delete(entry.id);
        const stop = d.stop;
        if (stop === 'pause') {
          this.update(d, { state: 'paused', bytesPerSecond: 0, etaSeconds: undefined }, true);
          this.ended.set(entry.id, { ...d.info });
          throw new VmdeskError(ErrorCode.cancelled, `the download of "${entry.id}" was paused at ${d.info.bytes} of ${d.info.totalBytes ?? '?'} bytes; pull it again to resume`);
        }
        if (stop === 'cancel') {
          this.update(d, { state: 'cancelled', bytesPerSecond: 0, etaSeconds: undefined }, true);
          this.emit({ type: 'image-changed', image: entry.id });
          throw new VmdeskError(ErrorCode.cancelled, `the download of "${entry.id}" was cancelled`);
        }
        const err = e instanceof VmdeskError ? e : describeHttpError(e, entry.url);
        this.update(d, { state: 'failed', error: err.message, bytesPerSecond: 0, etaSeconds: undefined }, true);
        this.ended.set(entry.id, { ...d.info });
        this.emit({ type: 'image-changed', image: entry.id });
        throw err;
      },
    );
    // Nobody may be listening (a GUI started it and left): an unhandled rejection must not end the daemon.
    d.promise.catch(() => {});
    return d;
  }

  private lastTick = new WeakMap<Download, number>();

  private update(d: Download, patch: Partial<DownloadInfo>, force = false): void {
    Object.assign(d.info, patch);
    for (const k of Object.keys(d.info) as (keyof DownloadInfo)[]) if (d.info[k] === undefined) delete d.info[k];
    const now = Date.now();
    if (!force && now - (this.lastTick.get(d) ?? 0) < TICK_MS) return;
    this.lastTick.set(d, now);
    const snapshot = { ...d.info };
    for (const fn of d.listeners) fn(snapshot);
    this.emit({ type: 'image-download', download: snapshot });
  }

  private checkStop(d: Download): void {
    if (d.stop) throw new Stop(d.stop);
  }

  /** What the image must hash to, from the user's checksum or the upstream checksum file (its signature checked where possible). */
  private async expected(entry: GalleryEntry, signal: AbortSignal): Promise<Expected> {
    const v = entry.verify!;
    if ('checksum' in v) {
      const [algorithm, hex] = v.checksum.split(':') as ['sha256' | 'sha512', string];
      return { algorithm, hex, url: entry.url, verification: { algorithm, source: 'user-checksum', signature: 'none', summary: `${algorithm} checked against the checksum you gave` } };
    }
    const sumsRaw = await fetchSmall(this.http(), v.sums, SUMS_MAX_BYTES, signal);
    let text = sumsRaw.toString('utf8');
    let signature: Verification['signature'] = 'unsigned';
    let sigNote = 'upstream does not sign its checksum file';
    let imageSignature: Expected['imageSignature'];
    const sig = v.signature;
    const sumsName = path.posix.basename(new URL(v.sums).pathname);
    if (sig) {
      const keyring = sig.keyring && (await fs.stat(sig.keyring).then((s) => s.isFile(), () => false)) ? sig.keyring : undefined;
      if (!keyring) {
        signature = 'unchecked';
        sigNote = sig.keyring
          ? `upstream signs it, but the keyring ${sig.keyring} is not installed${sig.package ? ` (Debian package ${sig.package})` : ''}, so the signature was NOT checked`
          : 'upstream signs it, but VMDesk has no packaged key for it, so the signature was NOT checked';
        if (sig.type === 'clearsigned') text = clearsignedBody(text);
      } else if (sig.type === 'detached') {
        const sigBytes = await fetchSmall(this.http(), sig.url!, SIGNATURE_MAX_BYTES, signal);
        const r = await gpgVerify({ keyring, data: sumsRaw, signature: sigBytes, what: sumsName });
        signature = 'signed';
        sigNote = `its OpenPGP signature was checked with gpgv against ${keyring} (key ${r.fingerprint})`;
      } else if (sig.type === 'clearsigned') {
        const r = await gpgVerify({ keyring, data: sumsRaw, what: sumsName });
        text = r.text ?? '';
        signature = 'signed';
        sigNote = `its OpenPGP signature was checked with gpgv against ${keyring} (key ${r.fingerprint})`;
      } else {
        imageSignature = { url: sig.url!, keyring };
        signature = 'signed';
        sigNote = `the image's own OpenPGP signature is checked with gpgv against ${keyring}`;
      }
    }
    const sums = parseSums(text, v.algorithm);
    let file: string | undefined;
    if (entry.file) {
      file = pickFile(sums, entry.file);
      if (!file) throw new VmdeskError(ErrorCode.notFound, `${sumsName} lists no file matching ${entry.file} (has upstream moved on? the gallery may need an update)`);
    } else {
      file = decodeURIComponent(path.posix.basename(new URL(entry.url).pathname));
    }
    const hex = sums.get(file);
    if (!hex) throw new VmdeskError(ErrorCode.notFound, `${sumsName} has no ${v.algorithm} checksum for ${file}`);
    const url = entry.url.replace('{file}', encodeURIComponent(file));
    const summary =
      signature === 'signed'
        ? `${v.algorithm} checked against ${sumsName}; ${sigNote}`
        : `${v.algorithm} checked against ${sumsName} (fetched over ${new URL(v.sums).protocol === 'https:' ? 'HTTPS' : 'plain HTTP'}); ${sigNote}`;
    return { algorithm: v.algorithm, hex, url, verification: { algorithm: v.algorithm, source: 'sums-file', signature, summary }, ...(imageSignature ? { imageSignature } : {}) };
  }

  private async readPartialMeta(file: string): Promise<PartialMeta | undefined> {
    try {
      const j = JSON.parse(await fs.readFile(file, 'utf8')) as PartialMeta;
      if (typeof j.url !== 'string' || typeof j.expected !== 'string') return undefined;
      return j;
    } catch {
      return undefined;
    }
  }

  private async run(d: Download, entry: GalleryEntry): Promise<CachedImage> {
    const signal = d.controller.signal;
    const max = entry.maxBytes!;
    const f = this.files(entry.id, entry.format);
    this.update(d, {}, true);
    const exp = await this.expected(entry, signal);
    this.checkStop(d);
    const expectedKey = `${exp.algorithm}:${exp.hex}`;
    // A partial file of the same URL and checksum is continued; anything else starts over.
    let meta = await this.readPartialMeta(f.partMeta);
    let offset = 0;
    if (meta && meta.url === exp.url && meta.expected === expectedKey) offset = (await fs.stat(f.part).catch(() => undefined))?.size ?? 0;
    if (offset > max) offset = 0;
    if (!offset) {
      meta = { url: exp.url, expected: expectedKey };
      await fs.rm(f.part, { force: true });
    }
    let hash = createHash(exp.algorithm);
    if (offset) await hashFile(f.part, offset, hash, signal);
    const fh = await fs.open(f.part, offset ? 'r+' : 'w', 0o600);
    let bytes = offset;
    /** Writes behind the download (positions are explicit: the descriptor's own offset is not reset by truncate). */
    let sink = new FileSink(fh, offset);
    const resumedFrom = offset || undefined;
    const samples: { t: number; b: number }[] = [{ t: Date.now(), b: bytes }];
    try {
      await fh.truncate(offset);
      for (let attempt = 0; ; attempt++) {
        this.checkStop(d);
        const headers: Record<string, string> = {};
        if (bytes > 0) {
          headers.range = `bytes=${bytes}-`;
          const validator = meta?.etag && !meta.etag.startsWith('W/') ? meta.etag : meta?.lastModified;
          if (validator) headers['if-range'] = validator;
        }
        let res;
        try {
          res = await open(this.http(), exp.url, { headers, signal, accept: [416], highWaterMark: BODY_BUFFER });
        } catch (e) {
          if (d.stop) throw new Stop(d.stop);
          if (attempt < AUTO_RESUMES && isTransient(e)) {
            await sleep(500 * (attempt + 1), signal);
            continue;
          }
          throw e;
        }
        let total: number | undefined;
        const len = Number(responseHeader(res.headers, 'content-length'));
        if (res.status === 416) {
          await res.body.dump().catch(() => {});
          const m = /^bytes \*\/(\d+)$/.exec(responseHeader(res.headers, 'content-range') ?? '');
          if (m && Number(m[1]) === bytes) break; // everything was already here
          await restart();
          continue;
        }
        if (res.status === 206) {
          const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(responseHeader(res.headers, 'content-range') ?? '');
          if (!m || Number(m[1]) !== bytes) {
            await res.body.dump().catch(() => {});
            await restart();
            continue;
          }
          total = m[3] === '*' ? undefined : Number(m[3]);
        } else {
          // 200: the whole file (the server ignored the range, or the file changed since): start over.
          if (bytes > 0) await restart();
          total = Number.isFinite(len) ? len : undefined;
        }
        if (total !== undefined && total > max) {
          await res.body.dump().catch(() => {});
          throw new VmdeskError(ErrorCode.invalid, `${exp.url} is ${total} bytes, more than the ${max} bytes allowed for "${entry.id}"; nothing was kept`);
        }
        const etag = responseHeader(res.headers, 'etag');
        const lastModified = responseHeader(res.headers, 'last-modified');
        meta = { url: exp.url, expected: expectedKey, ...(etag ? { etag } : {}), ...(lastModified ? { lastModified } : {}) };
        await writeJsonAtomic(f.partMeta, meta);
        this.update(d, { state: 'running', bytes, totalBytes: total, ...(resumedFrom ? { resumedFrom } : {}) }, true);
        try {
          await eachChunk(res.body, (c) => {
            bytes += c.length;
            if (bytes > max) throw new VmdeskError(ErrorCode.invalid, `${exp.url} sends more than the ${max} bytes allowed for "${entry.id}"; nothing was kept`);
            // Hashed as it arrives, written behind (the sink keeps the chunk; undici does not reuse it).
            hash.update(c);
            if (sink.push(c)) {
              const now = Date.now();
              samples.push({ t: now, b: bytes });
              while (samples.length > 2 && now - samples[0]!.t > SPEED_WINDOW_MS) samples.shift();
              const first = samples[0]!;
              const speed = now > first.t ? ((bytes - first.b) * 1000) / (now - first.t) : 0;
              this.update(d, { bytes, bytesPerSecond: Math.round(speed), etaSeconds: total && speed > 0 ? Math.ceil((total - bytes) / speed) : undefined });
            }
            return sink.full ? sink.room() : undefined;
          });
          await sink.drain();
        } catch (e) {
          // What arrived is written before anything else (resuming continues after it); a failed write ends it.
          await sink.drain().catch((w: unknown) => {
            throw writeError(w, f.part);
          });
          if (d.stop) throw new Stop(d.stop);
          if (e instanceof VmdeskError) throw e;
          if (attempt < AUTO_RESUMES && isTransient(e)) {
            await sleep(500 * (attempt + 1), signal);
            continue;
          }
          throw describeHttpError(e, exp.url);
        }
        if (total !== undefined && bytes < total) {
          // The server closed the connection early: continue from here.
          if (attempt < AUTO_RESUMES) continue;
          throw new VmdeskError(ErrorCode.host, `${exp.url} ended after ${bytes} of ${total} bytes, ${AUTO_RESUMES + 1} times; pull again to resume`);
        }
        break;
      }
      await sink.drain().catch((w: unknown) => {
        throw writeError(w, f.part);
      });
      await fh.sync();
    } catch (e) {
      await sink.settle();
      await fh.close().catch(() => {});
      if (e instanceof Stop || d.stop) {
        if (d.stop === 'cancel') await this.dropPartial(f);
        throw e instanceof Stop ? e : new Stop(d.stop!);
      }
      // A refusal (too large) or a failure that resuming cannot mend removes what was kept; a network
      // failure keeps the partial file for the next pull.
      if (e instanceof VmdeskError && e.code === ErrorCode.invalid) await this.dropPartial(f);
      throw e;
    }
    await fh.close();
    this.update(d, { state: 'verifying', bytes, totalBytes: bytes, bytesPerSecond: 0, etaSeconds: 0 }, true);
    const digest = hash.digest('hex');
    if (digest !== exp.hex) {
      await this.dropPartial(f);
      throw new VmdeskError(ErrorCode.invalid, `the download of "${entry.id}" does not match its ${exp.algorithm} checksum (expected ${exp.hex.slice(0, 16)}…, got ${digest.slice(0, 16)}…); the file was removed`, [`expected ${exp.hex}`, `got      ${digest}`, `from     ${exp.url}`]);
    }
    if (exp.imageSignature) {
      try {
        const sigBytes = await fetchSmall(this.http(), exp.imageSignature.url, SIGNATURE_MAX_BYTES, signal);
        await gpgVerify({ keyring: exp.imageSignature.keyring, data: { file: f.part }, signature: sigBytes, what: entry.id });
      } catch (e) {
        await this.dropPartial(f);
        throw e;
      }
    }
    // The bytes are the ones upstream published; what they are is still decided by the gate.
    let admitted;
    try {
      admitted = await admitImage({ path: f.part }, { what: `the downloaded image "${entry.id}"`, purpose: entry.format === 'iso' ? 'cdrom' : 'disk', ...(entry.format === 'iso' ? {} : { stated: entry.format }) });
      if (entry.format === 'iso' && admitted.inspection.format !== 'iso') throw new VmdeskError(ErrorCode.invalid, `the downloaded image "${entry.id}" should be an ISO 9660 image but is not`);
    } catch (e) {
      await this.dropPartial(f);
      throw e;
    }
    await fs.rename(f.part, f.image);
    const rec: CachedImage = {
      id: entry.id,
      file: f.image,
      format: entry.format,
      bytes,
      virtualSize: admitted.virtualSize,
      url: exp.url,
      fetchedAt: new Date().toISOString(),
      verification: { ...exp.verification, digest },
    };
    await writeJsonAtomic(f.meta, rec);
    await fs.rm(f.partMeta, { force: true });
    await fsyncDir(this.cacheDir);
    return rec;

    async function restart(): Promise<void> {
      bytes = 0;
      await sink.drain();
      sink = new FileSink(fh, 0);
      hash = createHash(exp.algorithm);
      await fh.truncate(0);
      samples.splice(0, samples.length, { t: Date.now(), b: 0 });
    }
  }

  private async dropPartial(f: { part: string; partMeta: string }): Promise<void> {
    await fs.rm(f.part, { force: true });
    await fs.rm(f.partMeta, { force: true });
  }
}

/** Feeds the first `bytes` of a file into a hash (a resumed download's earlier part). */
async function hashFile(file: string, bytes: number, hash: Hash, signal: AbortSignal): Promise<void> {
  const rs = createReadStream(file, { start: 0, end: bytes - 1, highWaterMark: READ_STEP, signal });
  for await (const c of rs) hash.update(c as Buffer);
}

/**
 * Every chunk of a response body to `onChunk` as it came off the socket (flowing mode: chunks are never joined
 * into a bigger buffer, as reading a paused stream does). A promise from `onChunk` pauses the body until it
 * settles; a throw or a rejection ends the body and rejects.
 */
function eachChunk(body: Readable, onChunk: (c: Buffer) => Promise<void> | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = false;
    const fail = (e: unknown) => {
      if (done) return;
      done = true;
      body.off('data', onData);
      body.destroy();
      reject(e);
    };
    const onData = (c: Buffer) => {
      if (done) return;
      let wait: Promise<void> | undefined;
      try {
        wait = onChunk(c);
      } catch (e) {
        fail(e);
        return;
      }
      if (wait) {
        body.pause();
        wait.then(() => {
          if (!done) body.resume();
        }, fail);
      }
    };
    body.on('data', onData);
    body.on('error', fail);
    body.once('end', () => {
      if (done) return;
      done = true;
      resolve();
    });
    body.once('close', () => fail(Object.assign(new Error('the response ended early'), { code: 'UND_ERR_SOCKET' })));
  });
}

/** A failed write of the partial file, said as such (not as a network failure). */
function writeError(e: unknown, file: string): VmdeskError {
  if (e instanceof VmdeskError) return e;
  const code = (e as NodeJS.ErrnoException).code ?? '';
  if (code === 'ENOSPC' || code === 'EDQUOT') return new VmdeskError(ErrorCode.noSpace, `the disk holding the image cache is full (writing ${file}); free some space and pull again to resume`);
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return new VmdeskError(ErrorCode.permission, `cannot write ${file} (${code})`);
  return new VmdeskError(ErrorCode.host, `writing ${file} failed: ${(e as Error).message ?? String(e)}`);
}

function isTransient(e: unknown): boolean {
  if (e instanceof VmdeskError) return e.code === ErrorCode.host || e.code === ErrorCode.timeout;
  const code = (e as { code?: string }).code ?? '';
  return /^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|UND_ERR_SOCKET|UND_ERR_BODY_TIMEOUT|UND_ERR_HEADERS_TIMEOUT|UND_ERR_CONNECT_TIMEOUT|UND_ERR_CLOSED)$/.test(code) || (e as Error)?.name === 'SocketError';
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });
}
