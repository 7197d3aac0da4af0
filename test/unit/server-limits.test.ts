// One client cannot make the server hold unbounded memory: calls in flight, answers, unread output, serial
// and VNC streams, frames and sockets are each bounded, a client that does not read is paused and then cut
// off, and everything a connection held is released when it closes. Clients here are real ws clients that
// stop reading (ws.pause() stops reading their socket), against a real server; assertions are on the
// server's counters, never on timings.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EventEmitter, once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Duplex, PassThrough, type Writable } from 'node:stream';
import WebSocket from 'ws';
import { Core } from '../../main/core/core.js';
import { startServer, type RunningServer, type ServerOptions } from '../../main/server/server.js';
import { DEFAULT_LIMITS } from '../../main/server/limits.js';
import type { ServerFrame } from '../../main/api/rpc.js';

const MiB = 1024 * 1024;

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** The few Core methods the server calls outside dispatch, plus the ones these tests call through RPC. */
class FakeCore extends EventEmitter {
  /** vm.list answers wait here until release() (so calls stay in flight for as long as a test needs). */
  private gate: (() => void)[] = [];
  serialBytes = 4 * MiB;
  serialStreams: Duplex[] = [];
  makeSerial: () => Duplex = () => new PassThrough();
  vncPath = '';
  async list(): Promise<unknown[]> {
    await new Promise<void>((resolve) => this.gate.push(resolve));
    return [];
  }
  release(): void {
    for (const r of this.gate.splice(0)) r();
  }
  async serialLog(_ref: string, maxBytes?: number): Promise<Buffer> {
    // Called by vm.serialLog (maxBytes given) and when a console opens (no log then: nothing to replay).
    return maxBytes === undefined ? Buffer.alloc(0) : Buffer.alloc(Math.min(maxBytes, this.serialBytes), 0x41);
  }
  async openSerial(): Promise<Duplex> {
    const s = this.makeSerial();
    this.serialStreams.push(s);
    return s;
  }
  async vncSocket(): Promise<string> {
    return this.vncPath;
  }
}

async function serve(core: FakeCore | Core, extra: Partial<ServerOptions> = {}): Promise<RunningServer> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-limits-'));
  const server = await startServer({ core: core as unknown as Core, staticDir: tmp, ...extra });
  cleanups.push(async () => {
    await server.close();
    rmSync(tmp, { recursive: true, force: true });
  });
  return server;
}

interface Client {
  ws: WebSocket;
  frames: ServerFrame[];
  send(frame: unknown): void;
  /** Answers (results and errors) by call id. */
  answers(): Map<number, ServerFrame>;
}

async function connect(server: RunningServer, p = '/ws'): Promise<Client> {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}${p}`, { headers: { 'x-vmdesk-token': server.token } });
  const frames: ServerFrame[] = [];
  ws.on('message', (d, binary) => {
    if (!binary) frames.push(JSON.parse(String(d)) as ServerFrame);
  });
  ws.on('error', () => {});
  await once(ws, 'open');
  cleanups.push(() => ws.terminate());
  return {
    ws,
    frames,
    send: (frame) => ws.send(JSON.stringify(frame)),
    answers: () => {
      const m = new Map<number, ServerFrame>();
      for (const f of frames) if (f.t === 'result' || f.t === 'error') m.set(f.id, f);
      return m;
    },
  };
}

/** Writes chunks into a stream as fast as it takes them, stopping when write() says to: a guest or QEMU. */
function pump(into: Writable, chunk = 64 * 1024) {
  const p = { produced: 0, blocked: false, stopped: false };
  const buf = Buffer.alloc(chunk, 0x42);
  const go = () => {
    p.blocked = false;
    while (!p.stopped && !into.destroyed) {
      p.produced += buf.length;
      if (!into.write(buf)) {
        p.blocked = true;
        into.once('drain', go);
        return;
      }
    }
  };
  into.on('error', () => (p.stopped = true));
  into.on('close', () => (p.stopped = true));
  setImmediate(go);
  return p;
}

const busyErrors = (c: Client) => c.frames.filter((f) => f.t === 'error' && f.error.code === 'EBUSY');

describe('calls in flight', () => {
  it(`refuses calls past ${DEFAULT_LIMITS.maxCallsInFlight} in flight on one connection with EBUSY naming the limit`, async () => {
    const core = new FakeCore();
    const server = await serve(core);
    const c = await connect(server);
    for (let id = 1; id <= 400; id++) c.send({ t: 'call', id, method: 'vm.list', params: {} });
    // Nothing answers until the gate opens, so exactly the first 32 run and the other 368 are refused.
    await vi.waitFor(() => expect(busyErrors(c)).toHaveLength(368));
    const refused = busyErrors(c)[0]!;
    expect(refused.t === 'error' && refused.error.message).toMatch(/too many calls in flight on this connection \(limit 32\)/);
    expect(server.stats()).toMatchObject({ callsReceived: 400, callsInFlight: 32, peakCallsInFlight: 32, refusedCalls: 368 });
    core.release();
    await vi.waitFor(() => expect(c.answers().size).toBe(400));
    expect([...c.answers().values()].filter((f) => f.t === 'result')).toHaveLength(32);
    expect(server.stats().callsInFlight).toBe(0);
    // The connection is still good: new calls run again.
    c.send({ t: 'call', id: 401, method: 'vm.list', params: {} });
    await vi.waitFor(() => expect(server.stats().callsInFlight).toBe(1));
    core.release();
    await vi.waitFor(() => expect(c.answers().get(401)?.t).toBe('result'));
  });
});

describe('a client that never reads its answers (the 3.8 GB report)', () => {
  let tmp: string;
  let core: Core;

  afterEach(async () => {
    await core?.shutdown();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('400 vm.serialLog calls of 4 MiB each: answers bounded, memory bounded, all answered once it reads, all released on close', async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-limits-core-'));
    const kernel = path.join(tmp, 'vmlinuz');
    writeFileSync(kernel, 'not really a kernel');
    core = new Core({ home: path.join(tmp, 'home') });
    await core.boot();
    const vm = await core.create({ name: 'chatty', cpus: 1, memoryMiB: 64, directKernel: { kernel, cmdline: 'console=ttyS0' }, network: [{ mode: 'none', forwards: [] }] } as never);
    mkdirSync(path.join(vm.bundle, 'logs'), { recursive: true });
    writeFileSync(path.join(vm.bundle, 'logs', 'serial.log'), Buffer.alloc(4 * MiB, 0x41));
    const server = await serve(core);
    const c = await connect(server);
    c.ws.pause(); // stop reading: from here on the server's answers back up

    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 5);
    try {
      for (let id = 1; id <= 400; id++) c.send({ t: 'call', id, method: 'vm.serialLog', params: { id: vm.id, maxBytes: 4 * MiB } });
      // Quiet: nothing running, and every call either read or waiting in the client's socket because the
      // server stopped reading from a connection that is this far behind.
      await vi.waitFor(
        () => {
          const s = server.stats();
          expect(s.callsInFlight).toBe(0);
          expect(s.callsReceived === 400 || s.pausedInputs === 1).toBe(true);
        },
        { timeout: 30_000 },
      );
    } finally {
      clearInterval(sampler);
    }
    const s = server.stats();
    expect(s.peakCallsInFlight).toBeLessThanOrEqual(DEFAULT_LIMITS.maxCallsInFlight);
    expect(s.peakResultBytesInFlight).toBeLessThanOrEqual(DEFAULT_LIMITS.maxResultBytesInFlight);
    expect(s.refusedCalls).toBeGreaterThan(0);
    // Unread output never exceeds the hard cap by more than the one answer that crossed it.
    expect(s.peakBufferedBytes).toBeLessThanOrEqual(DEFAULT_LIMITS.maxBufferedOutput + 6 * MiB);
    expect(s.bufferedBytes).toBeLessThanOrEqual(DEFAULT_LIMITS.maxBufferedOutput + 6 * MiB);
    // Unbounded, this was gigabytes; bounded, a few answers' worth (generous for GC timing).
    expect(rssPeak - rssBefore).toBeLessThan(256 * MiB);

    // Once it reads, every call is answered: a result, or EBUSY saying which limit and what to do.
    c.ws.resume();
    await vi.waitFor(() => expect(c.answers().size).toBe(400), { timeout: 30_000 });
    const answers = [...c.answers().values()];
    const results = answers.filter((f) => f.t === 'result');
    const refused = answers.filter((f) => f.t === 'error');
    expect(results.length).toBeGreaterThan(0);
    expect(results.length + refused.length).toBe(400);
    for (const f of refused) {
      expect(f.t === 'error' && f.error.code).toBe('EBUSY');
      expect(f.t === 'error' && f.error.message).toMatch(/limit .*: wait for answers before sending more/);
    }
    for (const f of results) expect(f.t === 'result' && (f.result as { data: string }).data.length).toBe(Math.ceil((4 * MiB) / 3) * 4);

    c.ws.close();
    await vi.waitFor(() => expect(server.stats()).toMatchObject({ connections: 0, callsInFlight: 0, resultBytesInFlight: 0, bufferedBytes: 0, pausedInputs: 0 }));
  });

  it('drops a connection whose unread output passes the hard cap, and frees what it held', async () => {
    const fake = new FakeCore();
    const limits = { outputHighWater: 256 * 1024, maxBufferedOutput: 1 * MiB, maxResultBytesInFlight: 512 * MiB };
    const server = await serve(fake, { limits });
    const c = await connect(server);
    c.send({ t: 'serial.open', sid: 1, vm: 'x' });
    await vi.waitFor(() => expect(server.stats().serialStreams).toBe(1));
    c.ws.pause();
    // 20 answers of 5.6 MB: far more than the kernel's socket buffers absorb, so the unread output grows.
    for (let id = 1; id <= 20; id++) c.send({ t: 'call', id, method: 'vm.serialLog', params: { id: 'x', maxBytes: 4 * MiB } });
    await vi.waitFor(() => expect(server.stats().slowClientsClosed).toBe(1));
    await vi.waitFor(() => expect(server.stats()).toMatchObject({ connections: 0, serialStreams: 0, callsInFlight: 0, resultBytesInFlight: 0, bufferedBytes: 0 }));
    // Its console stream was closed with it, and unread output never went past the cap by more than one answer.
    expect(fake.serialStreams[0]!.destroyed).toBe(true);
    expect(server.stats().peakBufferedBytes).toBeLessThanOrEqual(limits.maxBufferedOutput + 6 * MiB);
  });

  it('bounds the answers in flight: a call that could take them past the limit is refused before it runs', async () => {
    const fake = new FakeCore();
    const server = await serve(fake, { limits: { maxResultBytesInFlight: 12 * MiB } });
    const c = await connect(server);
    const serialLog = vi.spyOn(fake, 'serialLog');
    // Each may answer 5.6 MB: two fit in 12 MiB, the third must wait its turn.
    for (let id = 1; id <= 3; id++) c.send({ t: 'call', id, method: 'vm.serialLog', params: { id: 'x', maxBytes: 4 * MiB } });
    await vi.waitFor(() => expect(c.answers().size).toBe(3));
    const third = c.answers().get(3)!;
    expect(third).toMatchObject({ t: 'error', error: { code: 'EBUSY' } });
    expect(third.t === 'error' && third.error.message).toMatch(/vm\.serialLog may answer with up to 5\.3 MiB .*limit 12 MiB of answers in flight/);
    expect(serialLog).toHaveBeenCalledTimes(2);
    expect(server.stats().peakResultBytesInFlight).toBeLessThanOrEqual(12 * MiB);
    // Small calls are not charged and still run next to big ones.
    c.send({ t: 'call', id: 4, method: 'vm.serialLog', params: { id: 'x', maxBytes: 16 } });
    await vi.waitFor(() => expect(c.answers().get(4)?.t).toBe('result'));
  });
});

describe('serial streams', () => {
  it('pause while the client is behind (the guest backs up, not the server) and resume when it reads', async () => {
    const fake = new FakeCore();
    const highWater = 256 * 1024;
    const server = await serve(fake, { limits: { outputHighWater: highWater } });
    const c = await connect(server);
    c.send({ t: 'serial.open', sid: 1, vm: 'x' });
    await vi.waitFor(() => expect(fake.serialStreams).toHaveLength(1));
    c.ws.pause();
    const guest = pump(fake.serialStreams[0]!);
    await vi.waitFor(() => {
      expect(server.stats().pausedSerialStreams).toBe(1);
      expect(guest.blocked).toBe(true);
    });
    const s = server.stats();
    expect(s.congestions).toBeGreaterThanOrEqual(1);
    // One frame (64 KiB of console output, base64) may cross the mark before the stream pauses; no more.
    expect(s.peakBufferedBytes).toBeLessThanOrEqual(highWater + 128 * 1024);
    const before = guest.produced;
    c.ws.resume();
    await vi.waitFor(() => expect(guest.produced).toBeGreaterThan(before + 4 * MiB));
    guest.stopped = true;
    c.ws.close();
    await vi.waitFor(() => expect(fake.serialStreams[0]!.destroyed).toBe(true), { timeout: 10_000 });
    expect(server.stats()).toMatchObject({ connections: 0, serialStreams: 0 });
  });

  it('stop reading a client while its guest is not reading its console input, losing nothing', async () => {
    const fake = new FakeCore();
    const waiting: (() => void)[] = [];
    let received = 0;
    // A console whose guest takes input only when the test says so.
    fake.makeSerial = () =>
      new Duplex({
        read() {},
        write(chunk: Buffer, _enc, cb) {
          received += chunk.length;
          waiting.push(cb);
        },
      });
    const server = await serve(fake);
    const c = await connect(server);
    c.send({ t: 'serial.open', sid: 1, vm: 'x' });
    await vi.waitFor(() => expect(fake.serialStreams).toHaveLength(1));
    const stream = fake.serialStreams[0]!;
    const data = Buffer.alloc(384 * 1024, 0x43).toString('base64'); // 512 KiB frames
    for (let i = 0; i < 64; i++) c.send({ t: 'serial.in', sid: 1, data }); // 24 MiB of typing
    await vi.waitFor(() => expect(server.stats().pausedInputs).toBe(1));
    // What the server holds for the guest stays a couple of frames, not the 24 MiB the client sent.
    expect(stream.writableLength).toBeLessThan(4 * 384 * 1024);
    // The guest reads: everything arrives, in full.
    const drainAll = setInterval(() => {
      for (const cb of waiting.splice(0)) cb();
    }, 1);
    cleanups.push(() => clearInterval(drainAll));
    await vi.waitFor(() => expect(received + stream.writableLength).toBe(64 * 384 * 1024), { timeout: 20_000 });
    await vi.waitFor(() => expect(server.stats().pausedInputs).toBe(0));
  });

  it(`are bounded per connection (${DEFAULT_LIMITS.maxSerialStreams} by default)`, async () => {
    const fake = new FakeCore();
    const server = await serve(fake, { limits: { maxSerialStreams: 2 } });
    const c = await connect(server);
    for (const sid of [1, 2, 3]) c.send({ t: 'serial.open', sid, vm: 'x' });
    await vi.waitFor(() => expect(c.frames.find((f) => f.t === 'serial.closed' && f.sid === 3)).toBeDefined());
    const third = c.frames.find((f) => f.t === 'serial.closed' && f.sid === 3)!;
    expect(third).toMatchObject({ error: { code: 'EBUSY' } });
    expect(third.t === 'serial.closed' && third.error?.message).toMatch(/limit 2/);
    expect(server.stats().serialStreams).toBe(2);
  });
});

describe('VNC bridge', () => {
  /** A unix socket standing in for QEMU's VNC server: pumps framebuffer bytes at whoever connects. */
  async function fakeVnc(fake: FakeCore) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vnc-'));
    fake.vncPath = path.join(dir, 'vnc.sock');
    const pumps: ReturnType<typeof pump>[] = [];
    const conns: net.Socket[] = [];
    const srv = net.createServer((s) => {
      conns.push(s);
      s.on('error', () => {});
      pumps.push(pump(s));
    });
    await new Promise<void>((r) => srv.listen(fake.vncPath, r));
    cleanups.push(() => {
      for (const s of conns) s.destroy();
      srv.close();
      rmSync(dir, { recursive: true, force: true });
    });
    return { pumps, conns };
  }

  it('pauses QEMU\'s socket while the browser is behind, and resumes when it reads', async () => {
    const fake = new FakeCore();
    const vnc = await fakeVnc(fake);
    const server = await serve(fake, { limits: { outputHighWater: 256 * 1024 } });
    const c = await connect(server, '/vnc/x');
    c.ws.pause();
    await vi.waitFor(() => expect(vnc.pumps).toHaveLength(1));
    const qemu = vnc.pumps[0]!;
    await vi.waitFor(() => {
      expect(server.stats().vncPauses).toBeGreaterThanOrEqual(1);
      expect(qemu.blocked).toBe(true);
    });
    const before = qemu.produced;
    c.ws.resume();
    await vi.waitFor(() => expect(qemu.produced).toBeGreaterThan(before + 4 * MiB));
    c.ws.close();
    await vi.waitFor(() => expect(server.stats().vncBridges).toBe(0));
    await vi.waitFor(() => expect(vnc.conns[0]!.destroyed || vnc.conns[0]!.readableEnded).toBe(true));
  });

  it('bounds the number of bridges, counting them until they close', async () => {
    const fake = new FakeCore();
    await fakeVnc(fake);
    const server = await serve(fake, { limits: { maxVncBridges: 2 } });
    const a = await connect(server, '/vnc/x');
    await connect(server, '/vnc/x');
    const status = await new Promise<number | undefined>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/vnc/x`, { headers: { 'x-vmdesk-token': server.token } });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
      ws.on('open', () => resolve(101));
      ws.on('error', () => resolve(undefined));
    });
    expect(status).toBe(503);
    expect(server.stats()).toMatchObject({ vncBridges: 2, refusedUpgrades: 1 });
    a.ws.close();
    await vi.waitFor(() => expect(server.stats().vncBridges).toBe(1));
    await connect(server, '/vnc/x');
  });
});

describe('sockets and frames', () => {
  it('bounds the number of /ws connections', async () => {
    const server = await serve(new FakeCore(), { limits: { maxConnections: 2 } });
    const a = await connect(server);
    await connect(server);
    const status = await new Promise<number | undefined>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, { headers: { 'x-vmdesk-token': server.token } });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
      ws.on('open', () => resolve(101));
      ws.on('error', () => resolve(undefined));
    });
    expect(status).toBe(503);
    a.ws.close();
    await vi.waitFor(() => expect(server.stats().connections).toBe(1));
    await connect(server);
  });

  it(`closes a connection that sends a frame over ${DEFAULT_LIMITS.maxFrameBytes / MiB} MiB (1009) before buffering it`, async () => {
    const server = await serve(new FakeCore());
    const c = await connect(server);
    const closed = once(c.ws, 'close');
    c.ws.send('x'.repeat(DEFAULT_LIMITS.maxFrameBytes + 1));
    const [code] = await closed;
    expect(code).toBe(1009);
    await vi.waitFor(() => expect(server.stats().connections).toBe(0));
  });

  it('releases everything a connection held when it closes mid-flight', async () => {
    const fake = new FakeCore();
    const server = await serve(fake, { limits: { outputHighWater: 64 * 1024 } });
    const c = await connect(server);
    c.send({ t: 'serial.open', sid: 1, vm: 'x' });
    c.send({ t: 'serial.open', sid: 2, vm: 'x' });
    await vi.waitFor(() => expect(server.stats().serialStreams).toBe(2));
    c.ws.pause();
    pump(fake.serialStreams[0]!);
    for (let id = 1; id <= 5; id++) c.send({ t: 'call', id, method: 'vm.list', params: {} });
    await vi.waitFor(() => expect(server.stats()).toMatchObject({ pausedSerialStreams: 2, pausedInputs: 1 }));
    c.ws.terminate();
    await vi.waitFor(() => expect(server.stats()).toMatchObject({ connections: 0, serialStreams: 0, pausedSerialStreams: 0, pausedInputs: 0, bufferedBytes: 0 }));
    for (const s of fake.serialStreams) expect(s.destroyed).toBe(true);
    // Calls still running in the core finish into the void and are counted out.
    fake.release();
    await vi.waitFor(() => expect(server.stats()).toMatchObject({ callsInFlight: 0, resultBytesInFlight: 0 }));
  });
});
