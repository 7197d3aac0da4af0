// The client matches answers to calls, delivers events and serial bytes, and fails pending calls when the socket drops.
import { describe, expect, it, vi } from 'vitest';
import { RpcClient, RpcCallError, bytesToBase64, base64ToBytes } from './client';

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

  it('round-trips bytes through base64', () => {
    const bytes = new Uint8Array(70_000).map((_, i) => i % 256);
    expect(base64ToBytes(bytesToBase64(bytes))).toEqual(bytes);
  });
});
