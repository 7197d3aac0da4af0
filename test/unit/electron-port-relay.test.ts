// The desktop shell's MessagePort relay (main/electron/port-relay.ts) with Node's MessageChannel standing in for
// Electron's: frames and bytes pass both ways; every message from the window is checked and a bad one ends the
// channel; output pauses while the window has not acknowledged enough and resumes when it has; input the socket
// does not take is bounded; the hub bounds how many channels exist.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { checkRpcMessage, relayRpcPort, relayVncPort, type PortLike } from '../../main/electron/port-relay.js';
import { ChannelHub } from '../../main/electron/channels.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function mainSide(port: MessagePort): PortLike {
  return {
    postMessage: (m) => port.postMessage(m),
    on(ev: string, fn: (...a: never[]) => void) {
      if (ev === 'message') port.on('message', (data) => (fn as (e: { data: unknown }) => void)({ data }));
      else port.on(ev, fn as () => void);
      return this;
    },
    start: () => port.start(),
    close: () => port.close(),
  } as PortLike;
}

/** A unix socket server standing in for the daemon or a VNC server; resolves with its path and server-side socket. */
async function unixServer(): Promise<{ path: string; accepted: Promise<net.Socket> }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vmd-pr-'));
  const p = path.join(dir, 's.sock');
  let accept!: (s: net.Socket) => void;
  const accepted = new Promise<net.Socket>((r) => (accept = r));
  const server = net.createServer((s) => accept(s));
  await new Promise<void>((r) => server.listen(p, r));
  cleanups.push(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path: p, accepted };
}

async function connected(p: string): Promise<net.Socket> {
  const s = net.connect(p);
  await new Promise((r) => s.once('connect', r));
  cleanups.push(() => s.destroy());
  return s;
}

function collect(port: MessagePort) {
  const got: unknown[] = [];
  port.on('message', (m) => got.push(m));
  return got;
}

const LIMITS = { maxMessageBytes: 64 * 1024, highWater: 256 * 1024, maxPendingInput: 1024 * 1024 };

describe('rpc channel', () => {
  it('passes frames both ways, one per line on the socket', async () => {
    const srv = await unixServer();
    const sock = await connected(srv.path);
    const daemon = await srv.accepted;
    const { port1, port2 } = new MessageChannel();
    cleanups.push(() => port1.close());
    const got = collect(port1);
    relayRpcPort(mainSide(port2), sock, LIMITS);
    daemon.write('{"t":"hello","version":2}\n{"t":"event","event":');
    daemon.write('{"type":"vm-deleted","id":"x"}}\n');
    await vi.waitFor(() => expect(got).toEqual([{ t: 'open' }, '{"t":"hello","version":2}', '{"t":"event","event":{"type":"vm-deleted","id":"x"}}']));
    let received = '';
    daemon.on('data', (d) => (received += d));
    port1.postMessage('{"t":"call","id":1,"method":"vm.list","params":{}}');
    await vi.waitFor(() => expect(received).toBe('{"t":"call","id":1,"method":"vm.list","params":{}}\n'));
  });

  it('checks every frame the window sends', () => {
    const ok = '{"t":"call","id":1,"method":"vm.list","params":{}}';
    expect(checkRpcMessage(ok, 1024)).toBeUndefined();
    expect(checkRpcMessage(new Uint8Array([1]), 1024)).toMatch(/JSON text/);
    expect(checkRpcMessage({ t: 'call' }, 1024)).toMatch(/JSON text/);
    expect(checkRpcMessage(`${ok}\n${ok}`, 1024)).toMatch(/newline/);
    expect(checkRpcMessage('{"t":"call",', 1024)).toMatch(/JSON/);
    expect(checkRpcMessage('{"t":"hello","version":2}', 1024)).toMatch(/not a frame/);
    expect(checkRpcMessage('{"t":"call","id":-1,"method":"vm.list"}', 1024)).toMatch(/not a frame/);
    expect(checkRpcMessage('{"t":"call","id":1,"method":"vm.list","evil":1}', 1024)).toMatch(/not a frame/);
    expect(checkRpcMessage(`{"t":"call","id":1,"method":"vm.list","params":{"s":"${'é'.repeat(600)}"}}`, 1024)).toMatch(/over 1024 bytes/);
  });

  it('ends the channel, and its daemon connection, on a bad frame', async () => {
    for (const bad of [new Uint8Array([1, 2]), '{"t":"call"}\n{"t":"call"}', 'x'.repeat(LIMITS.maxMessageBytes + 1), '{"t":"nope"}']) {
      const srv = await unixServer();
      const sock = await connected(srv.path);
      const daemon = await srv.accepted;
      const { port1, port2 } = new MessageChannel();
      const got = collect(port1);
      const reasons: string[] = [];
      relayRpcPort(mainSide(port2), sock, { ...LIMITS, onClose: (r) => reasons.push(r) });
      let received = '';
      daemon.on('data', (d) => (received += d));
      const daemonClosed = new Promise((r) => daemon.once('close', r));
      port1.postMessage(bad);
      await daemonClosed;
      expect(reasons).toHaveLength(1);
      await vi.waitFor(() => expect(got.at(-1)).toMatchObject({ t: 'close' }));
      expect(received).toBe('');
      port1.close();
    }
  });

  it('stops reading the daemon while the window is behind, and goes on when it acknowledges', async () => {
    const srv = await unixServer();
    const sock = await connected(srv.path);
    const daemon = await srv.accepted;
    const { port1, port2 } = new MessageChannel();
    cleanups.push(() => port1.close());
    let received = 0;
    port1.on('message', (m) => typeof m === 'string' && (received += m.length));
    let pauses = 0;
    const r = relayRpcPort(mainSide(port2), sock, { ...LIMITS, onPause: () => pauses++ });
    const line = `{"t":"event","pad":"${'x'.repeat(16 * 1024)}"}\n`;
    // The daemon has 4 MiB to say; the window reads but never acknowledges.
    const total = 256;
    let written = 0;
    const pump = () => {
      while (written < total) {
        written++;
        if (!daemon.write(line)) return void daemon.once('drain', pump);
      }
    };
    pump();
    await vi.waitFor(() => expect(r.paused()).toBe(true));
    await new Promise((res) => setTimeout(res, 300));
    // Held at the high-water mark (plus what one read brings), the rest waits in the daemon's socket.
    expect(r.unacked()).toBeLessThan(LIMITS.highWater + 256 * 1024);
    expect(received).toBe(r.unacked());
    expect(received).toBeLessThan(total * (line.length - 1));
    expect(pauses).toBe(1);
    // Acknowledging lets it all through (a window acknowledges as it consumes).
    port1.on('message', (m) => typeof m === 'string' && port1.postMessage({ t: 'ack', n: m.length }));
    port1.postMessage({ t: 'ack', n: r.unacked() });
    await vi.waitFor(() => expect(received).toBe(total * (line.length - 1)), { timeout: 10_000 });
    expect(pauses).toBeGreaterThanOrEqual(1);
  });

  it('cuts off a window whose input the daemon does not take', async () => {
    const srv = await unixServer();
    const sock = await connected(srv.path);
    const daemon = await srv.accepted;
    daemon.pause(); // a daemon that reads nothing from this connection
    const { port1, port2 } = new MessageChannel();
    const got = collect(port1);
    const reasons: string[] = [];
    relayRpcPort(mainSide(port2), sock, { ...LIMITS, onClose: (r) => reasons.push(r) });
    const frame = JSON.stringify({ t: 'serial.in', sid: 1, data: 'A'.repeat(60_000) });
    for (let i = 0; i < 200 && !reasons.length; i++) {
      port1.postMessage(frame);
      await new Promise((r) => setTimeout(r, 2));
    }
    await vi.waitFor(() => expect(reasons[0]).toMatch(/input waiting/));
    await vi.waitFor(() => expect(got.at(-1)).toMatchObject({ t: 'close', reason: expect.stringMatching(/input waiting/) }));
    port1.close();
  });

  it('closes the daemon connection when the window goes away', async () => {
    const srv = await unixServer();
    const sock = await connected(srv.path);
    const daemon = await srv.accepted;
    const { port1, port2 } = new MessageChannel();
    relayRpcPort(mainSide(port2), sock, LIMITS);
    const closed = new Promise((r) => daemon.once('close', r));
    port1.close();
    await closed;
  });
});

describe('vnc channel', () => {
  it('passes RFB bytes both ways and refuses text', async () => {
    const srv = await unixServer();
    const sock = await connected(srv.path);
    const vnc = await srv.accepted;
    const { port1, port2 } = new MessageChannel();
    const got = collect(port1);
    const reasons: string[] = [];
    relayVncPort(mainSide(port2), sock, { ...LIMITS, onClose: (r) => reasons.push(r) });
    vnc.write(Buffer.from('RFB 003.008\n'));
    await vi.waitFor(() => expect(got).toHaveLength(2));
    expect(got[0]).toEqual({ t: 'open' });
    expect(Buffer.from(got[1] as Uint8Array).toString()).toBe('RFB 003.008\n');
    let received = Buffer.alloc(0);
    vnc.on('data', (d) => (received = Buffer.concat([received, d])));
    port1.postMessage(new Uint8Array([0x52, 0x46, 0x42]));
    port1.postMessage(new Uint8Array([1, 2]).buffer);
    await vi.waitFor(() => expect([...received]).toEqual([0x52, 0x46, 0x42, 1, 2]));
    port1.postMessage('not bytes');
    await vi.waitFor(() => expect(reasons).toEqual(['RFB is bytes only']));
    port1.close();
  });
});

describe('channel hub', () => {
  it('bounds the channels and says why it refuses one', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'vmd-hub-'));
    cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));
    const srv = await unixServer();
    const hub = new ChannelHub(path.join(tmp, 'home'), { maxVnc: 1, vncSocket: async (vm) => (vm === 'on' ? srv.path : Promise.reject(new Error(`VM ${vm} has no display`))) });
    const a = new MessageChannel();
    expect(await hub.openChannel({ kind: 'vnc', vm: 'on' }, mainSide(a.port2))).toBeDefined();
    expect(hub.counts().vnc).toBe(1);
    const b = new MessageChannel();
    const gotB = collect(b.port1);
    expect(await hub.openChannel({ kind: 'vnc', vm: 'on' }, mainSide(b.port2))).toBeUndefined();
    await vi.waitFor(() => expect(gotB).toEqual([{ t: 'close', reason: 'too many displays open (limit 1)' }]));
    a.port1.close();
    await vi.waitFor(() => expect(hub.counts().vnc).toBe(0));
    const c = new MessageChannel();
    const gotC = collect(c.port1);
    expect(await hub.openChannel({ kind: 'vnc', vm: 'off' }, mainSide(c.port2))).toBeUndefined();
    await vi.waitFor(() => expect(gotC).toEqual([{ t: 'close', reason: 'VM off has no display' }]));
    expect(hub.counts().vnc).toBe(0);
    b.port1.close();
    c.port1.close();
  });
});
