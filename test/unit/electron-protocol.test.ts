// app://vmdesk, the desktop shell's renderer protocol: it serves the renderer's files and nothing else. Path
// traversal in every spelling, symlinks out of the directory, other hosts and schemes, other methods are refused;
// every answer carries the page's CSP; the real built renderer is served whole with the right types.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { APP_ORIGIN, desktopCsp, originOf, rendererResponse } from '../../main/electron/protocol.js';

let tmp: string;
let root: string;

beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-proto-'));
  root = path.join(tmp, 'renderer');
  mkdirSync(path.join(root, 'assets'), { recursive: true });
  writeFileSync(path.join(root, 'index.html'), '<!doctype html><title>VMDesk</title>');
  writeFileSync(path.join(root, 'assets', 'app-1234.js'), 'export const x = 1;');
  writeFileSync(path.join(root, 'assets', 'app-1234.css'), 'body{}');
  writeFileSync(path.join(tmp, 'secret.txt'), 'TOP SECRET');
  mkdirSync(path.join(tmp, 'outside'));
  writeFileSync(path.join(tmp, 'outside', 'x.js'), 'TOP SECRET');
  symlinkSync(path.join(tmp, 'secret.txt'), path.join(root, 'link.txt'));
  symlinkSync(path.join(tmp, 'outside'), path.join(root, 'linkdir'));
  symlinkSync('/etc/passwd', path.join(root, 'assets', 'passwd.js'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const get = (url: string, method = 'GET') => rendererResponse(root, { url, method });

describe('app://vmdesk', () => {
  it('serves the renderer\'s files with their types, and index.html for app routes', async () => {
    const index = await get('app://vmdesk/');
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(await index.text()).toContain('<title>VMDesk</title>');
    const js = await get('app://vmdesk/assets/app-1234.js');
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(js.headers.get('cache-control')).toContain('immutable');
    expect((await get('app://vmdesk/assets/app-1234.css')).headers.get('content-type')).toBe('text/css; charset=utf-8');
    // An app route (no extension) is the page; a missing file is 404, not the page.
    expect(await (await get('app://vmdesk/console/vm1')).text()).toContain('<title>VMDesk</title>');
    expect((await get('app://vmdesk/assets/missing.js')).status).toBe(404);
    // HEAD: headers, no body.
    const head = await get('app://vmdesk/index.html', 'HEAD');
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('puts the page\'s policy on every answer, errors included', async () => {
    for (const url of ['app://vmdesk/', 'app://vmdesk/assets/missing.js', 'app://vmdesk/%2e%2e/secret.txt', 'app://evil/']) {
      const r = await get(url);
      expect(r.headers.get('content-security-policy'), url).toBe(desktopCsp());
      expect(r.headers.get('x-content-type-options'), url).toBe('nosniff');
    }
    expect(desktopCsp()).not.toMatch(/unsafe-inline|unsafe-eval|\*/);
  });

  it('refuses path traversal however it is spelled', async () => {
    const attempts = [
      'app://vmdesk/%2e%2e/secret.txt',
      'app://vmdesk/%2E%2E/secret.txt',
      'app://vmdesk/assets/%2e%2e/%2e%2e/secret.txt',
      'app://vmdesk/assets/..%2f..%2fsecret.txt',
      'app://vmdesk/..%2fsecret.txt',
      'app://vmdesk/%2f..%2fsecret.txt',
      'app://vmdesk/..%5csecret.txt',
      'app://vmdesk/assets\\..\\..\\secret.txt',
      'app://vmdesk/%5c..%5c..%5csecret.txt',
      'app://vmdesk/index.html%00.js',
      'app://vmdesk/%252e%252e/secret.txt',
      'app://vmdesk/.%2e/secret.txt',
      'app://vmdesk/' + encodeURIComponent(path.join(tmp, 'secret.txt')),
      'app://vmdesk//' + path.join(tmp, 'secret.txt'),
      'app://vmdesk/%',
    ];
    for (const url of attempts) {
      const r = await get(url);
      const body = await r.text();
      expect(body, url).not.toContain('TOP SECRET');
      expect([400, 404], url).toContain(r.status);
    }
    // Dots the URL parser resolves stay inside (the page or a 404, never the file above).
    for (const url of ['app://vmdesk/../secret.txt', 'app://vmdesk/assets/../../../../secret.txt', 'app://vmdesk/./../secret.txt']) {
      const r = await get(url);
      expect(await r.text(), url).not.toContain('TOP SECRET');
    }
  });

  it('follows no symlink, to a file or a directory, inside the tree or out of it', async () => {
    for (const url of ['app://vmdesk/link.txt', 'app://vmdesk/linkdir/x.js', 'app://vmdesk/assets/passwd.js']) {
      const r = await get(url);
      expect(r.status, url).toBe(404);
      expect(await r.text(), url).not.toMatch(/TOP SECRET|root:/);
    }
  });

  it('answers only its own host and scheme, and only GET and HEAD', async () => {
    for (const url of ['app://evil/', 'app://vmdesk.evil/index.html', 'app://VMDESK@evil/', 'file:///etc/passwd', 'http://vmdesk/', 'app://user:pw@vmdesk/', 'app://vmdesk:8080/', 'not a url']) {
      const r = await get(url);
      expect(r.status, url).not.toBe(200);
      expect(await r.text(), url).not.toMatch(/TOP SECRET|root:|<title>/);
    }
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
      const r = await get('app://vmdesk/', method);
      expect(r.status, method).toBe(405);
      expect(r.headers.get('allow')).toBe('GET, HEAD');
    }
  });

  it('says the renderer is not built when it is not', async () => {
    const r = await rendererResponse(path.join(tmp, 'nowhere'), { url: 'app://vmdesk/' });
    expect(r.status).toBe(503);
    expect(await r.text()).toMatch(/npm run build:renderer/);
  });

  it('knows app://vmdesk as an origin (Node\'s URL calls it "null")', () => {
    expect(new URL('app://vmdesk/x').origin).toBe('null');
    expect(originOf('app://vmdesk/#/console/x')).toBe(APP_ORIGIN);
    expect(originOf('app://VMDESK/')).toBe(APP_ORIGIN);
    expect(originOf('app://evil/')).toBe('app://evil');
    expect(originOf('data:text/html,x')).toBeNull();
    expect(originOf('file:///etc/passwd')).toBeNull();
    expect(originOf('https://example.org/a')).toBe('https://example.org');
    expect(originOf('nonsense')).toBeNull();
  });

  it('serves the real built renderer whole: every script and stylesheet index.html names', async () => {
    const dist = path.resolve('dist/renderer');
    if (!existsSync(path.join(dist, 'index.html'))) return; // covered by the packaging test after a build
    const html = readFileSync(path.join(dist, 'index.html'), 'utf8');
    const refs = [...html.matchAll(/(?:src|href)="(\/[^"]+)"/g)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of refs) {
      const r = await rendererResponse(dist, { url: `app://vmdesk${ref}` });
      expect(r.status, ref).toBe(200);
      if (ref.endsWith('.js')) expect(r.headers.get('content-type')).toMatch(/javascript/);
      if (ref.endsWith('.css')) expect(r.headers.get('content-type')).toMatch(/css/);
    }
  });
});
