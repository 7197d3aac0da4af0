// The client matches answers to calls, delivers events and serial bytes, and fails pending calls when the socket drops.
import { describe, expect, it, vi } from 'vitest';
import { RpcClient, RpcCallError, bytesToBase64, base64ToBytes } from './client';
import { RpcCallError as FrameRpcCallError } from '../../../main/api/frame-client';

class FakeSocket {
  sent: any[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((m: { data: string }) => void) | null = null;
  onclose: (() => void) | null = null;
  send(s: string) {
    this.sent.push(JSON.parse(s));
  }
  close() {
    this.onclose?.();
  }
  deliver(frame: unknown) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
}

function client() {
  const sockets: FakeSocket[] = [];
  const c = new RpcClient('ws://x/ws', () => {
    const s = new FakeSocket();
    sockets.push(s);
    return s as unknown as WebSocket;
  });
  c.connect();
  sockets[0]!.onopen?.();
  return { c, sockets };
}

describe('RpcClient', () => {
  it('resolves results and rejects errors by call id', async () => {
    const { c, sockets } = client();
    const a = c.call('vm.list', {});
    const b = c.call('vm.get', { id: 'nope' });
    await Promise.resolve();
    const [fa, fb] = sockets[0]!.sent;
    expect(fa).toMatchObject({ t: 'call', method: 'vm.list' });
    sockets[0]!.deliver({ t: 'error', id: fb.id, error: { code: 'ENOTFOUND', message: 'no VM named "nope"', details: [] } });
    sockets[0]!.deliver({ t: 'result', id: fa.id, result: [] });
    expect(await a).toEqual([]);
    await expect(b).rejects.toMatchObject({ code: 'ENOTFOUND', message: 'no VM named "nope"' });
  });

  it('delivers events and serial data, and fails pending calls on disconnect', async () => {
    vi.useFakeTimers();
    const { c, sockets } = client();
    const events: unknown[] = [];
    c.onEvent((e) => events.push(e));
    sockets[0]!.deliver({ t: 'event', event: { type: 'vm-deleted', id: 'x' } });
    expect(events).toEqual([{ type: 'vm-deleted', id: 'x' }]);

    const got: string[] = [];
    const closed: unknown[] = [];
    c.openSerial('vm', { onData: (b) => got.push(new TextDecoder().decode(b)), onClose: (e) => closed.push(e) });
    await Promise.resolve();
    const open = sockets[0]!.sent.find((f) => f.t === 'serial.open');
    sockets[0]!.deliver({ t: 'serial.data', sid: open.sid, data: bytesToBase64(new TextEncoder().encode('login: ')) });
    expect(got).toEqual(['login: ']);

    const pending = c.call('vm.list', {});
    await Promise.resolve();
    sockets[0]!.close();
    await expect(pending).rejects.toBeInstanceOf(RpcCallError);
    expect(closed).toHaveLength(1);
    vi.advanceTimersByTime(300);
    expect(sockets).toHaveLength(2); // reconnected
    c.dispose();
    vi.useRealTimers();
  });

  it('holds calls and serial opens until the socket opens, and reports the frame protocol\'s errors', async () => {
    const sockets: FakeSocket[] = [];
    const c = new RpcClient('ws://x/ws', () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s as unknown as WebSocket;
    });
    const call = c.call('vm.list', {});
    const got: string[] = [];
    const stream = c.openSerial('vm', { onData: (b, replay) => got.push(`${replay ? 'replay:' : ''}${new TextDecoder().decode(b)}`), onClose: () => {} });
    expect(sockets).toHaveLength(1); // the first call connects
    expect(sockets[0]!.sent).toEqual([]);
    sockets[0]!.onopen?.();
    await Promise.resolve();
    await Promise.resolve();
    const sent = sockets[0]!.sent;
    expect(sent.map((f) => f.t).sort()).toEqual(['call', 'serial.open']);
    // The hello frame (protocol version) is the FrameClient's business; it reaches no listener.
    sockets[0]!.deliver({ t: 'hello', version: 2, app: '0.1.0', build: 'x' });
    const open = sent.find((f) => f.t === 'serial.open');
    sockets[0]!.deliver({ t: 'serial.data', sid: open.sid, data: bytesToBase64(new TextEncoder().encode('old')), replay: true });
    expect(got).toEqual(['replay:old']);
    stream.write('ls\n');
    expect(sockets[0]!.sent.at(-1)).toEqual({ t: 'serial.in', sid: open.sid, data: bytesToBase64(new TextEncoder().encode('ls\n')) });
    stream.close();
    expect(sockets[0]!.sent.at(-1)).toEqual({ t: 'serial.close', sid: open.sid });
    stream.write('ignored');
    expect(sockets[0]!.sent.at(-1)).toEqual({ t: 'serial.close', sid: open.sid });

    const id = sent.find((f) => f.t === 'call').id;
    sockets[0]!.deliver({ t: 'error', id, error: { code: 'EBUSY', message: 'busy', details: ['a job runs'] } });
    const err = await call.catch((e: unknown) => e);
    // One error class across the renderer and every other front door.
    expect(err).toBeInstanceOf(FrameRpcCallError);
    expect(err).toBeInstanceOf(RpcCallError);
    expect(err).toMatchObject({ code: 'EBUSY', details: ['a job runs'] });
    c.dispose();
  });

  it('fails a call at once while disconnected after having been up, instead of waiting for ever', async () => {
    vi.useFakeTimers();
    const { c, sockets } = client();
    sockets[0]!.close();
    expect(c.state).toBe('closed');
    await expect(c.call('vm.resume', { id: 'x' })).rejects.toMatchObject({ code: 'ENET', message: expect.stringMatching(/not connected/) });
    c.dispose();
    vi.useRealTimers();
  });

  it('says the session expired when the server answers but refuses the token, and stops retrying', async () => {
    vi.useFakeTimers();
    const sockets: FakeSocket[] = [];
    let answer: 'ok' | 'expired' | 'unreachable' = 'unreachable';
    const c = new RpcClient(
      'ws://x/ws',
      () => {
        const s = new FakeSocket();
        sockets.push(s);
        return s as unknown as WebSocket;
      },
      async () => answer,
    );
    const states: string[] = [];
    c.onState((s) => states.push(s));
    c.connect();
    sockets[0]!.onopen?.();
    // The server goes away: unreachable, so the client keeps trying.
    sockets[0]!.close();
    await vi.advanceTimersByTimeAsync(300);
    expect(sockets).toHaveLength(2);
    // It is back with a new token: the upgrade is refused before it opens and the probe gets a 401.
    answer = 'expired';
    sockets[1]!.close();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(c.state).toBe('expired');
    expect(sockets).toHaveLength(2);
    expect(states.at(-1)).toBe('expired');
    await expect(c.call('vm.list', {})).rejects.toMatchObject({ message: expect.stringMatching(/expired/) });
    vi.useRealTimers();
  });

  it('round-trips bytes through base64', () => {
    const bytes = new Uint8Array(70_000).map((_, i) => i % 256);
    expect(base64ToBytes(bytesToBase64(bytes))).toEqual(bytes);
  });
});
