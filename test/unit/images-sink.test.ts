// The download sink (main/core/images/sink.ts): chunks written in order behind the download, gathered into
// batches, back-pressure once too much is queued, and a failed write reported (not lost) — on real files.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileSink } from '../../main/core/images/sink.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-sink-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('FileSink', () => {
  it('writes every chunk in order, at the offset it starts from, with back-pressure and background syncs', async () => {
    const file = path.join(dir, 'a.part');
    const head = randomBytes(1000);
    writeFileSync(file, head);
    const fh = await open(file, 'r+');
    const sink = new FileSink(fh, head.length, { batch: 10_000, maxPending: 30_000, syncEvery: 50_000 });
    const chunks: Buffer[] = [];
    let queued = 0;
    let waited = 0;
    // Chunks of odd sizes, some of a single byte, some bigger than a batch, and many small ones in a row
    // (more pieces than one writev takes).
    const sizes = [1, 7, 4096, 65_536, 1, 1, 12_345, ...Array.from({ length: 200 }, () => 3), 33_000, 9_999, 10_001];
    for (const n of sizes) {
      const c = randomBytes(n);
      chunks.push(c);
      if (sink.push(c)) queued++;
      if (sink.full) {
        waited++;
        await sink.room();
        expect(sink.full).toBe(false);
      }
    }
    expect(sink.position).toBe(head.length + sizes.reduce((a, b) => a + b, 0));
    await sink.drain();
    await fh.sync();
    await fh.close();
    expect(queued).toBe(4);
    expect(waited).toBeGreaterThan(0);
    expect(readFileSync(file).equals(Buffer.concat([head, ...chunks]))).toBe(true);
  });

  it('reports a failed write from the next call and from drain, and settle still waits for the queue', async () => {
    const file = path.join(dir, 'b.part');
    writeFileSync(file, '');
    // Opened read-only: every write fails with EBADF, as a real disk error would fail it.
    const fh = await open(file, 'r');
    const sink = new FileSink(fh, 0, { batch: 10, maxPending: 1000, syncEvery: 0 });
    expect(sink.push(Buffer.alloc(20))).toBe(true);
    await expect(sink.drain()).rejects.toMatchObject({ code: 'EBADF' });
    expect(() => sink.push(Buffer.alloc(1))).toThrow(/EBADF|bad file/i);
    await sink.settle();
    await fh.close();
    expect(readFileSync(file).length).toBe(0);
  });
});
