// QmpClient against a fake QMP unix-socket server: handshake, id matching, errors, events, timeouts, dying sockets.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VmdeskError } from '../../main/api/errors.js';
import { QmpClient, type QmpEvent } from '../../main/engines/qemu/qmp.js';

const GREETING = { QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: '' }, capabilities: ['oob'] } };

type Handler = (msg: { execute: string; id?: string; arguments?: unknown }, sock: Socket) => void;

let dir: string;
let server: Server;
let sockPath: string;
let clients: QmpClient[] = [];

/** Starts a fake QMP server whose replies to everything but qmp_capabilities come from `handler`. */
function fakeQmp(handler: Handler, opts: { greeting?: boolean } = {}): Promise<void> {
  server = createServer((sock) => {
    if (opts.greeting !== false) sock.write(JSON.stringify(GREETING) + '\r\n');
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (msg.execute === 'qmp_capabilities') sock.write(JSON.stringify({ return: {}, id: msg.id }) + '\r\n');
        else handler(msg, sock);
      }
    });
    sock.on('error', () => {});
  });
  return new Promise((r) => server.listen(sockPath, r));
}

async function connect(opts = {}): Promise<QmpClient> {
  const c = await QmpClient.connect(sockPath, opts);
  clients.push(c);
  return c;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-'));
  sockPath = join(dir, 'qmp.sock');
});

afterEach(async () => {
  for (const c of clients) c.close();
  clients = [];
  await new Promise((r) => server?.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('QmpClient', () => {
  it('reads the greeting and negotiates capabilities', async () => {
    await fakeQmp(() => {});
    const c = await connect();
    expect(c.greeting?.QMP.version.qemu.major).toBe(7);
  });

  it('matches replies to commands by id even out of order', async () => {
    const held: Array<{ id?: string; execute: string; sock: Socket }> = [];
    await fakeQmp((msg, sock) => {
      held.push({ ...msg, sock });
      if (held.length === 2) {
        // Reply to the second command first.
        for (const m of [held[1]!, held[0]!]) m.sock.write(JSON.stringify({ return: { name: m.execute }, id: m.id }) + '\n');
      }
    });
    const c = await connect();
    const [a, b] = await Promise.all([c.execute('query-status'), c.execute('query-name')]);
    expect(a).toEqual({ name: 'query-status' });
    expect(b).toEqual({ name: 'query-name' });
  });

  it('rejects with a VmdeskError carrying the QMP error', async () => {
    await fakeQmp((msg, sock) => sock.write(JSON.stringify({ error: { class: 'GenericError', desc: 'nope' }, id: msg.id }) + '\n'));
    const c = await connect();
    const err = await c.execute('stop').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmdeskError);
    expect((err as VmdeskError).code).toBe('EENGINE');
    expect((err as VmdeskError).message).toContain('nope');
  });

  it('emits events', async () => {
    await fakeQmp((msg, sock) => {
      sock.write(JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 } }) + '\n');
      sock.write(JSON.stringify({ return: {}, id: msg.id }) + '\n');
    });
    const c = await connect();
    const events: QmpEvent[] = [];
    c.on('event', (e: QmpEvent) => events.push(e));
    await c.execute('stop');
    expect(events).toEqual([{ event: 'STOP', data: {}, timestamp: { seconds: 1, microseconds: 2 } }]);
  });

  it('times out a command that gets no reply, and stays usable', async () => {
    await fakeQmp((msg, sock) => {
      if (msg.execute === 'query-status') sock.write(JSON.stringify({ return: { status: 'running' }, id: msg.id }) + '\n');
    });
    const c = await connect();
    const err = await c.execute('never', undefined, 100).catch((e: unknown) => e);
    expect((err as VmdeskError).code).toBe('ETIMEDOUT');
    expect(await c.execute('query-status')).toEqual({ status: 'running' });
  });

  it('rejects pending commands when the socket dies mid-command', async () => {
    await fakeQmp((_msg, sock) => sock.destroy());
    const c = await connect();
    let closeReason: unknown;
    c.on('close', (e: unknown) => (closeReason = e));
    const err = await c.execute('query-status').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmdeskError);
    expect((err as VmdeskError).code).toBe('EENGINE');
    expect(closeReason).toBeInstanceOf(VmdeskError);
    await expect(c.execute('query-status')).rejects.toBeInstanceOf(VmdeskError);
  });

  it('skips garbage lines', async () => {
    await fakeQmp((msg, sock) => {
      sock.write('this is not json\n[1,2]\n');
      sock.write(JSON.stringify({ return: 5, id: msg.id }) + '\n');
    });
    const c = await connect();
    const garbage: string[] = [];
    c.on('protocol-error', (l: string) => garbage.push(l));
    expect(await c.execute('x')).toBe(5);
    expect(garbage).toEqual(['this is not json', '[1,2]']);
  });

  it('fails cleanly when nothing listens or no greeting comes', async () => {
    await expect(QmpClient.connect(join(dir, 'absent.sock'))).rejects.toBeInstanceOf(VmdeskError);
    await fakeQmp(() => {}, { greeting: false });
    const err = await QmpClient.connect(sockPath, { timeoutMs: 150 }).catch((e: unknown) => e);
    expect((err as VmdeskError).code).toBe('ETIMEDOUT');
  });

  it('close() rejects later commands without emitting an error', async () => {
    await fakeQmp(() => {});
    const c = await connect();
    let reason: unknown = 'unset';
    c.on('close', (e: unknown) => (reason = e));
    c.close();
    expect(reason).toBeUndefined();
    await expect(c.execute('query-status')).rejects.toBeInstanceOf(VmdeskError);
  });
});
