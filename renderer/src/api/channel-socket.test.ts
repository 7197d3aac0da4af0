// @vitest-environment jsdom
// The Electron shell's transport in the page: ChannelSocket over the preload's openChannel carries RpcClient
// (calls, events, reconnect with a new channel) and satisfies noVNC's raw-channel check, bytes both ways.
import { describe, expect, it } from 'vitest';

interface NoVncWebsock {
  on(ev: string, fn: () => void): void;
  attach(channel: unknown): void;
  readonly readyState: string;
  rQlen(): number;
  rQshift8(): number;
  sQpush8(n: number): void;
  flush(): void;
  close(): void;
}
// noVNC's socket layer, which RFB uses for a URL and a raw channel alike (the package exports only rfb.js).
const { default: Websock } = (await import('../../../node_modules/@novnc/novnc/core/websock.js' as string)) as { default: new () => NoVncWebsock };
import { ChannelSocket, type ChannelHandlers, type OpenChannel } from './channel-socket';
import { RpcClient } from './client';

/** A preload stand-in: records what the page sends, lets the test play the main process. */
function fakePreload() {
  const channels: { kind: string; vm?: string; h: ChannelHandlers; sent: (string | Uint8Array)[]; closed: boolean }[] = [];
  const open: OpenChannel = (kind, vm, h) => {
    const ch = { kind, vm, h, sent: [] as (string | Uint8Array)[], closed: false };
    channels.push(ch);
    return { send: (d) => ch.sent.push(d), close: () => (ch.closed = true) };
  };
  return { open, channels };
}

describe('ChannelSocket', () => {
  it('carries RpcClient: calls, answers, events, and a new channel after the old one ends', async () => {
    const p = fakePreload();
    const c = new RpcClient('vmdesk:rpc', () => new ChannelSocket(p.open, 'rpc') as unknown as WebSocket);
    const events: unknown[] = [];
    c.onEvent((e) => events.push(e));
    c.connect();
    expect(p.channels).toHaveLength(1);
    expect(p.channels[0]!.kind).toBe('rpc');
    const pending = c.call('vm.list', {});
    p.channels[0]!.h.onOpen();
    await new Promise((r) => setTimeout(r, 0));
    const call = JSON.parse(p.channels[0]!.sent[0] as string);
    expect(call).toMatchObject({ t: 'call', method: 'vm.list' });
    p.channels[0]!.h.onMessage(JSON.stringify({ t: 'result', id: call.id, result: [] }));
    expect(await pending).toEqual([]);
    p.channels[0]!.h.onMessage(JSON.stringify({ t: 'event', event: { type: 'vm-deleted', id: 'x' } }));
    expect(events).toEqual([{ type: 'vm-deleted', id: 'x' }]);
    expect(c.state).toBe('open');
    // The main process ends the channel (the daemon restarted): the client reconnects on a new channel.
    p.channels[0]!.h.onClose('the daemon closed the connection');
    expect(c.state).toBe('closed');
    await expect.poll(() => p.channels.length, { timeout: 5000 }).toBe(2);
    p.channels[1]!.h.onOpen();
    expect(c.state).toBe('open');
    c.dispose();
    expect(p.channels[1]!.closed).toBe(true);
  });

  it('is a raw channel noVNC accepts: bytes in as ArrayBuffers, bytes out as Uint8Arrays', () => {
    const p = fakePreload();
    const sock = new ChannelSocket(p.open, 'vnc', 'vm1');
    expect(p.channels[0]).toMatchObject({ kind: 'vnc', vm: 'vm1' });
    const ws = new Websock();
    const got: number[] = [];
    let opened = false;
    ws.on('open', () => (opened = true));
    ws.on('message', () => {
      while (ws.rQlen() > 0) got.push(ws.rQshift8());
    });
    expect(() => ws.attach(sock)).not.toThrow();
    expect(sock.binaryType).toBe('arraybuffer');
    p.channels[0]!.h.onOpen();
    expect(opened).toBe(true);
    expect(ws.readyState).toBe('open');
    p.channels[0]!.h.onMessage(new Uint8Array([0x52, 0x46, 0x42]));
    expect(got).toEqual([0x52, 0x46, 0x42]);
    ws.sQpush8(7);
    ws.flush();
    expect(p.channels[0]!.sent.map((d) => [...(d as Uint8Array)])).toEqual([[7]]);
    ws.close();
    expect(p.channels[0]!.closed).toBe(true);
    expect(sock.readyState).toBe(ChannelSocket.CLOSED);
  });

  it('reports a channel refused before it opened as an error, then a close', () => {
    const p = fakePreload();
    const sock = new ChannelSocket(p.open, 'vnc', 'off');
    const seen: string[] = [];
    sock.onerror = () => seen.push('error');
    sock.onclose = (e) => seen.push(`close ${e.code} ${e.reason}`);
    p.channels[0]!.h.onClose('VM off has no display');
    expect(seen).toEqual(['error', 'close 1006 VM off has no display']);
    sock.send('ignored after close');
    expect(p.channels[0]!.sent).toEqual([]);
  });
});
