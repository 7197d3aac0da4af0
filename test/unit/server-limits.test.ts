// One client cannot make VMDesk hold unbounded memory: calls in flight, answers, unread output, serial and VNC
// streams, frames and sockets are each bounded, a client that does not read is paused and then cut off, and
// everything a connection held is released when it closes.
//
// The bounds on calls, answers and streams live in the daemon's session (main/daemon/session.ts, limits.ts)
// and hold for every client: they are tested on the daemon's own socket (the CLI's door) and through the GUI
// server's relay (a browser's), where the relay must pass backpressure along rather than buffer. What only the
// relay can hold (WebSocket frame size, its connection and VNC bridge caps, the VNC bridge's backpressure) is
// tested there. The daemon runs in this process (startDaemon) so its memory can be measured; clients are real
// sockets that stop reading (pause()), guests are the test engine's (test/helpers/test-engine.ts). Assertions
// are on the daemon's and the server's counters, never on timings.
import { afterEach, beforeAll, afterAll, describe, expect, it, vi } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import type { Core } from '../../main/core/core.js';
import { DEFAULT_LIMITS, type ConnectionLimits } from '../../main/daemon/limits.js';
import type { ServerOptions } from '../../main/server/server.js';
import { lineClient, openLibrary, settledClients, upgradeStatus, wsClient, type Library, type RawClient } from '../helpers/daemon.js';
import { registerTestEngine, testEngine, testVm, unregisterTestEngine, type TestGuest } from '../helpers/test-engine.js';

const MiB = 1024 * 1024;

/** vi.waitFor with room for a busy machine: this one process runs the daemon, the relay and the clients. */
function waitFor<T>(fn: () => T | Promise<T>, timeout = 15_000): Promise<T> {
  return vi.waitFor(fn, { timeout, interval: 20 });
}

beforeAll(() => registerTestEngine());
afterAll(() => unregisterTestEngine());

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  // Whatever a test held in the engine goes first, so nothing waits on a closed gate while the daemon stops.
  testEngine.reset();
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function library(limits: Partial<ConnectionLimits> = {}, relay: Partial<Omit<ServerOptions, 'home'>> = {}): Promise<Library> {
  const lib = await openLibrary({ limits, server: relay });
  cleanups.push(() => lib.close());
  return lib;
}

/** A VM of the test engine, started; its guest is the test's to drive. */
async function runningVm(lib: Library, name = 'guest'): Promise<{ id: string; guest: TestGuest }> {
  const c = await lib.client();
  const vm = await c.call('vm.create', testVm(name));
  await c.call('vm.start', { id: vm.id });
  c.close();
  return { id: vm.id, guest: testEngine.guest(vm.id) };
}

type Door = (lib: Library) => Promise<RawClient>;
const DOORS: [string, Door][] = [
  ['on the daemon socket', (lib) => lineClient(lib.daemon.socketPath)],
  ['through the relay', (lib) => wsClient(lib.server)],
];

async function connect(lib: Library, door: Door): Promise<RawClient> {
  const c = await door(lib);
  cleanups.push(() => c.terminate());
  await c.next((f) => f.t === 'hello');
  return c;
}

/** Serial sessions the core's hub holds for a VM (private state, read here to prove none leaks). */
function hubSessions(core: Core, id: string): number {
  return (core as unknown as { vms: Map<string, { hub?: { clients: number } }> }).vms.get(id)?.hub?.clients ?? 0;
}

/**
 * The guest prints `chunk`-byte pieces of a known sequence as fast as the event loop lets it, until stopped or
 * `total` bytes. A guest's console has no backpressure from the daemon: print() never waits.
 */
function flood(guest: TestGuest, opts: { total: number; chunk?: number; perTick?: number; until?: () => boolean }) {
  const chunk = opts.chunk ?? 64 * 1024;
  const p = { produced: 0, stopped: false, sent: [] as Buffer[] };
  const go = () => {
    for (let i = 0; i < (opts.perTick ?? 8) && !p.stopped && p.produced < opts.total; i++) {
      const b = Buffer.alloc(chunk, 0x41 + ((p.produced / chunk) % 26));
      guest.serial.print(b);
      p.sent.push(b);
      p.produced += chunk;
    }
    if (opts.until?.()) p.stopped = true;
    if (!p.stopped && p.produced < opts.total) setImmediate(go);
  };
  setImmediate(go);
  return p;
}

/** Writes chunks into a stream as fast as it takes them, stopping when write() says to: QEMU's VNC server. */
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

/** Bytes of console output a client got on a stream so far, counted as frames arrive (cheap to poll). */
function serialBytes(c: RawClient, sid: number): () => number {
  let seen = 0;
  let bytes = 0;
  return () => {
    for (; seen < c.frames.length; seen++) {
      const f = c.frames[seen]!;
      if (f.t === 'serial.data' && f.sid === sid) bytes += (f.data.length / 4) * 3 - (f.data.endsWith('==') ? 2 : f.data.endsWith('=') ? 1 : 0);
    }
    return bytes;
  };
}
const serialText = (c: RawClient, sid: number) => Buffer.concat(c.frames.filter((f) => f.t === 'serial.data' && f.sid === sid).map((f) => Buffer.from((f as { data: string }).data, 'base64')));
const busyErrors = (c: RawClient) => c.frames.filter((f) => f.t === 'error' && f.error.code === 'EBUSY');
const calls = (c: RawClient, ids: number[], method: string, params: (id: number) => unknown) => {
  for (const id of ids) c.send({ t: 'call', id, method, params: params(id) });
};
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe.each(DOORS)('calls in flight %s', (_door, door) => {
  it(`refuses calls past ${DEFAULT_LIMITS.maxCallsInFlight} in flight on one connection with EBUSY naming the limit`, async () => {
    const lib = await library();
    const vm = await runningVm(lib);
    // Powering the guest off takes until the gate opens: every call that runs stays in flight until then.
    testEngine.killGate.close();
    const c = await connect(lib, door);
    const base = lib.daemon.stats().callsReceived;
    calls(c, range(1, 400), 'vm.kill', () => ({ id: vm.id }));
    // Exactly the first 32 run (a forced power-off may overlap another); the other 368 are refused.
    await waitFor(() => expect(busyErrors(c)).toHaveLength(368));
    const refused = busyErrors(c)[0]!;
    expect(refused.t === 'error' && refused.error.message).toMatch(/too many calls in flight on this connection \(limit 32\)/);
    expect(lib.daemon.stats()).toMatchObject({ callsReceived: base + 400, callsInFlight: 32, peakCallsInFlight: 32, refusedCalls: 368 });
    expect(testEngine.killGate.held).toBe(32);
    testEngine.killGate.open();
    await waitFor(() => expect(c.answers().size).toBe(400));
    expect([...c.answers().values()].filter((f) => f.t === 'result')).toHaveLength(32);
    expect(lib.daemon.stats().callsInFlight).toBe(0);
    // The connection is still good: new calls run again.
    const again = await runningVm(lib, 'second');
    testEngine.killGate.close();
    c.send({ t: 'call', id: 401, method: 'vm.kill', params: { id: again.id } });
    await waitFor(() => expect(lib.daemon.stats().callsInFlight).toBe(1));
    testEngine.killGate.open();
    await waitFor(() => expect(c.answers().get(401)?.t).toBe('result'));
  });
});

describe.each(DOORS)('a client that never reads its answers (the 3.8 GB report) %s', (door, connectTo) => {
  it('400 vm.serialLog calls of 4 MiB each: answers bounded, memory bounded, all answered once it reads, all released on close', async () => {
    const lib = await library();
    const setup = await lib.client();
    const vm = await setup.call('vm.create', testVm('chatty'));
    setup.close();
    mkdirSync(path.join(vm.bundle, 'logs'), { recursive: true });
    writeFileSync(path.join(vm.bundle, 'logs', 'serial.log'), Buffer.alloc(4 * MiB, 0x41));
    const c = await connect(lib, connectTo);
    const base = lib.daemon.stats().callsReceived;
    c.pause(); // stop reading: from here on the answers back up

    // The daemon (and the relay) run in this process: its resident memory is theirs.
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 5);
    try {
      calls(c, range(1, 400), 'vm.serialLog', () => ({ id: vm.id, maxBytes: 4 * MiB }));
      // Quiet: nothing running, and every call either read or waiting on the client's side because the
      // daemon stopped reading from a connection this far behind.
      await waitFor(
        () => {
          const s = lib.daemon.stats();
          expect(s.callsInFlight).toBe(0);
          expect(s.callsReceived === base + 400 || s.pausedInputs === 1).toBe(true);
        },
        30_000,
      );
    } finally {
      clearInterval(sampler);
    }
    const s = lib.daemon.stats();
    expect(s.peakCallsInFlight).toBeLessThanOrEqual(DEFAULT_LIMITS.maxCallsInFlight);
    expect(s.peakResultBytesInFlight).toBeLessThanOrEqual(DEFAULT_LIMITS.maxResultBytesInFlight);
    expect(s.refusedCalls).toBeGreaterThan(0);
    // Unread output never exceeds the hard cap by more than the one answer that crossed it.
    expect(s.peakBufferedBytes).toBeLessThanOrEqual(DEFAULT_LIMITS.maxBufferedOutput + 6 * MiB);
    expect(s.bufferedBytes).toBeLessThanOrEqual(DEFAULT_LIMITS.maxBufferedOutput + 6 * MiB);
    if (door === 'through the relay') {
      // The relay stops reading the daemon once the browser is behind: it holds its high-water mark and the
      // answer that crossed it, and leaves the rest to back up in the daemon, whose bounds hold.
      expect(lib.server.stats().peakBufferedBytes).toBeLessThanOrEqual(DEFAULT_LIMITS.outputHighWater + 6 * MiB);
    }
    // Unbounded, this was gigabytes; bounded, a few answers' worth (generous for GC timing).
    expect(rssPeak - rssBefore).toBeLessThan(256 * MiB);

    // Once it reads, every call is answered: a result, or EBUSY saying which limit and what to do.
    c.resume();
    await waitFor(() => expect(c.answers().size).toBe(400), 60_000);
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
    c.frames.length = 0;

    c.close();
    await waitFor(() => expect(lib.daemon.stats()).toMatchObject({ clients: 0, callsInFlight: 0, resultBytesInFlight: 0, bufferedBytes: 0, pausedInputs: 0 }));
    expect(lib.server.stats()).toMatchObject({ connections: 0, bufferedBytes: 0, pausedInputs: 0 });
  });
});

describe.each(DOORS)('unread output %s', (door, connectTo) => {
  it('drops a connection whose unread output passes the hard cap, and frees what it held', async () => {
    const limits = { outputHighWater: 256 * 1024, maxBufferedOutput: 1 * MiB, maxResultBytesInFlight: 512 * MiB };
    // Through the relay, the browser is behind the relay's high-water mark first: the relay stops reading,
    // and the daemon, whose output then backs up, cuts the connection at its own cap.
    const lib = await library(limits, { limits: { outputHighWater: 256 * 1024 } });
    const vm = await runningVm(lib);
    writeFileSync(path.join((await lib.daemon.core.get(vm.id)).bundle, 'logs', 'serial.log'), Buffer.alloc(4 * MiB, 0x41));
    const c = await connect(lib, connectTo);
    c.send({ t: 'serial.open', sid: 1, vm: vm.id });
    await waitFor(() => expect(lib.daemon.stats().serialStreams).toBe(1));
    expect(hubSessions(lib.daemon.core, vm.id)).toBe(1);
    c.pause();
    // 20 answers of 5.6 MB: far more than the kernel's socket buffers absorb, so the unread output grows.
    calls(c, range(1, 20), 'vm.serialLog', () => ({ id: vm.id, maxBytes: 4 * MiB }));
    await waitFor(() => expect(lib.daemon.stats().slowClientsClosed).toBe(1), 20_000);
    // It finds the connection gone once it reads again.
    c.resume();
    await c.closed;
    await waitFor(() => expect(lib.daemon.stats()).toMatchObject({ clients: 0, serialStreams: 0, callsInFlight: 0, resultBytesInFlight: 0, bufferedBytes: 0 }));
    // Its console session was closed with it, and unread output never went past the cap by more than one answer.
    expect(hubSessions(lib.daemon.core, vm.id)).toBe(0);
    expect(lib.daemon.stats().peakBufferedBytes).toBeLessThanOrEqual(limits.maxBufferedOutput + 6 * MiB);
    if (door === 'through the relay') {
      expect(lib.server.stats()).toMatchObject({ connections: 0, bufferedBytes: 0 });
      expect(lib.server.stats().peakBufferedBytes).toBeLessThanOrEqual(256 * 1024 + 6 * MiB);
    }
  });
});

describe.each(DOORS)('answers in flight %s', (door, connectTo) => {
  it('bounds the answers in flight: a call that could take them past the limit is refused before it runs', async () => {
    const lib = await library({ maxResultBytesInFlight: 12 * MiB });
    const vm = await runningVm(lib);
    const c = await connect(lib, connectTo);
    if (door === 'on the daemon socket') {
      const serialLog = vi.spyOn(lib.daemon.core, 'serialLog');
      // Each may answer 5.6 MB: two fit in 12 MiB, the third must wait its turn. One write: the daemon reads
      // all three before the first is answered.
      (c as RawClient & { sock: net.Socket }).sock.write(range(1, 3).map((id) => JSON.stringify({ t: 'call', id, method: 'vm.serialLog', params: { id: vm.id, maxBytes: 4 * MiB } }) + '\n').join(''));
      await waitFor(() => expect(c.answers().size).toBe(3));
      const third = c.answers().get(3)!;
      expect(third).toMatchObject({ t: 'error', error: { code: 'EBUSY' } });
      expect(third.t === 'error' && third.error.message).toMatch(/vm\.serialLog may answer with up to 5\.3 MiB .*limit 12 MiB of answers in flight/);
      expect(serialLog).toHaveBeenCalledTimes(2);
      serialLog.mockRestore();
    } else {
      // Screenshots are charged 2.7 MiB each and wait for the engine: four fit in 12 MiB, the fifth is refused
      // without reaching it.
      testEngine.screenshotGate.close();
      calls(c, range(1, 5), 'vm.screenshot', () => ({ id: vm.id }));
      await waitFor(() => expect(c.answers().get(5)).toBeDefined());
      const fifth = c.answers().get(5)!;
      expect(fifth).toMatchObject({ t: 'error', error: { code: 'EBUSY' } });
      expect(fifth.t === 'error' && fifth.error.message).toMatch(/vm\.screenshot may answer with up to 2\.7 MiB .*already may with 10\.7 MiB \(limit 12 MiB of answers in flight\)/);
      expect(testEngine.screenshotGate.held).toBe(4);
      testEngine.screenshotGate.open();
      await waitFor(() => expect(c.answers().size).toBe(5));
    }
    expect(lib.daemon.stats().peakResultBytesInFlight).toBeLessThanOrEqual(12 * MiB);
    // Small calls are not charged and still run next to big ones.
    c.send({ t: 'call', id: 9, method: 'vm.serialLog', params: { id: vm.id, maxBytes: 16 } });
    await waitFor(() => expect(c.answers().get(9)?.t).toBe('result'));
  });
});

describe.each(DOORS)('serial streams %s', (door, connectTo) => {
  it('a reader that falls behind stops being read from, then gets every byte in order once it reads; the guest is never held back', async () => {
    const lib = await library({ outputHighWater: 256 * 1024, maxBufferedOutput: 128 * MiB }, { limits: { outputHighWater: 256 * 1024 } });
    const vm = await runningVm(lib);
    const c = await connect(lib, connectTo);
    c.send({ t: 'serial.open', sid: 1, vm: vm.id });
    await waitFor(() => expect(lib.daemon.stats().serialStreams).toBe(1));
    c.pause();
    // Until the client is behind every high-water mark on its way (the kernel's socket buffers take a few MiB
    // first), well under the hard cap.
    const behind = () => lib.daemon.stats().pausedSerialStreams === 1 && (door === 'on the daemon socket' || lib.server.stats().congestions > 0);
    const guest = flood(vm.guest, { total: 64 * MiB, until: behind });
    await waitFor(() => {
      expect(guest.stopped).toBe(true);
      expect(lib.daemon.stats()).toMatchObject({ pausedSerialStreams: 1, pausedInputs: 1 });
    });
    expect(guest.produced).toBeLessThan(64 * MiB);
    const s = lib.daemon.stats();
    expect(s.congestions).toBeGreaterThanOrEqual(1);
    expect(s.slowClientsClosed).toBe(0);
    if (door === 'through the relay') expect(lib.server.stats().congestions).toBeGreaterThanOrEqual(1);
    c.resume();
    const got = serialBytes(c, 1);
    await waitFor(() => expect(got()).toBe(guest.produced), 20_000);
    expect(serialText(c, 1).equals(Buffer.concat(guest.sent))).toBe(true);
    await waitFor(() => expect(lib.daemon.stats()).toMatchObject({ pausedSerialStreams: 0, pausedInputs: 0 }));
    c.close();
    await waitFor(() => expect(lib.daemon.stats()).toMatchObject({ clients: 0, serialStreams: 0 }));
    expect(hubSessions(lib.daemon.core, vm.id)).toBe(0);
  });

  it('one reader that never reads is cut off at the hard cap while another keeps getting the console', async () => {
    const cap = 4 * MiB;
    const lib = await library({ outputHighWater: 256 * 1024, maxBufferedOutput: cap }, { limits: { outputHighWater: 256 * 1024 } });
    const vm = await runningVm(lib);
    const reader = await connect(lib, connectTo);
    const stalled = await connect(lib, connectTo);
    reader.send({ t: 'serial.open', sid: 1, vm: vm.id });
    stalled.send({ t: 'serial.open', sid: 1, vm: vm.id });
    await waitFor(() => expect(lib.daemon.stats().serialStreams).toBe(2));
    stalled.pause();
    // At a pace a reading client keeps up with (one 64 KiB piece per turn of the event loop; a serial line
    // is far slower), and far more than the cap and the sockets' buffers hold together.
    const guest = flood(vm.guest, { total: 24 * MiB, perTick: 1 });
    await waitFor(() => expect(lib.daemon.stats().slowClientsClosed).toBe(1), 20_000);
    stalled.resume();
    await stalled.closed;
    const got = serialBytes(reader, 1);
    await waitFor(() => expect(got()).toBe(24 * MiB), 30_000);
    expect(serialText(reader, 1).equals(Buffer.concat(guest.sent))).toBe(true);
    const s = lib.daemon.stats();
    expect(s.slowClientsClosed).toBe(1);
    // One console frame (64 KiB of output, base64) may cross the cap before the drop; no more.
    expect(s.peakBufferedBytes).toBeLessThanOrEqual(cap + 128 * 1024);
    await waitFor(() => expect(hubSessions(lib.daemon.core, vm.id)).toBe(1));
  });

  it('stop reading a client while its guest is not reading its console input, losing nothing', async () => {
    const lib = await library();
    const vm = await runningVm(lib);
    const serial = vm.guest.serial;
    const c = await connect(lib, connectTo);
    c.send({ t: 'serial.open', sid: 1, vm: vm.id });
    await waitFor(() => expect(lib.daemon.stats().serialStreams).toBe(1));
    const data = Buffer.alloc(384 * 1024, 0x43).toString('base64'); // 512 KiB frames
    for (let i = 0; i < 64; i++) c.send({ t: 'serial.in', sid: 1, data }); // 24 MiB of typing
    await waitFor(() => expect(lib.daemon.stats().pausedInputs).toBe(1));
    if (door === 'through the relay') await waitFor(() => expect(lib.server.stats().pausedInputs).toBe(1));
    // What the daemon handed the guest stays a couple of frames, not the 24 MiB the client sent.
    expect(serial.queuedBytes).toBeLessThan(4 * 384 * 1024);
    // The guest reads: everything arrives, in full.
    const drainAll = setInterval(() => serial.take(), 1);
    cleanups.push(() => clearInterval(drainAll));
    await waitFor(() => expect(serial.received + serial.queuedBytes).toBe(64 * 384 * 1024), 20_000);
    await waitFor(() => expect(lib.daemon.stats().pausedInputs).toBe(0));
    expect(lib.server.stats().pausedInputs).toBe(0);
  });

  it(`are bounded per connection (${DEFAULT_LIMITS.maxSerialStreams} by default)`, async () => {
    const lib = await library({ maxSerialStreams: 2 });
    const vm = await runningVm(lib);
    const c = await connect(lib, connectTo);
    for (const sid of [1, 2, 3]) c.send({ t: 'serial.open', sid, vm: vm.id });
    const third = await c.next((f) => f.t === 'serial.closed' && f.sid === 3);
    expect(third).toMatchObject({ error: { code: 'EBUSY' } });
    expect(third.t === 'serial.closed' && third.error?.message).toMatch(/limit 2/);
    expect(lib.daemon.stats().serialStreams).toBe(2);
    expect(hubSessions(lib.daemon.core, vm.id)).toBe(2);
  });
});

describe('VNC bridge (the relay)', () => {
  /** A unix socket standing in for QEMU's VNC server: pumps framebuffer bytes at whoever connects. */
  async function fakeVnc() {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vnc-'));
    const socketPath = path.join(dir, 'vnc.sock');
    const pumps: ReturnType<typeof pump>[] = [];
    const conns: net.Socket[] = [];
    const srv = net.createServer((s) => {
      conns.push(s);
      s.on('error', () => {});
      pumps.push(pump(s));
    });
    await new Promise<void>((r) => srv.listen(socketPath, r));
    cleanups.push(() => {
      for (const s of conns) s.destroy();
      srv.close();
      rmSync(dir, { recursive: true, force: true });
    });
    // Guests started from now on have this display.
    testEngine.vncSocket = socketPath;
    return { pumps, conns };
  }

  async function display(lib: Library, id: string): Promise<RawClient & { ws: import('ws').WebSocket }> {
    const c = await wsClient(lib.server, `/vnc/${id}`);
    cleanups.push(() => c.terminate());
    return c;
  }

  it('pauses QEMU\'s socket while the browser is behind, and resumes when it reads', async () => {
    const vnc = await fakeVnc();
    const lib = await library({}, { limits: { outputHighWater: 256 * 1024 } });
    const vm = await runningVm(lib);
    const c = await display(lib, vm.id);
    c.pause();
    await waitFor(() => expect(vnc.pumps).toHaveLength(1));
    const qemu = vnc.pumps[0]!;
    await waitFor(() => {
      expect(lib.server.stats().vncPauses).toBeGreaterThanOrEqual(1);
      expect(qemu.blocked).toBe(true);
    });
    const before = qemu.produced;
    c.resume();
    await waitFor(() => expect(qemu.produced).toBeGreaterThan(before + 4 * MiB));
    c.close();
    await waitFor(() => expect(lib.server.stats().vncBridges).toBe(0));
    await waitFor(() => expect(vnc.conns[0]!.destroyed || vnc.conns[0]!.readableEnded).toBe(true));
  });

  it('bounds the number of bridges, counting them until they close', async () => {
    await fakeVnc();
    const lib = await library({}, { limits: { maxVncBridges: 2 } });
    const vm = await runningVm(lib);
    const a = await display(lib, vm.id);
    await display(lib, vm.id);
    expect(await upgradeStatus(lib.server, `/vnc/${vm.id}`)).toBe(503);
    expect(lib.server.stats()).toMatchObject({ vncBridges: 2, refusedUpgrades: 1 });
    a.close();
    await waitFor(() => expect(lib.server.stats().vncBridges).toBe(1));
    await display(lib, vm.id);
  });

  it('refuses a display of a VM without one, asking the daemon each time (409)', async () => {
    const lib = await library();
    const vm = await runningVm(lib); // no VNC socket: testEngine.vncSocket is unset
    expect(await upgradeStatus(lib.server, `/vnc/${vm.id}`)).toBe(409);
    expect(await upgradeStatus(lib.server, `/vnc/${encodeURIComponent('../x')}`)).toBe(400);
    expect(lib.server.stats().vncBridges).toBe(0);
  });
});

describe('sockets and frames', () => {
  it('the relay bounds its /ws connections (503)', async () => {
    const lib = await library({}, { limits: { maxConnections: 2 } });
    const a = await connect(lib, (l) => wsClient(l.server));
    await connect(lib, (l) => wsClient(l.server));
    expect(await upgradeStatus(lib.server, '/ws')).toBe(503);
    expect(lib.server.stats()).toMatchObject({ connections: 2, refusedUpgrades: 1 });
    a.close();
    await waitFor(() => expect(lib.server.stats().connections).toBe(1));
    await connect(lib, (l) => wsClient(l.server));
  });

  it.each(DOORS)('the daemon bounds its connections: one past the limit is told EBUSY and dropped, %s', async (_door, door) => {
    const lib = await library({ maxConnections: 2 });
    const a = await connect(lib, door);
    await connect(lib, door);
    const third = await door(lib);
    cleanups.push(() => third.terminate());
    const refusal = await third.next((f) => f.t === 'error');
    expect(refusal).toMatchObject({ id: -1, error: { code: 'EBUSY', message: 'too many clients (limit 2)' } });
    await third.closed;
    expect(lib.daemon.stats()).toMatchObject({ clients: 2, refusedUpgrades: 1 });
    a.close();
    await waitFor(() => expect(lib.daemon.stats().clients).toBe(1));
    await connect(lib, door);
  });

  it('the relay holds no daemon connection for a browser that leaves during its upgrade or botches the handshake', async () => {
    const lib = await library();
    const upgrade = (key: string | undefined, leave: boolean) =>
      new Promise<string>((resolve) => {
        const sock = net.connect(lib.server.port, '127.0.0.1', () => {
          const headers = [`GET /ws HTTP/1.1`, `Host: 127.0.0.1:${lib.server.port}`, 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', `x-vmdesk-token: ${lib.server.token}`];
          if (key) headers.push(`Sec-WebSocket-Key: ${key}`);
          sock.write(headers.join('\r\n') + '\r\n\r\n');
          if (leave) sock.destroy();
        });
        let answer = '';
        sock.on('data', (d) => (answer += d));
        sock.on('error', () => {});
        sock.on('close', () => resolve(answer.split('\r\n')[0] ?? ''));
      });
    for (let i = 0; i < 5; i++) {
      expect(await upgrade(undefined, false)).toMatch(/^HTTP\/1\.1 400/);
      await upgrade('dGhlIHNhbXBsZSBub25jZQ==', true);
    }
    await waitFor(() => expect(lib.server.stats().connections).toBe(0));
    expect(await settledClients(lib.daemon)).toBe(0);
  });

  it(`the relay closes a connection that sends a frame over ${DEFAULT_LIMITS.maxFrameBytes / MiB} MiB (1009) before buffering it`, async () => {
    const lib = await library();
    const c = await connect(lib, (l) => wsClient(l.server));
    const received = lib.daemon.stats().callsReceived;
    (c as RawClient & { ws: import('ws').WebSocket }).ws.send('x'.repeat(DEFAULT_LIMITS.maxFrameBytes + 1));
    expect(await c.closed).toBe(1009);
    await waitFor(() => expect(lib.server.stats().connections).toBe(0));
    await waitFor(() => expect(lib.daemon.stats().clients).toBe(0));
    expect(lib.daemon.stats().callsReceived).toBe(received);
  });

  it(`the daemon drops a connection whose line grows past ${DEFAULT_LIMITS.maxFrameBytes / MiB} MiB, with or without its newline`, async () => {
    const lib = await library();
    for (const tail of ['\n', '']) {
      const c = await connect(lib, (l) => lineClient(l.daemon.socketPath));
      const sock = (c as RawClient & { sock: net.Socket }).sock;
      sock.write('x'.repeat(DEFAULT_LIMITS.maxFrameBytes + 1) + tail);
      await c.closed;
      await waitFor(() => expect(lib.daemon.stats().clients).toBe(0));
    }
    expect(lib.daemon.stats().callsReceived).toBe(0);
  });

  it.each(DOORS)('releases everything a connection held when it closes mid-flight, %s', async (door, connectTo) => {
    const lib = await library({ outputHighWater: 64 * 1024 }, { limits: { outputHighWater: 64 * 1024 } });
    const vm = await runningVm(lib);
    const c = await connect(lib, connectTo);
    c.send({ t: 'serial.open', sid: 1, vm: vm.id });
    c.send({ t: 'serial.open', sid: 2, vm: vm.id });
    await waitFor(() => expect(lib.daemon.stats().serialStreams).toBe(2));
    testEngine.killGate.close();
    calls(c, range(1, 5), 'vm.kill', () => ({ id: vm.id }));
    await waitFor(() => expect(lib.daemon.stats().callsInFlight).toBe(5));
    c.pause();
    const guest = flood(vm.guest, { total: 64 * MiB });
    await waitFor(() => expect(lib.daemon.stats()).toMatchObject({ pausedSerialStreams: 2, pausedInputs: 1 }));
    guest.stopped = true;
    c.terminate();
    await waitFor(() => expect(lib.daemon.stats()).toMatchObject({ clients: 0, serialStreams: 0, pausedSerialStreams: 0, pausedInputs: 0, bufferedBytes: 0 }));
    expect(hubSessions(lib.daemon.core, vm.id)).toBe(0);
    if (door === 'through the relay') await waitFor(() => expect(lib.server.stats()).toMatchObject({ connections: 0, pausedInputs: 0, bufferedBytes: 0 }));
    // Calls still running in the core finish into the void and are counted out.
    expect(lib.daemon.stats()).toMatchObject({ callsInFlight: 5 });
    testEngine.killGate.open();
    await waitFor(() => expect(lib.daemon.stats()).toMatchObject({ callsInFlight: 0, resultBytesInFlight: 0 }));
  });
});
