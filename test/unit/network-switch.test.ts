// The daemon's switch for internal networks, over real unix socket pairs: QEMU's length-prefixed framing
// (split and coalesced chunks, a length no QEMU sends), learning (unicast goes to one port only), flooding,
// isolation between networks, counters, dropping for a port that does not read, a bounded MAC table.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { encodeFrame, FrameReader, MAX_FRAME, SwitchFabric } from '../../main/core/switch.js';
import { connectUnixSocket } from '../../main/platform/process.js';

function frame(dst: string, src: string, payload = 'hello'): Buffer {
  const mac = (m: string) => Buffer.from(m.replaceAll(':', ''), 'hex');
  return Buffer.concat([mac(dst), mac(src), Buffer.from([0x08, 0x00]), Buffer.from(payload)]);
}

const BCAST = 'ff:ff:ff:ff:ff:ff';
const A = '52:54:00:00:00:0a';
const B = '52:54:00:00:00:0b';
const C = '52:54:00:00:00:0c';

describe('FrameReader', () => {
  it('splits a stream into frames however the chunks fall', () => {
    const frames = [Buffer.from('a'.repeat(20)), Buffer.from('bb'), Buffer.alloc(0), Buffer.from('c'.repeat(300))];
    const stream = Buffer.concat(frames.map(encodeFrame));
    for (const size of [1, 3, 5, 7, 64, stream.length]) {
      const r = new FrameReader();
      const got: string[] = [];
      for (let i = 0; i < stream.length; i += size) r.push(stream.subarray(i, i + size), (f) => got.push(f.toString()));
      expect(got, `chunks of ${size}`).toEqual(frames.map((f) => f.toString()));
    }
  });

  it('refuses a length no QEMU sends', () => {
    const r = new FrameReader();
    const head = Buffer.alloc(4);
    head.writeUInt32BE(MAX_FRAME + 1);
    expect(() => r.push(head, () => {})).toThrow(/larger than any QEMU sends/);
  });
});

describe('SwitchFabric', () => {
  let dir: string;
  let server: Server;
  const open: Socket[] = [];
  let fabric: SwitchFabric;

  /** A connected pair: the switch's end is plugged in, the test holds the guest's end (as QEMU would). */
  async function port(net: string, vm: string, adapter = 0): Promise<{ guest: Socket; frames: Buffer[] }> {
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    const guest = await connectUnixSocket(path.join(dir, 'sw.sock'));
    const sw = await accepted;
    open.push(guest, sw);
    fabric.plug(net, vm, adapter, sw);
    const frames: Buffer[] = [];
    const reader = new FrameReader();
    guest.on('data', (d: Buffer) => reader.push(d, (f) => frames.push(Buffer.from(f))));
    return { guest, frames };
  }

  const settle = () => new Promise((r) => setTimeout(r, 50));

  afterEach(async () => {
    fabric?.close();
    for (const s of open.splice(0)) s.destroy();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    rmSync(dir, { recursive: true, force: true });
  });

  async function setup(): Promise<void> {
    dir = mkdtempSync(path.join(os.tmpdir(), 'vmd-sw-'));
    server = createServer();
    await new Promise<void>((r) => server.listen(path.join(dir, 'sw.sock'), r));
    fabric = new SwitchFabric();
  }

  it('floods broadcasts within one network only, then sends unicast to the learned port alone', async () => {
    await setup();
    const a = await port('lab', 'vm-a');
    const b = await port('lab', 'vm-b');
    const c = await port('lab', 'vm-c');
    const other = await port('other', 'vm-o');
    a.guest.write(encodeFrame(frame(BCAST, A, 'who-has')));
    await settle();
    expect(b.frames.map((f) => f.subarray(14).toString())).toEqual(['who-has']);
    expect(c.frames).toHaveLength(1);
    expect(a.frames).toHaveLength(0);
    expect(other.frames).toHaveLength(0);
    // B answers A: A's address was learned from its broadcast, so only A gets it.
    b.guest.write(encodeFrame(frame(A, B, 'is-at')));
    await settle();
    expect(a.frames.map((f) => f.subarray(14).toString())).toEqual(['is-at']);
    expect(c.frames).toHaveLength(1);
    // Now both are known: A to B goes to B alone.
    a.guest.write(encodeFrame(frame(B, A, 'data')));
    await settle();
    expect(b.frames.map((f) => f.subarray(14).toString())).toEqual(['who-has', 'data']);
    expect(c.frames).toHaveLength(1);
    expect(other.frames).toHaveLength(0);
    // A frame for a MAC on another network is not delivered there, however it is addressed.
    other.guest.write(encodeFrame(frame(A, C, 'across')));
    await settle();
    expect(a.frames).toHaveLength(1);
    const ca = fabric.counters('vm-a')!;
    expect(ca.txFrames).toBe(2);
    expect(ca.rxFrames).toBe(1);
    expect(ca.txBytes).toBe(frame(BCAST, A, 'who-has').length + frame(B, A, 'data').length);
    expect(fabric.networks().sort((x, y) => x.name.localeCompare(y.name))).toEqual([
      { name: 'lab', ports: 3, macs: 2 },
      { name: 'other', ports: 1, macs: 1 },
    ]);
  });

  it('drops runt frames, cuts a port that breaks the framing, and forgets a VM whose socket closes', async () => {
    await setup();
    const a = await port('lab', 'vm-a');
    const b = await port('lab', 'vm-b');
    a.guest.write(encodeFrame(Buffer.from('short')));
    await settle();
    expect(b.frames).toHaveLength(0);
    const bad = Buffer.alloc(4);
    bad.writeUInt32BE(0xffffffff);
    const closed = new Promise((r) => a.guest.once('close', r));
    a.guest.write(bad);
    await closed;
    await settle();
    expect(fabric.plugged('vm-a')).toEqual([]);
    expect(fabric.networks()).toMatchObject([{ name: 'lab', ports: 1 }]);
    b.guest.destroy();
    await settle();
    expect(fabric.networks()).toEqual([]);
    expect(fabric.counters('vm-b')).toBeUndefined();
  });

  it('drops frames for a port that does not read instead of queueing them without end', async () => {
    await setup();
    const a = await port('lab', 'vm-a');
    const b = await port('lab', 'vm-b');
    b.guest.pause();
    const big = frame(BCAST, A, 'x'.repeat(60_000));
    for (let i = 0; i < 200; i++) a.guest.write(encodeFrame(big));
    // The switch works through 12 MB at its own pace (slower on a loaded machine): wait for the first drop.
    for (let t = 0; t < 100 && !(fabric.counters('vm-b')?.dropped ?? 0); t++) await new Promise((r) => setTimeout(r, 100));
    const cb = fabric.counters('vm-b')!;
    expect(cb.dropped).toBeGreaterThan(0);
    // What was queued for B stays near the bound (1 MiB plus what the kernel holds).
    expect(cb.rxBytes).toBeLessThan(12 * 1024 * 1024);
  });

  it('keeps its MAC table bounded however many source addresses a guest makes up', async () => {
    await setup();
    const a = await port('lab', 'vm-a');
    const b = await port('lab', 'vm-b');
    const chunks: Buffer[] = [];
    for (let i = 0; i < 6000; i++) {
      const src = `52:54:01:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
      chunks.push(encodeFrame(frame(BCAST, src, 'spoof')));
    }
    a.guest.write(Buffer.concat(chunks));
    for (let i = 0; i < 100 && b.frames.length < 6000; i++) await settle();
    expect(b.frames.length).toBe(6000);
    expect(fabric.networks()[0]!.macs).toBeLessThanOrEqual(4096);
    // The switch still works for real traffic afterwards.
    b.guest.write(encodeFrame(frame(BCAST, B, 'still')));
    await settle();
    expect(a.frames.at(-1)?.subarray(14).toString()).toBe('still');
  });
});
