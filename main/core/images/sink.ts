// Where a download's bytes go: the partial file, written in order at explicit positions while the next bytes
// are still arriving. The download loop hands chunks over and goes back to the socket (and the hash); it waits
// for the disk (`room`) only when more than `maxPending` bytes are queued. Chunks are gathered to `batch` bytes and
// written with one writev (no copy into a bigger buffer). Every `syncEvery` bytes a background fdatasync
// starts, so the one fsync at the end finds little left to flush. The first write error is kept and thrown
// from the next call; after `drain` every queued byte is in the file (or the error is thrown).
import type { FileHandle } from 'node:fs/promises';

export interface SinkOptions {
  /** Chunks are gathered to this many bytes per write. */
  batch: number;
  /** Bytes queued and not yet written before `push` waits for the disk. */
  maxPending: number;
  /** A background fdatasync after every this many bytes written (0: none). */
  syncEvery: number;
}

export const SINK_DEFAULTS: SinkOptions = { batch: 1024 * 1024, maxPending: 16 * 1024 * 1024, syncEvery: 32 * 1024 * 1024 };

/** Past this many pieces a batch is joined into one buffer first (writev's IOV_MAX is 1024 on Linux). */
const MAX_IOV = 64;

export class FileSink {
  private batch: Buffer[] = [];
  private batchBytes = 0;
  /** Where the next queued write goes. */
  private next: number;
  private pending = 0;
  private writes: Promise<void> = Promise.resolve();
  /** The queued writes, oldest first (each removes itself when done). */
  private readonly inflight: Promise<void>[] = [];
  private syncs: Promise<void> = Promise.resolve();
  private syncedTo: number;
  private failure: unknown;
  private readonly opts: SinkOptions;

  constructor(
    private readonly fh: FileHandle,
    start: number,
    opts: Partial<SinkOptions> = {},
  ) {
    this.next = start;
    this.syncedTo = start;
    this.opts = { ...SINK_DEFAULTS, ...opts };
  }

  /** Bytes handed over so far (written, queued or gathered), counted from the start of the file. */
  get position(): number {
    return this.next + this.batchBytes;
  }

  /** Takes a chunk (kept, not copied: the caller must not reuse it); true when a batch was queued. */
  push(chunk: Buffer): boolean {
    this.check();
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (this.batchBytes < this.opts.batch) return false;
    this.queue();
    return true;
  }

  /** More is queued than the disk has taken: wait for `room` before pushing more. */
  get full(): boolean {
    return this.pending >= this.opts.maxPending;
  }

  /** Resolves once less than `maxPending` is queued; throws a write error. */
  async room(): Promise<void> {
    while (this.pending >= this.opts.maxPending && this.inflight.length) await this.inflight[0];
    this.check();
  }

  /** Queues what is gathered as one write. */
  private queue(): void {
    if (this.batchBytes) {
      const bufs = this.batch.length > MAX_IOV ? [Buffer.concat(this.batch, this.batchBytes)] : this.batch;
      const len = this.batchBytes;
      const at = this.next;
      this.batch = [];
      this.batchBytes = 0;
      this.next += len;
      this.pending += len;
      this.writes = this.writes.then(async () => {
        try {
          if (this.failure === undefined) await writeFully(this.fh, bufs, at, len);
        } catch (e) {
          this.failure ??= e;
        } finally {
          this.pending -= len;
          this.inflight.shift();
        }
      });
      this.inflight.push(this.writes);
      if (this.opts.syncEvery && this.next - this.syncedTo >= this.opts.syncEvery) {
        this.syncedTo = this.next;
        // After the writes queued so far, alongside the ones that follow.
        const upTo = this.writes;
        this.syncs = this.syncs.then(async () => {
          await upTo;
          if (this.failure === undefined) await this.fh.datasync().catch((e: unknown) => void (this.failure ??= e));
        });
      }
    }
  }

  /** Everything handed over is in the file (not necessarily on the disk: see FileHandle.sync). */
  async drain(): Promise<void> {
    this.check();
    this.queue();
    await this.writes;
    await this.syncs;
    this.check();
  }

  /** Waits for queued writes without throwing (before closing or removing the file after a failure). */
  async settle(): Promise<void> {
    this.batch = [];
    this.batchBytes = 0;
    await this.writes;
    await this.syncs;
  }

  private check(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}

async function writeFully(fh: FileHandle, bufs: Buffer[], at: number, len: number): Promise<void> {
  const { bytesWritten } = await fh.writev(bufs, at);
  if (bytesWritten === len) return;
  // A short write (rare on files): the rest, from one buffer.
  const rest = Buffer.concat(bufs, len).subarray(bytesWritten);
  let done = 0;
  while (done < rest.length) {
    const r = await fh.write(rest, done, rest.length - done, at + bytesWritten + done);
    if (r.bytesWritten <= 0) throw new Error(`short write at byte ${at + bytesWritten + done}`);
    done += r.bytesWritten;
  }
}
