// Snapshot files and the snapshot writer, without /dev/kvm, through the addon's __test hooks:
// - the zero-page decision: pages holding data are always saved, whatever mincore() says about residency
//   (swapped-out pages used to be saved as zeros), and only all-zero pages become holes;
// - restore validation: a snapshot file is untrusted input, so truncated, mis-checksummed and hostile files
//   (absurd sizes, q.num = 1000, oversized FIFOs, malformed records) are refused with EINVAL and a message
//   naming the problem, before anything would reach KVM.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  HDR, addonFile, hooksSkipReason, nativeWithHooks, readSnapshot, repoRoot, writeSnapshotFile,
  type RewriteOptions, type SnapshotParts, type TestHooks,
} from '../native-guests/hardening.js';

const skip = hooksSkipReason();
if (skip) console.log(`[native-hardening-snapshot] skipped: ${skip}`);

const PAGE = 4096;
const PRESENT = 1n << 63n;
const SWAPPED = 1n << 62n;

let hooks: TestHooks;
let dir: string;
beforeAll(() => {
  if (skip) return;
  hooks = nativeWithHooks().__test;
  dir = mkdtempSync(path.join(tmpdir(), 'vmd-snaphard-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function readAt(file: string, offset: number, len: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(len);
    readSync(fd, b, 0, len, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

const memOffsetOf = (file: string) => Number(readAt(file, HDR.memOffset, 8).readBigUInt64LE(0));

/** Guest pages with data in them, and pages the guest wrote zeros to, for the memory tests. */
function memoryPattern(): { writes: { gpa: number; data: Buffer }[]; dataPages: number[] } {
  const full = Buffer.alloc(PAGE);
  for (let i = 0; i < PAGE; i++) full[i] = (i * 7 + 1) & 0xff || 1;
  const lastByte = Buffer.alloc(PAGE);
  lastByte[PAGE - 1] = 0x80;
  const firstByte = Buffer.alloc(PAGE);
  firstByte[0] = 1;
  const run = Buffer.alloc(3000 * PAGE, 0xab); // longer than one 2048-page write
  const writes = [
    { gpa: 5 * PAGE, data: full },
    { gpa: 6 * PAGE, data: lastByte },
    { gpa: 9 * PAGE, data: Buffer.alloc(PAGE) }, // touched, but all zero: must still become a hole
    { gpa: 10 * PAGE, data: firstByte },
    { gpa: 100 * PAGE, data: run },
    { gpa: 5000 * PAGE, data: Buffer.alloc(64 * PAGE) }, // a touched zero run
  ];
  const dataPages = [5, 6, 10, ...Array.from({ length: 3000 }, (_, i) => 100 + i)];
  return { writes, dataPages };
}

/** The snapshot's memory equals the writes, and holes cover the rest (allocated size close to the data). */
function expectMemory(file: string, memBytes: number, writes: { gpa: number; data: Buffer }[], dataPages: number): void {
  const off = memOffsetOf(file);
  const expected = Buffer.alloc(memBytes);
  for (const w of writes) w.data.copy(expected, w.gpa);
  const got = readAt(file, off, memBytes);
  for (let p = 0; p < memBytes / PAGE; p++) {
    const a = got.subarray(p * PAGE, (p + 1) * PAGE), b = expected.subarray(p * PAGE, (p + 1) * PAGE);
    if (!a.equals(b)) throw new Error(`guest page ${p} differs in the snapshot (saved ${a.some((x) => x !== 0) ? 'other data' : 'as zeros'})`);
  }
  const st = statSync(file);
  expect(st.size).toBe(off + memBytes);
  expect(st.blocks * 512).toBeGreaterThanOrEqual(dataPages * PAGE);
  expect(st.blocks * 512).toBeLessThanOrEqual(off + dataPages * PAGE + 256 * 1024);
}

describe.skipIf(!!skip)('snapshot zero-page decision', () => {
  it('saves every page with a non-zero byte and holes every all-zero page, whether present or swapped out', () => {
    const zero = Buffer.alloc(PAGE);
    const pages = [0, 1, 2047, 2048, 4095].map((i) => {
      const b = Buffer.alloc(PAGE);
      b[i] = i === 0 ? 0xff : 1;
      return b;
    });
    // Present, swapped out (with swap type/offset bits), present with a PFN, migrating (reported as swap).
    const entries = [PRESENT, SWAPPED | 0x1234n, PRESENT | 0x1abcden | (1n << 56n), SWAPPED | (1n << 55n)];
    for (const entry of entries) {
      for (const anonymous of [true, false]) {
        for (const p of pages) expect(hooks.pageHasData(p, entry, anonymous)).toBe(true);
        expect(hooks.pageHasData(zero, entry, anonymous)).toBe(false);
      }
    }
  });

  it('reads every page of a restored (file-backed) memory, populated or not: the content decides', () => {
    const data = Buffer.alloc(PAGE, 3);
    for (const entry of [0n, PRESENT, SWAPPED]) {
      expect(hooks.pageHasData(data, entry, false)).toBe(true);
      expect(hooks.pageHasData(Buffer.alloc(PAGE), entry, false)).toBe(false);
    }
  });

  it('skips reading only anonymous pages that were never touched (neither present nor swapped)', () => {
    expect(hooks.pageHasData(Buffer.alloc(PAGE), 0n, true)).toBe(false);
  });

  it('writes a sparse snapshot of a booted VM\'s memory: data pages saved, zero pages (touched or not) as holes', () => {
    const { writes, dataPages } = memoryPattern();
    const file = path.join(dir, 'mem.snap');
    const memBytes = 64 << 20;
    hooks.snapshotMemory(file, { memBytes, writes });
    expectMemory(file, memBytes, writes, dataPages.length);
  });

  it('places memory above the 3-4 GiB hole after the low memory, and keeps it sparse', () => {
    const file = path.join(dir, 'high.snap');
    const low = 3 * 1024 * 1024 * 1024;
    const page = Buffer.alloc(PAGE, 0x42);
    hooks.snapshotMemory(file, { memBytes: low + (32 << 20), writes: [{ gpa: 4 * 1024 * 1024 * 1024 + 8 * PAGE, data: page }, { gpa: 2 * PAGE, data: page }] });
    const off = memOffsetOf(file);
    expect(readAt(file, off + low + 8 * PAGE, PAGE)).toEqual(page);
    expect(readAt(file, off + 2 * PAGE, PAGE)).toEqual(page);
    expect(readAt(file, off + low + 7 * PAGE, PAGE)).toEqual(Buffer.alloc(PAGE));
    expect(statSync(file).blocks * 512).toBeLessThan(off + 256 * 1024);
  });

  it('saves pages the kernel swapped out (exercised for real where the host has swap)', () => {
    const { writes, dataPages } = memoryPattern();
    const file = path.join(dir, 'swapped.snap');
    const memBytes = 64 << 20;
    const r = hooks.snapshotMemory(file, { memBytes, writes, pageOut: true });
    if (r.swappedPages === 0) console.log('[native-hardening-snapshot] no swap on this host: MADV_PAGEOUT left the pages resident');
    expectMemory(file, memBytes, writes, dataPages.length);
  });

  describe('with residency faked in the process (LD_PRELOAD)', () => {
    let shim: string | undefined;
    beforeAll(() => {
      shim = path.join(dir, 'residency-shim.so');
      const r = spawnSync('gcc', ['-shared', '-fPIC', '-O2', '-o', shim, path.join(repoRoot, 'test/native-guests/residency-shim.c'), '-ldl'], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`cannot build the LD_PRELOAD shim: ${r.error?.message ?? r.stderr}`);
    });

    function snapshotInChild(file: string, env: Record<string, string>): void {
      const { writes } = memoryPattern();
      const data = path.join(dir, 'writes.bin');
      writeFileSync(data, Buffer.concat(writes.map((w) => w.data)));
      const script = `
        const all = require('node:fs').readFileSync(${JSON.stringify(data)});
        let at = 0;
        const writes = ${JSON.stringify(writes.map((w) => ({ gpa: w.gpa, len: w.data.length })))}
          .map((w) => ({ gpa: w.gpa, data: all.subarray(at, (at += w.len)) }));
        require(${JSON.stringify(addonFile)}).__test.snapshotMemory(${JSON.stringify(file)}, { memBytes: ${64 << 20}, writes });`;
      const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, LD_PRELOAD: shim!, ...env }, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`child failed (${r.error?.message ?? `status ${r.status}`}): ${r.stderr}`);
    }

    it('saves every data page even when mincore() calls all of them not resident (as for swapped-out memory)', () => {
      const { writes, dataPages } = memoryPattern();
      const file = path.join(dir, 'mincore-lies.snap');
      snapshotInChild(file, { VMDESK_SHIM_MINCORE: 'absent' });
      expectMemory(file, 64 << 20, writes, dataPages.length);
    });

    it('falls back to reading every page when /proc/self/pagemap cannot be opened, and stays sparse', () => {
      const { writes, dataPages } = memoryPattern();
      const file = path.join(dir, 'no-pagemap.snap');
      snapshotInChild(file, { VMDESK_SHIM_PAGEMAP: 'deny', VMDESK_SHIM_MINCORE: 'absent' });
      expectMemory(file, 64 << 20, writes, dataPages.length);
    });
  });
});

describe.skipIf(!!skip)('snapshot restore validation (untrusted files, no KVM)', () => {
  let base: string;
  let disk: string;
  let parts: SnapshotParts;
  let n = 0;

  beforeAll(() => {
    disk = path.join(dir, 'disk.img');
    writeFileSync(disk, Buffer.alloc(1 << 20));
    base = path.join(dir, 'base.snap');
    hooks.writeSyntheticSnapshot(base, { cpus: 2, memBytes: 16 << 20, disks: [{ path: disk }] });
    parts = readSnapshot(base);
  });

  /** A copy of the base snapshot with records changed (undefined deletes) and the file rewritten. */
  function variant(records: Record<string, Buffer | string | undefined>, o: RewriteOptions = {}): string {
    const copy: SnapshotParts = { header: parts.header, records: new Map(parts.records), memBytes: parts.memBytes };
    for (const [k, v] of Object.entries(records)) {
      if (v === undefined) copy.records.delete(k);
      else copy.records.set(k, typeof v === 'string' ? Buffer.from(v, 'latin1') : v);
    }
    const file = path.join(dir, `variant-${n++}.snap`);
    writeSnapshotFile(file, copy, o);
    return file;
  }

  function refused(file: string, message: RegExp): void {
    let err: { code?: string; message?: string } | undefined;
    try {
      hooks.checkSnapshot(file);
    } catch (e) {
      err = e as { code: string; message: string };
    }
    expect(err, 'the snapshot was accepted').toBeDefined();
    expect(err!.message).toMatch(message);
    expect(err!.code).toBe('EINVAL');
  }

  /** The record with one field patched. */
  function patched(key: string, at: number, write: (b: Buffer, at: number) => void): Buffer {
    const b = Buffer.from(parts.records.get(key)!);
    write(b, at);
    return b;
  }

  it('accepts the structurally valid snapshot it starts from, and the same file rewritten by the test', () => {
    expect(hooks.checkSnapshot(base)).toEqual({ cpus: 2, memBytes: 16 << 20, disks: [{ path: disk, readOnly: false }] });
    expect(hooks.checkSnapshot(variant({}))).toEqual({ cpus: 2, memBytes: 16 << 20, disks: [{ path: disk, readOnly: false }] });
    expect(hooks.checkSnapshot(base, [{ path: disk, readOnly: true }]).disks).toEqual([{ path: disk, readOnly: true }]);
  });

  describe('truncated and corrupted files', () => {
    it('refuses a file cut inside its header', () => refused(variant({}, { size: 30 }), /is truncated/));
    it('refuses a file cut inside its state', () => {
      const state = 4096 + 200;
      refused(variant({}, { size: state }), /does not follow its state|truncated/);
    });
    it('refuses a file cut inside guest memory', () => refused(variant({}, { size: memOffsetOf(base) + (8 << 20) }), /is truncated: \d+ bytes, its memory ends at/));
    it('refuses a wrong state checksum', () => refused(variant({}, { after: (b) => { b[4096 + 20]! ^= 0xff; } }), /state checksum mismatch/));
    it('refuses a wrong header checksum', () => refused(variant({}, { after: (b) => { b[HDR.memBytes + 1]! ^= 1; } }), /header checksum mismatch/));
    it('refuses another format version', () => refused(variant({}, { header: { version: 2n } }), /format version 2; this build reads version 1/));
  });

  describe('absurd sizes in a correctly checksummed header', () => {
    it('refuses a state size near 2^64 (kPage + stateBytes would wrap)', () => {
      refused(variant({}, { header: { stateBytes: (1n << 64n) - 4096n + 8n } }), /state claims \d+ bytes/);
    });
    it('refuses a state size beyond the sanity limit', () => refused(variant({}, { header: { stateBytes: 1n << 40n } }), /state claims/));
    it('refuses a memory size that wraps memOffset + memBytes past 2^64', () => {
      const memBytes = (1n << 64n) - 4096n;
      refused(variant({ config: `2 ${memBytes} 1` }, { header: { memBytes } }), /guest memory size \d+ is not a whole number of pages between/);
    });
    it('refuses a memory size larger than the file', () => {
      refused(variant({ config: `2 ${64 << 20} 1` }, { header: { memBytes: BigInt(64 << 20) } }), /is truncated/);
    });
    it('refuses a memory size that is not whole pages', () => {
      refused(variant({ config: `2 ${(16 << 20) + 100} 1` }, { header: { memBytes: BigInt((16 << 20) + 100) }, size: 64 << 20 }), /not a whole number of pages/);
    });
    it('refuses a misaligned memory offset', () => refused(variant({}, { header: { memOffset: BigInt(memOffsetOf(base) + 8) } }), /memory offset/));
  });

  describe('malformed record framing', () => {
    const rec = (key: string, len: bigint, value = Buffer.alloc(0)): Buffer => {
      const k = Buffer.from(key);
      const b = Buffer.alloc(4 + k.length + 8);
      b.writeUInt32LE(k.length, 0);
      k.copy(b, 4);
      b.writeBigUInt64LE(len, 4 + k.length);
      return Buffer.concat([b, value]);
    };
    it('refuses a record claiming 2^63 bytes', () => refused(variant({}, { state: rec('config', 1n << 63n, Buffer.from('x')) }), /claims \d+ bytes/));
    it('refuses a record name of 4 GiB', () => {
      const b = Buffer.alloc(16);
      b.writeUInt32LE(0xffffffff, 0);
      refused(variant({}, { state: b }), /record name length 4294967295/);
    });
    it('refuses a record that appears twice', () => {
      const once = readFileSync(base).subarray(4096, 4096 + Number(parts.header.readBigUInt64LE(HDR.stateBytes)));
      refused(variant({}, { state: Buffer.concat([once, rec('serial', 0n)]) }), /record 'serial' appears twice/);
    });
    it('refuses a state that ends inside a record', () => refused(variant({}, { state: Buffer.from([1, 0]) }), /cut off/));
  });

  describe('configuration and vCPU records', () => {
    it.each([
      ['100000 vCPUs', `100000 ${16 << 20} 1`, /100000 vCPUs \(1 to 255\)/],
      ['256 vCPUs', `256 ${16 << 20} 1`, /256 vCPUs/],
      ['0 vCPUs', `0 ${16 << 20} 1`, /0 vCPUs/],
      ['a negative vCPU count', `-1 ${16 << 20} 1`, /unreadable configuration/],
      ['trailing garbage', `2 ${16 << 20} 1 rm -rf`, /unreadable configuration/],
      ['a number past 2^64', `2 99999999999999999999999 1`, /unreadable configuration/],
      ['1000 disks', `2 ${16 << 20} 1000`, /1000 disks \(at most 8\)/],
      ['a memory size other than the header\'s', `2 ${32 << 20} 1`, /disagree on the memory size/],
    ])('refuses %s', (_what, config, message) => refused(variant({ config }), message));

    it('refuses a missing vCPU register record before anything reaches KVM', () => refused(variant({ 'vcpu1.regs': undefined }), /missing record 'vcpu1.regs'/));
    it('refuses a register record of the wrong size', () => refused(variant({ 'vcpu0.sregs': Buffer.alloc(10) }), /'vcpu0.sregs' has size 10, expected \d+/));
    it('refuses a vCPU with neither xsave nor fpu state', () => refused(variant({ 'vcpu0.xsave': undefined }), /missing record 'vcpu0.xsave' \(or 'vcpu0.fpu'\)/));
    it('refuses a cpuid record that is not whole entries', () => refused(variant({ 'vcpu0.cpuid': Buffer.alloc(41) }), /'vcpu0.cpuid' has 41 bytes/));
    it('refuses an empty cpuid record', () => refused(variant({ 'vcpu0.cpuid': Buffer.alloc(0) }), /'vcpu0.cpuid' has 0 bytes/));
    it('refuses an absurd number of MSRs', () => refused(variant({ 'vcpu1.msrs': Buffer.alloc(5000 * 16) }), /'vcpu1.msrs' has 80000 bytes/));
    it('refuses an irqchip record of the wrong size', () => refused(variant({ irqchip2: Buffer.alloc(8) }), /'irqchip2' has size 8/));
    it('refuses a disk record that is not a path, or a read-only flag that is not 0/1', () => {
      refused(variant({ 'disk0.path': '' }), /'disk0.path' is not a path/);
      refused(variant({ 'disk0.ro': 'yes' }), /'disk0.ro' is not 0 or 1/);
    });
    it('refuses a disk override of another count', () => {
      expect(() => hooks.checkSnapshot(base, [{ path: disk }, { path: disk }])).toThrow(/the snapshot has 1 disks, 2 were given/);
    });
  });

  describe('device records', () => {
    // VirtioBlkState offsets (see native-hardening-virtio.test.ts): queue num at 32, ready 36, desc 40, avail 48, used 56, lastAvail 64.
    it('refuses a virtio queue of 1000 descriptors (q.num > 256 overflowed the chain array)', () => {
      refused(variant({ 'disk0.state': patched('disk0.state', 32, (b, at) => b.writeUInt32LE(1000, at)) }), /disk .* is corrupt: queue size 1000/);
    });
    it('refuses a ready virtio queue whose rings lie outside guest memory', () => {
      const st = Buffer.from(parts.records.get('disk0.state')!);
      st.writeUInt32LE(8, 32);
      st.writeUInt32LE(1, 36);
      st.writeBigUInt64LE(0x1000n, 40);
      st.writeBigUInt64LE(0x2000n, 48);
      st.writeBigUInt64LE(BigInt(16 << 20), 56); // just past the end of memory
      refused(variant({ 'disk0.state': st }), /rings lie outside guest memory/);
      st.writeBigUInt64LE(0x3000n, 56);
      expect(hooks.checkSnapshot(variant({ 'disk0.state': st })).cpus).toBe(2);
      // The same queue with the driver 100 buffers ahead in guest memory: more than a queue's worth.
      const idx = Buffer.alloc(2);
      idx.writeUInt16LE(100, 0);
      refused(variant({ 'disk0.state': st }, { mem: [{ gpa: 0x2000 + 2, data: idx }] }), /queue position 0 is more than a queue behind the driver's 100/);
    });
    it('refuses a serial FIFO longer than its record', () => {
      refused(variant({ serial: patched('serial', 16, (b, at) => b.writeUInt32LE(0xffffffff, at)) }), /serial state is corrupt: input FIFO of 4294967295 bytes/);
    });
    it('refuses a serial FIFO beyond the 64 KiB the UART ever queues', () => {
      const s = Buffer.concat([parts.records.get('serial')!, Buffer.alloc(100000, 0x41)]);
      s.writeUInt32LE(100000, 16);
      refused(variant({ serial: s }), /input FIFO of 100000 bytes/);
    });
    it('refuses a truncated serial record', () => refused(variant({ serial: Buffer.alloc(5) }), /serial state is truncated/));
    it('refuses an i8042 queue longer than the controller ever holds, and a cut-off i8042 record', () => {
      refused(variant({ i8042: Buffer.concat([parts.records.get('i8042')!, Buffer.alloc(1000, 0xfa)]) }), /i8042 state is corrupt: 1004 bytes/);
      refused(variant({ i8042: Buffer.alloc(2) }), /i8042 state is corrupt: 2 bytes/);
      refused(variant({ i8042: Buffer.from([0x45, 0x99, 0, 0]) }), /pending command 153/);
    });
  });
});
