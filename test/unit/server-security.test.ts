// The GUI server refuses strangers: token on every request and upgrade, Host/Origin checks, CSP, no path
// traversal; its relay passes only whole JSON text frames to the daemon; and the daemon's own door, its unix
// socket, is open to this user alone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { lstatSync, mkdtempSync, mkdirSync, writeFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { startDaemon, type RunningDaemon } from '../../main/daemon/daemon.js';
import { runtimeRoot } from '../../main/platform/paths.js';
import { startServer, type RunningServer } from '../../main/server/server.js';
import { resolveStaticPath } from '../../main/server/static-files.js';
import { isLoopbackHost, sameOriginLocation } from '../../main/server/auth.js';
import { settledClients, wsClient } from '../helpers/daemon.js';

let tmp: string;
let home: string;
let daemon: RunningDaemon;
let server: RunningServer;
let base: string;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-server-'));
  const staticDir = path.join(tmp, 'static');
  mkdirSync(path.join(staticDir, 'assets'), { recursive: true });
  writeFileSync(path.join(staticDir, 'index.html'), '<!doctype html><title>VMDesk</title>');
  writeFileSync(path.join(staticDir, 'assets', 'app.js'), 'console.log(1)');
  writeFileSync(path.join(tmp, 'secret.txt'), 'TOP-SECRET');
  symlinkSync(path.join(tmp, 'secret.txt'), path.join(staticDir, 'assets', 'link.txt'));
  home = path.join(tmp, 'home');
  daemon = await startDaemon({ home, idleExitMs: 0 });
  server = await startServer({ home, staticDir });
  base = `http://127.0.0.1:${server.port}`;
});

afterAll(async () => {
  await server?.close();
  await daemon?.close();
  rmSync(tmp, { recursive: true, force: true });
  rmSync(runtimeRoot(home), { recursive: true, force: true });
});

function get(p: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, path: p, headers }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const auth = () => ({ 'x-vmdesk-token': server.token });

/** A GET whose request target goes out exactly as given (http.request would refuse or rewrite some). */
function rawGet(target: string): Promise<{ status: number; headers: Record<string, string> }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(server.port, '127.0.0.1', () => sock.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nConnection: close\r\n\r\n`));
    let text = '';
    sock.setEncoding('latin1');
    sock.on('data', (c) => (text += c));
    sock.on('error', reject);
    sock.on('end', () => {
      const [head = ''] = text.split('\r\n\r\n');
      const [statusLine = '', ...lines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      resolve({ status: Number(statusLine.split(' ')[1]), headers });
    });
  });
}

function upgrade(p: string, headers: Record<string, string>): Promise<{ status?: number; ws?: WebSocket }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}${p}`, { headers });
    ws.on('open', () => resolve({ ws }));
    ws.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode }));
    ws.on('error', () => resolve({}));
  });
}

describe('HTTP', () => {
  it('refuses requests without the token with 401', async () => {
    for (const p of ['/', '/index.html', '/assets/app.js', '/console/x']) {
      const r = await get(p);
      expect(r.status, p).toBe(401);
      expect(r.body).not.toContain('<title>');
    }
    expect((await get('/', { 'x-vmdesk-token': 'wrong' })).status).toBe(401);
    expect((await get('/?token=wrong')).status).toBe(401);
  });

  it('trades a token in the URL for an HttpOnly SameSite=Strict cookie and strips it from the address', async () => {
    const r = await get(`/?token=${server.token}`);
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/');
    const cookie = String(r.headers['set-cookie']);
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    const withCookie = await get('/', { cookie: cookie.split(';')[0]! });
    expect(withCookie.status).toBe(200);
    expect(withCookie.body).toContain('<title>VMDesk</title>');
  });

  it('redirects the token exchange only to a path on this server, never to another host', async () => {
    // Each request target, sent byte for byte (no client-side normalisation), must not come back with a
    // Location a browser would read as another host: "//evil.com/", "///evil.com", "/\\evil.com" all are.
    const targets = [
      '/.//evil.com/',
      '//evil.com/',
      '///evil.com/',
      '/\\evil.com/',
      '/\\/evil.com/',
      '/./\\evil.com',
      '/..//evil.com',
      '/a/..//evil.com/x',
      '/%2e//evil.com',
      '/%2e%2e//evil.com',
      '/.///evil.com',
      '/%2F%2Fevil.com/',
      '/%5C%5Cevil.com',
      '/.%2F/evil.com',
    ];
    for (const t of targets) {
      const sep = t.includes('?') ? '&' : '?';
      const r = await rawGet(`${t}${sep}token=${server.token}`);
      expect(r.status, t).toBe(303);
      const loc = r.headers.location ?? '';
      expect(loc, t).toMatch(/^\/(?![/\\])/);
      expect(new URL(loc, base).origin, `${t} -> ${loc}`).toBe(base);
      expect(loc, t).not.toContain('token=');
    }
    expect((await rawGet(`/.//evil.com/?token=${server.token}`)).headers.location).toBe('/evil.com/');
    // Other query parameters survive the exchange; only the token is dropped.
    expect((await rawGet(`/.//evil.com/?x=1&token=${server.token}`)).headers.location).toBe('/evil.com/?x=1');
    for (const p of ['//evil.com', '/\\evil.com', '\\\\evil.com', '///evil.com/', '/\t/evil.com']) {
      expect(new URL(sameOriginLocation(p), base).origin, p).toBe(base);
    }
  });

  it('sends a strict CSP and nosniff on every response, refusals included', async () => {
    for (const r of [await get('/', auth()), await get('/')]) {
      const csp = String(r.headers['content-security-policy']);
      expect(csp).toContain("default-src 'self'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).not.toContain('unsafe-inline');
      expect(csp).not.toContain('unsafe-eval');
      expect(csp).toContain("img-src 'self' data: blob:");
      expect(csp).toMatch(/connect-src 'self' ws:\/\/127\.0\.0\.1:\d+/);
      expect(r.headers['x-content-type-options']).toBe('nosniff');
    }
  });

  it('refuses a foreign Host header (DNS rebinding)', async () => {
    const r = await get('/', { ...auth(), host: `evil.example:${server.port}` });
    expect(r.status).toBe(403);
    // The refused Host never makes it into the policy.
    expect(String(r.headers['content-security-policy'])).not.toContain('evil.example');
  });

  it('never serves files outside the renderer directory', async () => {
    const attempts = ['/../secret.txt', '/%2e%2e/secret.txt', '/assets/..%2f..%2fsecret.txt', '/assets/%2e%2e%2f%2e%2e%2fsecret.txt', '/..%5csecret.txt', '/assets/link.txt', '/%00index.html', '/%E0%A4%A'];
    for (const p of attempts) {
      const r = await get(p, auth());
      expect(r.body, p).not.toContain('TOP-SECRET');
      expect([400, 404], p).toContain(r.status);
    }
    expect(resolveStaticPath('/srv/r', '/../etc/passwd')).toBeNull();
    expect(resolveStaticPath('/srv/r', '/a/%2e%2e/%2e%2e/etc/passwd')).toBeNull();
    expect(resolveStaticPath('/srv/r', '/assets/app.js')).toBe('/srv/r/assets/app.js');
  });

  it('answers only GET and HEAD', async () => {
    const status = await new Promise<number>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port: server.port, path: '/', method: 'POST', headers: auth() }, (res) => resolve(res.statusCode ?? 0));
      req.end();
    });
    expect(status).toBe(405);
  });
});

describe('WebSocket upgrades', () => {
  it('refuses an upgrade without the token with 401', async () => {
    expect((await upgrade('/ws', {})).status).toBe(401);
    expect((await upgrade('/vnc/some-vm', {})).status).toBe(401);
    expect((await upgrade('/ws', { 'x-vmdesk-token': 'nope' })).status).toBe(401);
  });

  it('refuses a cross-origin upgrade even with the token', async () => {
    const r = await upgrade('/ws', { ...auth(), origin: 'http://evil.example' });
    expect(r.status).toBe(403);
  });

  it('accepts the same origin with the cookie, as the browser sends it', async () => {
    const r = await upgrade('/ws', { cookie: `vmdesk_token=${server.token}`, origin: `http://127.0.0.1:${server.port}` });
    expect(r.ws).toBeDefined();
    r.ws!.close();
  });

  it('refuses the VNC bridge for a VM that is not running', async () => {
    const r = await upgrade('/vnc/no-such-vm', auth());
    expect(r.status).toBe(409);
  });

  it('opens no daemon connection for a refused upgrade', async () => {
    const before = await settledClients(daemon);
    const calls = daemon.stats().callsReceived;
    for (const headers of [{} as Record<string, string>, { 'x-vmdesk-token': 'nope' }, { ...auth(), origin: 'http://evil.example' }, { ...auth(), host: 'evil.example' }]) {
      expect((await upgrade('/ws', headers)).status).toBeGreaterThanOrEqual(400);
    }
    expect((await upgrade('/nowhere', auth())).status).toBe(404);
    expect(await settledClients(daemon)).toBe(before);
    expect(daemon.stats().callsReceived).toBe(calls);
  });
});

describe('the relay passes only whole JSON text frames', () => {
  it('closes a connection that sends a binary frame (1003), nothing reaching the daemon', async () => {
    const c = await wsClient(server);
    await c.next((f) => f.t === 'hello');
    const received = daemon.stats().callsReceived;
    c.ws.send(Buffer.from(JSON.stringify({ t: 'call', id: 1, method: 'vm.list', params: {} })), { binary: true });
    expect(await c.closed).toBe(1003);
    expect(c.answers().size).toBe(0);
    expect(daemon.stats().callsReceived).toBe(received);
  });

  it('closes a connection whose frame holds a raw newline (1003): one message cannot smuggle a second frame', async () => {
    const c = await wsClient(server);
    await c.next((f) => f.t === 'hello');
    const received = daemon.stats().callsReceived;
    // The daemon reads one frame per line: the second line would be a frame of its own.
    c.raw(`{"t":"call","id":1,"method":"vm.list","params":{}}\n{"t":"call","id":2,"method":"vm.create","params":{"name":"smuggled"}}`);
    expect(await c.closed).toBe(1003);
    expect(c.answers().size).toBe(0);
    expect(daemon.stats().callsReceived).toBe(received);
    expect(await daemon.core.list()).toEqual([]);
  });

  it('still takes a newline escaped inside JSON strings', async () => {
    const c = await wsClient(server);
    const r = await c.call('vm.create', { name: 'a\nb' });
    expect(r).toMatchObject({ t: 'error', error: { code: 'EINVAL' } });
    expect(c.isClosed).toBe(false);
    c.close();
  });
});

describe('the daemon\'s socket', () => {
  it('is a socket only its user may open, in a directory only its user may enter', () => {
    const sock = lstatSync(daemon.socketPath);
    expect(sock.isSocket()).toBe(true);
    expect(sock.mode & 0o777).toBe(0o600);
    expect(sock.uid).toBe(process.getuid!());
    const dir = lstatSync(path.dirname(daemon.socketPath));
    expect(dir.isDirectory() && !dir.isSymbolicLink()).toBe(true);
    expect(dir.mode & 0o777).toBe(0o700);
    expect(dir.uid).toBe(process.getuid!());
    expect(path.dirname(daemon.socketPath)).toBe(runtimeRoot(home));
  });

  it('serves one daemon per library: a second one for the same home is refused with EBUSY', async () => {
    const err = await startDaemon({ home, idleExitMs: 0 }).then(
      (d) => d.close().then(() => undefined),
      (e: unknown) => e as { code?: string; message?: string },
    );
    expect(err?.code).toBe('EBUSY');
    expect(err?.message).toMatch(/another VMDesk daemon already serves/);
    // The first one still answers.
    const c = await wsClient(server);
    expect((await c.call('vm.list', {})).t).toBe('result');
    c.close();
  });
});

describe('listening address', () => {
  it('takes only loopback addresses and names for loopback', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', 'LOCALHOST', '::ffff:127.0.0.1']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '', '192.168.1.10', '10.0.0.1', 'example.com', 'localhost.evil.com', '::ffff:10.0.0.1']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('refuses a non-loopback host unless unsafeListenAll is set, saying how', async () => {
    for (const host of ['0.0.0.0', '::', '']) {
      const err = await startServer({ home, host, staticDir: tmp }).then(
        (s) => s.close().then(() => undefined),
        (e: unknown) => e as { code?: string; message?: string },
      );
      expect(err, host).toBeDefined();
      expect(err?.code).toBe('EINVAL');
      expect(err?.message).toContain('--unsafe-listen-all');
      expect(err?.message).toMatch(/clear text/);
    }
    for (const host of ['127.0.0.1', 'localhost']) {
      const s = await startServer({ home, host, staticDir: tmp });
      await s.close();
    }
    const all = await startServer({ home, host: '0.0.0.0', unsafeListenAll: true, staticDir: tmp });
    expect(all.port).toBeGreaterThan(0);
    await all.close();
  });
});
