// RPC through both front doors, the daemon's unix socket (the CLI's) and the GUI server's relay (a browser's):
// every message validated against main/api/rpc.ts by the daemon's session, bad params and unknown methods
// refused with EINVAL before the core sees them, events of one client's actions pushed to every client, and
// the relay starting the library's daemon when none runs.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ServerFrame } from '../../main/api/rpc.js';
import { PROTOCOL_VERSION } from '../../main/api/rpc.js';
import { startDaemon } from '../../main/daemon/daemon.js';
import { daemonSocketPath, runtimeRoot } from '../../main/platform/paths.js';
import { startServer } from '../../main/server/server.js';
import { daemonClient, lineClient, openLibrary, settledClients, wsClient, type Library, type RawClient } from '../helpers/daemon.js';
import { registerTestEngine, testEngine, testVm, unregisterTestEngine } from '../helpers/test-engine.js';

let lib: Library;
let kernel: string;

beforeAll(async () => {
  registerTestEngine();
  lib = await openLibrary();
  kernel = path.join(lib.tmp, 'vmlinuz');
  writeFileSync(kernel, 'not really a kernel');
});

afterAll(async () => {
  await lib?.close();
  unregisterTestEngine();
});

const doors: [string, () => Promise<RawClient>][] = [
  ['the daemon socket', () => lineClient(lib.daemon.socketPath)],
  ['the relay', () => wsClient(lib.server)],
];

const decode = (f: ServerFrame) => (f.t === 'serial.data' ? Buffer.from(f.data, 'base64').toString() : '');

describe.each(doors)('RPC through %s', (door, connect) => {
  const vmName = `rpc-vm-${door.split(' ')[1]}`;

  it('greets with the protocol version, the build and the daemon pid, first of all frames', async () => {
    const c = await connect();
    const hello = await c.next((f) => f.t === 'hello');
    expect(c.frames[0]).toBe(hello);
    expect(hello).toMatchObject({ t: 'hello', version: PROTOCOL_VERSION, pid: process.pid });
    expect(hello.t === 'hello' && hello.build).toBeTruthy();
    c.close();
  });

  it('lists VMs and pushes the events of one client\'s calls to every client, through either door', async () => {
    const a = await connect();
    const b = await lineClient(lib.daemon.socketPath);
    const c = await wsClient(lib.server);
    const before = await a.call('vm.list', {});
    expect(before.t).toBe('result');
    const created = await a.call('vm.create', { name: vmName, cpus: 1, memoryMiB: 64, directKernel: { kernel, cmdline: 'console=ttyS0' }, network: [{ mode: 'none', forwards: [] }] });
    expect(created.t).toBe('result');
    for (const other of [b, c]) {
      const ev = await other.next((f) => f.t === 'event' && f.event.type === 'vm-created' && f.event.info.name === vmName);
      expect(ev).toMatchObject({ event: { info: { name: vmName, state: 'stopped' } } });
    }
    // vm.create is a long call: its progress ends with a done event under one opId.
    const done = await a.next((f) => f.t === 'event' && f.event.type === 'progress' && !!f.event.done);
    expect(done).toMatchObject({ event: { phase: 'done', fraction: 1 } });
    const after = await a.call('vm.list', {});
    expect(after.t === 'result' && (after.result as { name: string }[]).map((v) => v.name)).toContain(vmName);
    for (const x of [a, b, c]) x.close();
  });

  it('rejects bad params with EINVAL before the core sees them', async () => {
    const c = await connect();
    const count = async () => ((await c.call('vm.list', {})) as { result: unknown[] }).result.length;
    const vms = await count();
    const bad = [
      ['vm.create', { name: '', cpus: 1 }],
      ['vm.create', { name: '../x' }],
      ['vm.create', { name: 'ok', cpus: 0 }],
      ['vm.create', { name: 'ok', memoryMiB: 'lots' }],
      ['vm.create', { name: 'ok', iso: 'relative.iso' }],
      ['vm.create', { name: 'ok', sneaky: true }],
      ['vm.start', {}],
      ['vm.start', { id: 42 }],
      ['vm.update', { id: vmName, patch: { cpus: -1 } }],
      ['vm.stop', { id: vmName, timeoutMs: 'soon' }],
      ['daemon.stop', { ifIdle: 'please' }],
    ] as const;
    for (const [method, params] of bad) {
      const r = await c.call(method, params);
      expect(r.t, `${method} ${JSON.stringify(params)}`).toBe('error');
      if (r.t === 'error') {
        expect(r.error.code).toBe('EINVAL');
        expect(r.error.message).toMatch(/invalid parameters/);
      }
    }
    // Nothing was created, and the daemon is still there.
    expect(await count()).toBe(vms);
    expect(lib.daemon.stats().clients).toBeGreaterThan(0);
    c.close();
  });

  it('answers the snapshot module\'s methods through the same dispatcher', async () => {
    const c = await connect();
    const r = await c.call('snapshot.list', { id: vmName });
    expect(r).toMatchObject({ t: 'result', result: { vmName, snapshots: [] } });
    const bad = await c.call('snapshot.take', { id: vmName });
    expect(bad).toMatchObject({ t: 'error', error: { code: 'EINVAL' } });
    c.close();
  });

  it('refuses unknown methods', async () => {
    const c = await connect();
    for (const m of ['vm.format', 'constructor', '__proto__', 'core.command', 'toString', 'hasOwnProperty']) {
      const r = await c.call(m, {});
      expect(r).toMatchObject({ t: 'error', error: { code: 'EINVAL' } });
      if (r.t === 'error') expect(r.error.message).toContain('unknown method');
    }
    c.close();
  });

  it('answers malformed frames with an error and survives', async () => {
    const c = await connect();
    c.raw(JSON.stringify({ t: 'call', id: 77, method: 'vm.list', params: {}, extra: 1 }));
    const r = await c.next((f) => f.t === 'error' && f.id === 77);
    expect(r).toMatchObject({ error: { code: 'EINVAL' } });
    c.raw(JSON.stringify({ t: 'nope' }));
    c.raw('[]');
    c.raw('"a string"');
    expect((await c.call('vm.list', {})).t).toBe('result');
    expect(c.isClosed).toBe(false);
    c.close();
  });

  it('ends a connection that sends text that is not JSON, saying why', async () => {
    const c = await connect();
    await c.next((f) => f.t === 'hello');
    c.raw('this is not JSON');
    const r = await c.next((f) => f.t === 'error' && f.id === -1);
    expect(r).toMatchObject({ error: { code: 'EINVAL', message: 'frames must be JSON text' } });
    await c.closed;
  });

  it('reports core errors with code, message and details', async () => {
    const c = await connect();
    const r = await c.call('vm.start', { id: 'no-such-vm' });
    expect(r).toMatchObject({ t: 'error', error: { code: 'ENOTFOUND' } });
    if (r.t === 'error') expect(Array.isArray(r.error.details)).toBe(true);
    const s = await c.call('vm.pause', { id: vmName });
    expect(s).toMatchObject({ t: 'error', error: { code: 'ESTATE' } });
    c.close();
  });

  it('closes a serial stream with an error when the VM is not running', async () => {
    const c = await connect();
    c.send({ t: 'serial.open', sid: 1, vm: vmName });
    const r = await c.next((f) => f.t === 'serial.closed' && f.sid === 1);
    expect(r).toMatchObject({ error: { code: 'ESTATE' } });
    c.send({ t: 'serial.open', sid: 2, vm: 'no-such-vm' });
    expect(await c.next((f) => f.t === 'serial.closed' && f.sid === 2)).toMatchObject({ error: { code: 'ENOTFOUND' } });
    c.close();
  });

  it('answers daemon.status: its pid, build, clients and library', async () => {
    const c = await connect();
    const r = await c.call('daemon.status', {});
    expect(r.t).toBe('result');
    const s = (r as { result: { pid: number; home: string; clients: number; protocol: number; vms: number } }).result;
    expect(s).toMatchObject({ pid: process.pid, home: lib.home, protocol: PROTOCOL_VERSION, idleExitMs: 0 });
    expect(s.clients).toBeGreaterThanOrEqual(1);
    expect(s.vms).toBe(lib.daemon.core.count());
    c.close();
  });
});

describe('serial console replay', () => {
  it('shows this run\'s output once to every console that opens, then live bytes, and never an earlier run\'s', async () => {
    const a = await lib.client();
    const vm = await a.call('vm.create', testVm('replay'));
    // An earlier run's output, still in the log the engine keeps across runs.
    mkdirSync(path.join(vm.bundle, 'logs'), { recursive: true });
    writeFileSync(path.join(vm.bundle, 'logs', 'serial.log'), 'EARLIER-RUN\n');
    await a.call('vm.start', { id: vm.id });
    const guest = testEngine.guest(vm.id);
    guest.serial.print('BOOT-1\n');

    const viaSocket = await lineClient(lib.daemon.socketPath);
    viaSocket.send({ t: 'serial.open', sid: 1, vm: 'replay' });
    const replay1 = await viaSocket.next((f) => f.t === 'serial.data' && f.sid === 1);
    expect(replay1).toMatchObject({ replay: true });
    expect(decode(replay1)).toBe('BOOT-1\n');
    guest.serial.print('LIVE-2\n');
    const live = await viaSocket.next((f) => f.t === 'serial.data' && f.sid === 1 && !f.replay);
    expect(decode(live)).toBe('LIVE-2\n');

    // A browser opening the console later: everything this run printed, once, in order.
    const viaRelay = await wsClient(lib.server);
    viaRelay.send({ t: 'serial.open', sid: 9, vm: vm.id });
    const replay2 = await viaRelay.next((f) => f.t === 'serial.data' && f.sid === 9);
    expect(replay2).toMatchObject({ replay: true });
    expect(decode(replay2)).toBe('BOOT-1\nLIVE-2\n');
    guest.serial.print('LIVE-3\n');
    await vi.waitFor(() => {
      for (const [c, sid] of [[viaSocket, 1], [viaRelay, 9]] as const) {
        const text = c.frames.filter((f) => f.t === 'serial.data' && f.sid === sid).map(decode).join('');
        expect(text.endsWith('LIVE-3\n')).toBe(true);
        expect(text.split('BOOT-1').length - 1).toBe(1);
        expect(text).not.toContain('EARLIER-RUN');
      }
    });

    // Typing reaches the guest from either door; the guest going away closes every console.
    viaRelay.send({ t: 'serial.in', sid: 9, data: Buffer.from('ls\r').toString('base64') });
    viaSocket.send({ t: 'serial.in', sid: 1, data: Buffer.from('pwd\r').toString('base64') });
    await vi.waitFor(() => expect(guest.serial.queuedBytes).toBe(7));
    await a.call('vm.kill', { id: vm.id });
    await viaSocket.next((f) => f.t === 'serial.closed' && f.sid === 1);
    await viaRelay.next((f) => f.t === 'serial.closed' && f.sid === 9);
    viaSocket.close();
    viaRelay.close();
  });
});

describe('the relay and the daemon\'s life', () => {
  it('gives each browser connection its own daemon connection, gone when the browser goes', async () => {
    // Connections of the tests before may still be closing: count from a quiet moment.
    const base = await settledClients(lib.daemon);
    const a = await wsClient(lib.server);
    const b = await wsClient(lib.server);
    await a.next((f) => f.t === 'hello');
    await b.next((f) => f.t === 'hello');
    await vi.waitFor(() => expect(lib.daemon.stats().clients).toBe(base + 2));
    a.close();
    await vi.waitFor(() => expect(lib.daemon.stats().clients).toBe(base + 1));
    b.terminate();
    await vi.waitFor(() => expect(lib.daemon.stats().clients).toBe(base));
  });

  it('starts the library\'s daemon when none runs, and a new one after it stopped; open pages see the loss', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'vmd-relay-'));
    const home = path.join(tmp, 'home');
    const socket = daemonSocketPath(home);
    // An in-process daemon first, to stop under the relay's feet.
    const first = await startDaemon({ home, idleExitMs: 0 });
    const server = await startServer({ home, staticDir: tmp });
    try {
      const page = await wsClient(server);
      expect(await page.next((f) => f.t === 'hello')).toMatchObject({ pid: process.pid });
      await first.close();
      // The open page's connection ends with its daemon (the GUI shows "connection lost" and reconnects)...
      await page.closed;
      expect(existsSync(socket)).toBe(false);
      // ...and the next connection starts a daemon of the library as its own process.
      const again = await wsClient(server);
      const hello = await again.next((f) => f.t === 'hello');
      expect(hello.t === 'hello' && hello.pid).not.toBe(process.pid);
      const pid = (hello as { pid: number }).pid;
      expect(process.kill(pid, 0)).toBe(true);
      const status = await again.call('daemon.status', {});
      expect(status).toMatchObject({ t: 'result', result: { pid, home } });
      again.close();
      // Stopped through the contract, it exits (guests would keep running) and removes its socket.
      const c = await daemonClient(socket);
      expect(await c.call('daemon.stop', {})).toEqual({ stopping: true });
      await new Promise<void>((r) => (c.isClosed ? r() : c.onClosed(r)));
      await vi.waitFor(() => expect(() => process.kill(pid, 0)).toThrow(), { timeout: 10_000 });
      expect(existsSync(socket)).toBe(false);
    } finally {
      await server.close();
      await first.close();
      rmSync(tmp, { recursive: true, force: true });
      rmSync(runtimeRoot(home), { recursive: true, force: true });
    }
  });
});
