// RPC over the WebSocket: every message validated against main/api/rpc.ts; bad params and unknown methods refused with EINVAL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { Core } from '../../main/core/core.js';
import { startServer, type RunningServer } from '../../main/server/server.js';
import { ReplayDeduper } from '../../main/server/session.js';
import type { ServerFrame } from '../../main/api/rpc.js';

let tmp: string;
let core: Core;
let server: RunningServer;
let kernel: string;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-rpc-'));
  kernel = path.join(tmp, 'vmlinuz');
  writeFileSync(kernel, 'not really a kernel');
  core = new Core({ home: path.join(tmp, 'home') });
  await core.boot();
  server = await startServer({ core, staticDir: tmp });
});

afterAll(async () => {
  await server.close();
  await core.shutdown();
  rmSync(tmp, { recursive: true, force: true });
});

/** A minimal client: call() returns the result or the error frame; events are collected. */
async function connect() {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, { headers: { 'x-vmdesk-token': server.token } });
  const frames: ServerFrame[] = [];
  const waiters: ((f: ServerFrame) => void)[] = [];
  ws.on('message', (d) => {
    const f = JSON.parse(String(d)) as ServerFrame;
    frames.push(f);
    for (const w of waiters.splice(0)) w(f);
  });
  await new Promise((r) => ws.once('open', r));
  let id = 1;
  const next = (pred: (f: ServerFrame) => boolean) =>
    new Promise<ServerFrame>((resolve) => {
      const found = frames.find(pred);
      if (found) return resolve(found);
      const check = (f: ServerFrame) => (pred(f) ? resolve(f) : waiters.push(check));
      waiters.push(check);
    });
  return {
    ws,
    frames,
    next,
    async call(method: string, params?: unknown) {
      const myId = id++;
      ws.send(JSON.stringify({ t: 'call', id: myId, method, params }));
      return next((f) => (f.t === 'result' || f.t === 'error') && f.id === myId);
    },
    raw(text: string) {
      ws.send(text);
    },
  };
}

describe('RPC', () => {
  it('lists VMs and forwards events to every connected client', async () => {
    const a = await connect();
    const b = await connect();
    const list = await a.call('vm.list', {});
    expect(list).toMatchObject({ t: 'result', result: [] });
    const created = await a.call('vm.create', { name: 'rpc-vm', cpus: 1, memoryMiB: 64, directKernel: { kernel, cmdline: 'console=ttyS0' }, network: [{ mode: 'none', forwards: [] }] });
    expect(created.t).toBe('result');
    const ev = await b.next((f) => f.t === 'event' && f.event.type === 'vm-created');
    expect(ev).toMatchObject({ event: { info: { name: 'rpc-vm' } } });
    const progress = await a.next((f) => f.t === 'event' && f.event.type === 'progress' && !!f.event.done);
    expect(progress).toBeDefined();
    a.ws.close();
    b.ws.close();
  });

  it('rejects bad params with EINVAL before the core sees them', async () => {
    const c = await connect();
    const bad = [
      ['vm.create', { name: '', cpus: 1 }],
      ['vm.create', { name: '../x' }],
      ['vm.create', { name: 'ok', cpus: 0 }],
      ['vm.create', { name: 'ok', memoryMiB: 'lots' }],
      ['vm.create', { name: 'ok', iso: 'relative.iso' }],
      ['vm.create', { name: 'ok', sneaky: true }],
      ['vm.start', {}],
      ['vm.start', { id: 42 }],
      ['vm.update', { id: 'rpc-vm', patch: { cpus: -1 } }],
      ['vm.stop', { id: 'rpc-vm', timeoutMs: 'soon' }],
    ] as const;
    for (const [method, params] of bad) {
      const r = await c.call(method, params);
      expect(r.t, `${method} ${JSON.stringify(params)}`).toBe('error');
      if (r.t === 'error') {
        expect(r.error.code).toBe('EINVAL');
        expect(r.error.message).toMatch(/invalid parameters/);
      }
    }
    expect((await c.call('vm.list', {})).t).toBe('result');
    expect(((await c.call('vm.list', {})) as { result: unknown[] }).result).toHaveLength(1);
    c.ws.close();
  });

  it('answers the snapshot module\'s methods through the same dispatcher', async () => {
    const c = await connect();
    const r = await c.call('snapshot.list', { id: 'rpc-vm' });
    expect(r).toMatchObject({ t: 'result', result: { vmName: 'rpc-vm', snapshots: [] } });
    const bad = await c.call('snapshot.take', { id: 'rpc-vm' });
    expect(bad).toMatchObject({ t: 'error', error: { code: 'EINVAL' } });
    c.ws.close();
  });

  it('refuses unknown methods', async () => {
    const c = await connect();
    for (const m of ['vm.format', 'constructor', '__proto__', 'core.command', 'toString']) {
      const r = await c.call(m, {});
      expect(r).toMatchObject({ t: 'error', error: { code: 'EINVAL' } });
      if (r.t === 'error') expect(r.error.message).toContain('unknown method');
    }
    c.ws.close();
  });

  it('answers malformed frames with an error and survives', async () => {
    const c = await connect();
    c.raw(JSON.stringify({ t: 'call', id: 77, method: 'vm.list', params: {}, extra: 1 }));
    const r = await c.next((f) => f.t === 'error' && f.id === 77);
    expect(r).toMatchObject({ error: { code: 'EINVAL' } });
    c.raw(JSON.stringify({ t: 'nope' }));
    expect((await c.call('vm.list', {})).t).toBe('result');
    c.ws.close();
  });

  it('reports core errors with code, message and details', async () => {
    const c = await connect();
    const r = await c.call('vm.start', { id: 'no-such-vm' });
    expect(r).toMatchObject({ t: 'error', error: { code: 'ENOTFOUND' } });
    if (r.t === 'error') expect(Array.isArray(r.error.details)).toBe(true);
    const s = await c.call('vm.pause', { id: 'rpc-vm' });
    expect(s).toMatchObject({ t: 'error', error: { code: 'ESTATE' } });
    c.ws.close();
  });

  it('closes a serial stream with an error when the VM is not running', async () => {
    const c = await connect();
    c.raw(JSON.stringify({ t: 'serial.open', sid: 1, vm: 'rpc-vm' }));
    const r = await c.next((f) => f.t === 'serial.closed' && f.sid === 1);
    expect(r).toMatchObject({ error: { code: 'ESTATE' } });
    c.ws.close();
  });
});

describe('serial replay dedupe', () => {
  const b = (t: string) => Buffer.from(t);
  const log = b('[0.1] Linux version 6.1\n[0.2] Memory: 256M\n[0.3] Run /init as init process\nVMDESK-GUEST-READY\n/ # ');
  it('drops the engine\'s replay of what the log already showed, then passes live bytes', () => {
    const d = new ReplayDeduper(log);
    expect(d.push(b('[0.2] Memory: 256M\n[0.3] Run /init'))).toEqual(b(''));
    expect(d.push(b(' as init process\nVMDESK-GUEST-READY\n/ # ls\r\n'))).toEqual(b('ls\r\n'));
    expect(d.push(b('more'))).toEqual(b('more'));
  });
  it('tolerates a replay that differs from the log in the middle', () => {
    const d = new ReplayDeduper(log);
    expect(d.push(b('[0.1] Linux version 6.1\n[0.3] Run /init as init process\nVMDESK-GUEST-READY\n/ # '))).toEqual(b(''));
    expect(d.push(b('x'))).toEqual(b('x'));
  });
  it('passes a stream that does not repeat the log at once', () => {
    const d = new ReplayDeduper(log);
    expect(d.push(b('brand new output'))).toEqual(b('brand new output'));
  });
  it('flushes what it held when the log\'s end never comes', () => {
    const d = new ReplayDeduper(log);
    expect(d.push(b('[0.2] Memory'))).toEqual(b(''));
    expect(d.flush()).toEqual(b('[0.2] Memory'));
  });
  it('does nothing with an empty log', () => {
    expect(new ReplayDeduper(b('')).push(b('x'))).toEqual(b('x'));
  });
});
