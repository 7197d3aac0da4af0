// virtio-blk treats everything the guest writes as hostile. The real device model (native/src/devices/
// virtio_blk.cc) runs here over plain anonymous memory through the addon's __test hooks, no /dev/kvm needed:
// each test builds rings the way a malicious driver would and checks the device neither overruns, loops,
// nor performs the request, and that it reports the fault the way the virtio spec asks.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { hooksSkipReason, nativeWithHooks, type TestHooks, type TestVirtioBlk } from '../native-guests/hardening.js';

const skip = hooksSkipReason();
if (skip) console.log(`[native-hardening-virtio] skipped: ${skip}`);

// virtio-mmio registers and virtio-blk constants.
const REG = { status: 0x70, queueSel: 0x30, queueNum: 0x38, queueReady: 0x44, notify: 0x50, intStatus: 0x60, intAck: 0x64,
  driverFeatures: 0x20, driverFeaturesSel: 0x24, descLo: 0x80, descHi: 0x84, availLo: 0x90, availHi: 0x94, usedLo: 0xa0, usedHi: 0xa4 };
const NEXT = 1, WRITE = 2, INDIRECT = 4;
const T_IN = 0, T_OUT = 1, T_FLUSH = 4, T_GET_ID = 8;
const S_OK = 0, S_IOERR = 1, S_UNSUPP = 2;
const NEEDS_RESET = 0x40;
const INT_USED = 1, INT_CONFIG = 2;

// Guest-physical layout of the test driver's structures (4 MiB of guest memory).
const MEM = 4 << 20;
const DESC = 0x10000, AVAIL = 0x11000, USED = 0x12000, HDR = 0x20000, DATA = 0x21000, STATUS = 0x80000;
const SECTORS = 2048; // 1 MiB disk

let hooks: TestHooks;
let dir: string;
let disk: string;
let dev: TestVirtioBlk;
let num = 8;
let availIdx = 0;

function sector(n: number): Buffer {
  const b = Buffer.alloc(512, n & 0xff);
  b.write(`SECTOR ${n}`, 0, 'latin1');
  return b;
}

/** What a driver does at probe: reset, features, queue 0 of `size` entries at DESC/AVAIL/USED, DRIVER_OK. */
function probe(size = 8, rings: { desc?: bigint; avail?: bigint; used?: bigint } = {}): void {
  num = size;
  availIdx = 0;
  dev.mmioWrite(REG.status, 0);
  dev.mmioWrite(REG.status, 1 | 2);
  dev.mmioWrite(REG.driverFeaturesSel, 1);
  dev.mmioWrite(REG.driverFeatures, 1); // VIRTIO_F_VERSION_1
  dev.mmioWrite(REG.driverFeaturesSel, 0);
  dev.mmioWrite(REG.driverFeatures, 0);
  dev.mmioWrite(REG.status, 1 | 2 | 8);
  dev.mmioWrite(REG.queueSel, 0);
  dev.mmioWrite(REG.queueNum, size);
  const set = (lo: number, hi: number, v: bigint) => {
    dev.mmioWrite(lo, Number(v & 0xffffffffn));
    dev.mmioWrite(hi, Number(v >> 32n));
  };
  set(REG.descLo, REG.descHi, rings.desc ?? BigInt(DESC));
  set(REG.availLo, REG.availHi, rings.avail ?? BigInt(AVAIL));
  set(REG.usedLo, REG.usedHi, rings.used ?? BigInt(USED));
  dev.mmioWrite(REG.queueReady, 1);
  dev.mmioWrite(REG.status, 1 | 2 | 4 | 8);
}

function desc(i: number, addr: bigint | number, len: number, flags: number, next = 0): void {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(BigInt(addr), 0);
  b.writeUInt32LE(len >>> 0, 8);
  b.writeUInt16LE(flags, 12);
  b.writeUInt16LE(next, 14);
  dev.writeMem(DESC + 16 * i, b);
}

function header(type: number, sec: bigint | number): void {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(type >>> 0, 0);
  b.writeBigUInt64LE(BigInt(sec), 8);
  dev.writeMem(HDR, b);
}

/** Puts heads on the avail ring, moves avail->idx by `advance` (default: one per head) and notifies. */
function submit(heads: number[], advance = heads.length): void {
  for (const h of heads) {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(h & 0xffff, 0);
    dev.writeMem(AVAIL + 4 + 2 * (availIdx % num), b);
    availIdx++;
  }
  availIdx += advance - heads.length;
  const idx = Buffer.alloc(2);
  idx.writeUInt16LE(availIdx & 0xffff, 0);
  dev.writeMem(AVAIL + 2, idx);
  dev.mmioWrite(REG.notify, 0);
}

const usedIdx = () => dev.readMem(USED + 2, 2).readUInt16LE(0);
const usedElem = (i: number) => {
  const b = dev.readMem(USED + 4 + 8 * (i % num), 8);
  return { id: b.readUInt32LE(0), len: b.readUInt32LE(4) };
};
const status = () => dev.readMem(STATUS, 1)[0];
const deviceStatus = () => dev.mmioRead(REG.status);
const lastAvail = () => dev.saveState().readUInt16LE(64);

/** A standard three-descriptor request: header (readable), one data buffer, status byte (writable). */
function request(type: number, sec: bigint | number, dataFlags: number, len = 512, dataAddr: bigint | number = DATA): void {
  header(type, sec);
  desc(0, HDR, 16, NEXT, 1);
  desc(1, dataAddr, len, NEXT | dataFlags, 2);
  desc(2, STATUS, 1, WRITE);
  dev.writeMem(STATUS, Buffer.from([0xff]));
}

/** The device gave up on the queue the spec's way: DEVICE_NEEDS_RESET plus a configuration-change interrupt. */
function expectBroken(usedBefore: number): void {
  expect(deviceStatus() & NEEDS_RESET).toBe(NEEDS_RESET);
  expect(dev.mmioRead(REG.intStatus) & INT_CONFIG).toBe(INT_CONFIG);
  expect(usedIdx()).toBe(usedBefore);
}

describe.skipIf(!!skip)('virtio-blk against a hostile driver (no KVM needed)', () => {
  beforeAll(() => {
    hooks = nativeWithHooks().__test;
    dir = mkdtempSync(path.join(tmpdir(), 'vmd-virtio-'));
    disk = path.join(dir, 'disk.img');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach(() => {
    writeFileSync(disk, Buffer.concat(Array.from({ length: SECTORS }, (_, i) => sector(i))));
    dev = new hooks.VirtioBlk({ memBytes: MEM, disk });
    probe();
  });

  it('serves a well-formed driver: read, write, flush, get-id, with the used lengths the spec asks for', () => {
    request(T_IN, 3, WRITE);
    submit([0]);
    expect(status()).toBe(S_OK);
    expect(dev.readMem(DATA, 512)).toEqual(sector(3));
    expect(usedElem(0)).toEqual({ id: 0, len: 513 });

    dev.writeMem(DATA, Buffer.alloc(512, 0x5a));
    request(T_OUT, 7, 0);
    submit([0]);
    expect(status()).toBe(S_OK);
    expect(readFileSync(disk).subarray(7 * 512, 8 * 512)).toEqual(Buffer.alloc(512, 0x5a));
    expect(usedElem(1)).toEqual({ id: 0, len: 1 });

    request(T_FLUSH, 0, 0);
    submit([0]);
    expect(status()).toBe(S_OK);

    request(T_GET_ID, 0, WRITE, 20);
    submit([0]);
    expect(status()).toBe(S_OK);
    expect(dev.readMem(DATA, 20).toString('latin1')).toBe('vmdesk-microvm-disk\0');
    expect(usedElem(3)).toEqual({ id: 0, len: 21 });
    expect(usedIdx()).toBe(4);
    expect(dev.mmioRead(REG.intStatus)).toBe(INT_USED);
    expect(deviceStatus() & NEEDS_RESET).toBe(0);
  });

  it('accepts the longest legal chain (a full 256-entry queue) and rejects one descriptor more as a loop', () => {
    probe(256);
    header(T_IN, 0);
    desc(0, HDR, 16, NEXT, 1);
    for (let i = 1; i < 255; i++) desc(i, DATA + 512 * (i - 1), 512, NEXT | WRITE, i + 1);
    desc(255, STATUS, 1, WRITE);
    submit([0]);
    expect(status()).toBe(S_OK);
    expect(usedElem(0)).toEqual({ id: 0, len: 254 * 512 + 1 });
    expect(dev.readMem(DATA + 512 * 253, 512)).toEqual(sector(253));

    desc(255, STATUS, 1, WRITE | NEXT, 0); // the 256th descriptor now leads back to the first
    submit([0]);
    expectBroken(1);
  });

  it('stops at an avail index that runs more than a queue ahead instead of walking 65535 bogus entries', () => {
    request(T_IN, 0, WRITE);
    submit([0], 1000);
    expectBroken(0);
    expect(lastAvail()).toBe(0);
    // Broken stays broken: further notifications do nothing until the driver resets the device.
    dev.mmioWrite(REG.status, 1 | 2 | 4 | 8);
    expect(deviceStatus() & NEEDS_RESET).toBe(NEEDS_RESET);
    dev.mmioWrite(REG.notify, 0);
    expect(usedIdx()).toBe(0);
    probe();
    expect(deviceStatus() & NEEDS_RESET).toBe(0);
    request(T_IN, 1, WRITE);
    submit([0]);
    expect(status()).toBe(S_OK);
  });

  it.each([
    ['equal to the queue size', 8],
    ['far outside the queue', 0xffff],
  ])('refuses a head descriptor index %s', (_what, head) => {
    request(T_IN, 0, WRITE);
    submit([head]);
    expectBroken(0);
    expect(dev.readMem(DATA, 16)).toEqual(Buffer.alloc(16));
  });

  it('refuses a next index outside the queue', () => {
    request(T_IN, 0, WRITE);
    desc(1, DATA, 512, NEXT | WRITE, 200);
    submit([0]);
    expectBroken(0);
  });

  it('detects a descriptor loop (0 -> 1 -> 0) and returns', () => {
    request(T_IN, 0, WRITE);
    desc(1, DATA, 512, NEXT | WRITE, 0);
    submit([0]);
    expectBroken(0);
    expect(dev.readMem(DATA, 16)).toEqual(Buffer.alloc(16));
  });

  it('refuses indirect descriptors, which it never offered', () => {
    request(T_IN, 0, WRITE);
    desc(0, HDR, 16, NEXT | INDIRECT, 1);
    submit([0]);
    expectBroken(0);
  });

  it('does not read from disk into a buffer the driver marked device-readable', () => {
    request(T_IN, 5, 0);
    submit([0]);
    expect(status()).toBe(S_IOERR);
    expect(dev.readMem(DATA, 512)).toEqual(Buffer.alloc(512));
    expect(usedElem(0)).toEqual({ id: 0, len: 1 });
  });

  it('does not write to disk from a buffer the driver marked device-writable', () => {
    dev.writeMem(DATA, Buffer.alloc(512, 0x77));
    request(T_OUT, 5, WRITE);
    submit([0]);
    expect(status()).toBe(S_IOERR);
    expect(readFileSync(disk).subarray(5 * 512, 6 * 512)).toEqual(sector(5));
  });

  it('refuses a request header the device would be allowed to write', () => {
    request(T_IN, 5, WRITE);
    desc(0, HDR, 16, NEXT | WRITE, 1);
    submit([0]);
    expect(status()).toBe(S_IOERR);
    expect(dev.readMem(DATA, 512)).toEqual(Buffer.alloc(512));
  });

  it('treats a status byte it may not write as a broken queue, leaving the byte alone', () => {
    request(T_IN, 5, WRITE);
    desc(2, STATUS, 1, 0);
    submit([0]);
    expectBroken(0);
    expect(status()).toBe(0xff);
    expect(dev.readMem(DATA, 512)).toEqual(Buffer.alloc(512));
  });

  it('answers IOERR for a data buffer that wraps past 2^64 and touches no memory', () => {
    request(T_IN, 0, WRITE, 512, 0xffffffffffffff00n);
    submit([0]);
    expect(status()).toBe(S_IOERR);
    expect(usedElem(0)).toEqual({ id: 0, len: 1 });
  });

  it('answers IOERR (in the status byte) for a header that wraps past 2^64', () => {
    request(T_IN, 0, WRITE);
    desc(0, 0xfffffffffffffff8n, 16, NEXT, 1);
    submit([0]);
    expect(status()).toBe(S_IOERR);
    expect(usedElem(0)).toEqual({ id: 0, len: 1 });
    expect(dev.readMem(DATA, 512)).toEqual(Buffer.alloc(512));
  });

  it('treats a status descriptor past the end of memory as a broken queue', () => {
    request(T_IN, 0, WRITE);
    desc(2, 0xffffffffffffffffn, 1, WRITE);
    submit([0]);
    expectBroken(0);
  });

  it.each([
    ['descriptor table near 2^64', { desc: 0xfffffffffffff000n }],
    ['avail ring near 2^64', { avail: 0xfffffffffffff000n }],
    ['used ring near 2^64', { used: 0xfffffffffffff000n }],
    ['used ring running off the end of memory', { used: BigInt(MEM - 16) }],
    ['misaligned descriptor table', { desc: BigInt(DESC + 8) }],
  ] as const)('refuses a queue whose %s', (_what, rings) => {
    probe(8, rings);
    request(T_IN, 0, WRITE);
    submit([0]);
    expect(deviceStatus() & NEEDS_RESET).toBe(NEEDS_RESET);
    expect(dev.readMem(DATA, 512)).toEqual(Buffer.alloc(512));
  });

  it('answers IOERR for a sector whose byte offset wraps past 2^64 (sector * 512 overflow)', () => {
    request(T_IN, (1n << 55n) + 1n, WRITE); // * 512 = 2^64 + 512: sector 1 if it wrapped
    submit([0]);
    expect(status()).toBe(S_IOERR);
    expect(dev.readMem(DATA, 512)).toEqual(Buffer.alloc(512));
  });

  it('answers IOERR for a request that starts inside the disk but ends beyond it', () => {
    request(T_IN, SECTORS - 1, WRITE, 1024);
    submit([0]);
    expect(status()).toBe(S_IOERR);
    dev.writeMem(DATA, Buffer.alloc(1024, 1));
    request(T_OUT, SECTORS - 1, 0, 1024);
    submit([0]);
    expect(status()).toBe(S_IOERR);
    expect(readFileSync(disk).length).toBe(SECTORS * 512);
  });

  it('answers UNSUPP for request types it does not know, without touching the buffer', () => {
    for (const type of [11 /* DISCARD */, 13 /* WRITE_ZEROES */, 0xdeadbeef]) {
      request(type, 0, WRITE);
      submit([0]);
      expect(status()).toBe(S_UNSUPP);
    }
    expect(dev.readMem(DATA, 512)).toEqual(Buffer.alloc(512));
  });

  it('refuses writes to a read-only disk', () => {
    dev = new hooks.VirtioBlk({ memBytes: MEM, disk, readOnly: true });
    probe();
    dev.writeMem(DATA, Buffer.alloc(512, 0x33));
    request(T_OUT, 2, 0);
    submit([0]);
    expect(status()).toBe(S_IOERR);
    expect(readFileSync(disk).subarray(1024, 1536)).toEqual(sector(2));
  });

  it('ignores queue sizes that are zero, not a power of two, or above the maximum', () => {
    for (const n of [0, 3, 257, 512, 1000, 0xffffffff]) dev.mmioWrite(REG.queueNum, n);
    expect(dev.saveState().readUInt32LE(32)).toBe(8);
    expect(dev.mmioRead(0x34)).toBe(256); // QueueNumMax
    dev.mmioWrite(REG.queueSel, 7); // there is no queue 7: nothing about queue 0 changes
    dev.mmioWrite(REG.queueNum, 16);
    dev.mmioWrite(REG.descLo, 0x1234);
    expect(dev.mmioRead(0x34)).toBe(0);
    expect(dev.saveState().readUInt32LE(32)).toBe(8);
    expect(dev.saveState().readBigUInt64LE(40)).toBe(BigInt(DESC));
  });

  describe('restored state (a snapshot record is untrusted too)', () => {
    // VirtioBlkState: status, driverFeaturesSel, deviceFeaturesSel, queueSel, interruptStatus, configGeneration
    // (u32 each), driverFeatures (u64), then the queue: num, ready (u32), desc, avail, used (u64), lastAvail (u16).
    const Q = { num: 32, ready: 36, desc: 40, avail: 48, used: 56, lastAvail: 64 };
    const loadError = (mutate: (b: Buffer) => void): { code: string; message: string } => {
      const b = dev.saveState();
      mutate(b);
      try {
        dev.loadState(b);
      } catch (e) {
        return e as { code: string; message: string };
      }
      throw new Error('the state was accepted');
    };

    it('round-trips a running queue', () => {
      request(T_IN, 1, WRITE);
      submit([0]);
      const saved = dev.saveState();
      expect(saved.length).toBe(72);
      dev.loadState(saved);
      expect(dev.saveState()).toEqual(saved);
    });

    it.each([1000, 257, 512, 3, 0xffffffff])('refuses a queue size of %i (the device has 256 descriptors of room)', (n) => {
      const before = dev.saveState();
      const err = loadError((b) => b.writeUInt32LE(n, Q.num));
      expect(err.code).toBe('EINVAL');
      expect(err.message).toMatch(new RegExp(`queue size ${n}\\b`));
      expect(dev.saveState()).toEqual(before); // nothing was applied
    });

    it('refuses rings outside guest memory', () => {
      expect(loadError((b) => b.writeBigUInt64LE(0xfffffffffffff000n, Q.desc)).message).toMatch(/rings lie outside guest memory/);
      expect(loadError((b) => b.writeBigUInt64LE(BigInt(MEM), Q.used)).message).toMatch(/rings lie outside guest memory/);
    });

    it('refuses a queue position more than a queue behind the driver', () => {
      expect(loadError((b) => b.writeUInt16LE(100, Q.lastAvail)).message).toMatch(/queue position 100 is more than a queue behind/);
    });

    it('refuses records of the wrong size and impossible register values', () => {
      const short = dev.saveState().subarray(0, 40);
      expect(() => dev.loadState(short)).toThrow(/record has 40 bytes, expected 72/);
      try { dev.loadState(short); } catch (e) { expect((e as { code: string }).code).toBe('EINVAL'); }
      expect(loadError((b) => b.writeUInt32LE(2, Q.ready)).message).toMatch(/ready flag/);
      expect(loadError((b) => b.writeUInt32LE(0x100, 16)).message).toMatch(/interrupt status/);
    });

    it('accepts a device that had given up (DEVICE_NEEDS_RESET) whatever its queue addresses', () => {
      const b = dev.saveState();
      b.writeUInt32LE(b.readUInt32LE(0) | NEEDS_RESET, 0);
      b.writeBigUInt64LE(0xfffffffffffff000n, Q.desc);
      dev.loadState(b);
      dev.mmioWrite(REG.notify, 0);
      expect(usedIdx()).toBe(0);
    });
  });
});
