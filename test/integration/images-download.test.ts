// Image downloads against a local HTTP server: progress, pause and resume with HTTP Range, automatic
// resumption after a dropped connection, checksums from an upstream SUMS file (and its gpgv-checked
// signature), refusals that leave nothing behind, the cache reused, proxies from the environment.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ImageService } from '../../main/core/images/cache.js';
import type { VmEvent } from '../../main/api/events.js';
import type { DownloadInfo } from '../../main/api/images.js';
import { startConnectProxy, startImageServer, type ImageServer } from '../helpers/image-server.js';

const MiB = 1024 * 1024;
let work: string;
let server: ImageServer;
let image: Buffer;
let sha256: string;
let sha512: string;

function qcow2Fixture(dir: string, bytes: number, extra: string[] = []): Buffer {
  const raw = path.join(dir, `src-${bytes}.raw`);
  writeFileSync(raw, randomBytes(bytes));
  const out = path.join(dir, `fixture-${bytes}-${extra.length}.qcow2`);
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', ...extra, raw, out]);
  return readFileSync(out);
}

beforeAll(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-images-'));
  image = qcow2Fixture(work, 12 * MiB);
  sha256 = createHash('sha256').update(image).digest('hex');
  sha512 = createHash('sha512').update(image).digest('hex');
  server = await startImageServer({
    '/img/fixture.qcow2': image,
    '/img/SHA256SUMS': Buffer.from(`${'0'.repeat(64)}  other.qcow2\n${sha256}  fixture.qcow2\n`),
    '/img/SHA512SUMS': Buffer.from(`SHA512 (fixture.qcow2) = ${sha512}\n`),
    '/img/BADSUMS': Buffer.from(`${createHash('sha256').update('something else').digest('hex')}  fixture.qcow2\n`),
  });
});

afterAll(async () => {
  await server?.close();
  rmSync(work, { recursive: true, force: true });
});

let services: ImageService[] = [];
afterEach(async () => {
  server.throttle = 0;
  for (const s of services) await s.close();
  services = [];
});

function service(env: NodeJS.ProcessEnv = {}): { svc: ImageService; events: VmEvent[]; home: string } {
  const home = mkdtempSync(path.join(work, 'home-'));
  const events: VmEvent[] = [];
  const svc = new ImageService(home, (ev) => events.push(ev), { env });
  services.push(svc);
  return { svc, events, home };
}

const downloads = (events: VmEvent[]): DownloadInfo[] => events.flatMap((e) => (e.type === 'image-download' ? [e.download] : []));
const imageRequests = () => server.requests.filter((r) => r.path === '/img/fixture.qcow2');

async function addSource(svc: ImageService, id: string, verify: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return svc.sources.add({ id, format: 'qcow2', url: `${server.url}/img/fixture.qcow2`, verify, ...extra });
}

describe('image downloads', () => {
  it('downloads with progress (bytes, speed, ETA), checks the SUMS file, caches privately and reuses the cache', async () => {
    const { svc, events, home } = service();
    await addSource(svc, 'fixture', { sums: `${server.url}/img/SHA256SUMS`, algorithm: 'sha256' });
    server.throttle = 6 * MiB;
    const before = imageRequests().length;
    const rec = await svc.pull('fixture');
    expect(rec.bytes).toBe(image.length);
    expect(rec.verification).toMatchObject({ algorithm: 'sha256', digest: sha256, source: 'sums-file', signature: 'unsigned' });
    expect(rec.verification.summary).toMatch(/SHA256SUMS .*plain HTTP.*does not sign/);
    expect(createHash('sha256').update(readFileSync(rec.file)).digest('hex')).toBe(sha256);
    const infos = downloads(events);
    const states = [...new Set(infos.map((i) => i.state))];
    expect(states).toEqual(['connecting', 'running', 'verifying', 'done']);
    const running = infos.filter((i) => i.state === 'running');
    expect(running.length).toBeGreaterThan(3);
    for (let i = 1; i < running.length; i++) expect(running[i]!.bytes).toBeGreaterThanOrEqual(running[i - 1]!.bytes);
    expect(running.some((i) => i.bytesPerSecond > 1 * MiB && i.bytesPerSecond < 20 * MiB)).toBe(true);
    expect(running.some((i) => i.etaSeconds !== undefined && i.etaSeconds > 0)).toBe(true);
    expect(running.every((i) => i.totalBytes === image.length)).toBe(true);
    // Private: the cache folder is 0700 and the image 0600.
    expect(statSync(path.join(home, 'images', 'cache')).mode & 0o777).toBe(0o700);
    expect(statSync(rec.file).mode & 0o777).toBe(0o600);
    // Reused: no second request for the image.
    expect(imageRequests().length).toBe(before + 1);
    const again = await svc.pull('fixture');
    expect(again).toEqual(rec);
    expect(imageRequests().length).toBe(before + 1);
    const listing = await svc.list();
    const mine = listing.images.find((i) => i.entry.id === 'fixture')!;
    expect(mine.cached?.bytes).toBe(image.length);
    expect(listing.cacheBytes).toBe(image.length);
    // Removing it frees the bytes.
    expect(await svc.remove(['fixture'])).toEqual({ removed: ['fixture'], freedBytes: image.length });
    expect(await svc.cached('fixture')).toBeUndefined();
  });

  it('pauses, keeps the partial file, and resumes with a Range request from where it stopped', async () => {
    const { svc, events } = service();
    await addSource(svc, 'fixture', { sums: `${server.url}/img/SHA512SUMS`, algorithm: 'sha512' });
    server.throttle = 4 * MiB;
    const p = svc.pull('fixture');
    await waitFor(() => downloads(events).some((i) => i.state === 'running' && i.bytes > 3 * MiB));
    const paused = svc.pause('fixture');
    expect(paused.image).toBe('fixture');
    await expect(p).rejects.toMatchObject({ code: 'ECANCELED', message: expect.stringMatching(/paused/) });
    const listing = await svc.list();
    const partial = listing.images.find((i) => i.entry.id === 'fixture')!;
    expect(partial.cached).toBeUndefined();
    expect(partial.download?.state).toBe('paused');
    const kept = partial.partialBytes!;
    expect(kept).toBeGreaterThan(3 * MiB);
    expect(kept).toBeLessThan(image.length);
    server.throttle = 0;
    const n = imageRequests().length;
    const rec = await svc.pull('fixture');
    const resumed = imageRequests().slice(n);
    expect(resumed).toHaveLength(1);
    expect(resumed[0]!.range).toBe(`bytes=${kept}-`);
    expect(resumed[0]!.ifRange).toMatch(/^"/);
    expect(rec.verification.digest).toBe(sha512);
    expect(downloads(events).find((i) => i.state === 'running' && i.resumedFrom)?.resumedFrom).toBe(kept);
    expect(readdirSync(svc.partialDir)).toEqual([]);
  });

  it('resumes by itself after the server drops the connection', async () => {
    const { svc } = service();
    await addSource(svc, 'fixture', { checksum: `sha256:${sha256}` });
    server.cut('/img/fixture.qcow2', 5 * MiB, 2);
    const n = imageRequests().length;
    const rec = await svc.pull('fixture');
    const reqs = imageRequests().slice(n);
    expect(reqs.map((r) => r.range)).toEqual([undefined, `bytes=${5 * MiB}-`, `bytes=${10 * MiB}-`]);
    expect(rec.verification).toMatchObject({ source: 'user-checksum', signature: 'none', digest: sha256 });
  });

  it('refuses a download whose checksum does not match and removes the partial file', async () => {
    const { svc, events } = service();
    await addSource(svc, 'fixture', { sums: `${server.url}/img/BADSUMS`, algorithm: 'sha256' });
    await expect(svc.pull('fixture')).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/does not match its sha256 checksum.*removed/) });
    expect(readdirSync(svc.partialDir)).toEqual([]);
    expect(readdirSync(svc.cacheDir)).toEqual([]);
    expect(downloads(events).at(-1)).toMatchObject({ state: 'failed', error: expect.stringMatching(/does not match/) });
    // A cancelled download leaves nothing either.
    const { svc: svc2, events: ev2 } = service();
    await addSource(svc2, 'fixture', { checksum: `sha256:${sha256}` });
    server.throttle = 2 * MiB;
    const p = svc2.pull('fixture');
    await waitFor(() => downloads(ev2).some((i) => i.bytes > MiB));
    await svc2.cancel('fixture');
    await expect(p).rejects.toMatchObject({ code: 'ECANCELED' });
    expect(readdirSync(svc2.partialDir)).toEqual([]);
  });

  it('bounds what it downloads: an image larger than its limit is refused and nothing is kept', async () => {
    const { svc } = service();
    await addSource(svc, 'fixture', { checksum: `sha256:${sha256}` }, { maxBytes: 4 * MiB });
    await expect(svc.pull('fixture')).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/more than the 4194304 bytes allowed/) });
    expect(readdirSync(svc.partialDir)).toEqual([]);
    // A checksum file that is not one (too large) is refused before any image byte is fetched.
    server.files.set('/img/HUGESUMS', Buffer.alloc(2 * MiB, 0x41));
    const { svc: svc2 } = service();
    await addSource(svc2, 'fixture', { sums: `${server.url}/img/HUGESUMS`, algorithm: 'sha256' });
    const n = imageRequests().length;
    await expect(svc2.pull('fixture')).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/more than the 1048576 bytes/) });
    expect(imageRequests().length).toBe(n);
  });

  it('bounds a body that states no length: a chunked response past the limit is cut off and nothing is kept', async () => {
    const http = await import('node:http');
    const chunked = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      let left = 6;
      const more = () => {
        while (left > 0) {
          left--;
          if (!res.write(image.subarray(0, MiB))) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    });
    await new Promise<void>((r) => chunked.listen(0, '127.0.0.1', r));
    try {
      const { svc } = service();
      const port = (chunked.address() as { port: number }).port;
      await svc.sources.add({ id: 'chunked', format: 'qcow2', url: `http://127.0.0.1:${port}/x.qcow2`, verify: { checksum: `sha256:${sha256}` }, maxBytes: 4 * MiB });
      await expect(svc.pull('chunked')).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/sends more than the 4194304 bytes allowed/) });
      expect(readdirSync(svc.partialDir)).toEqual([]);
    } finally {
      chunked.closeAllConnections();
      await new Promise((r) => chunked.close(r));
    }
  });

  it('passes the image gate before use: a qcow2 naming a backing file is refused even with a matching checksum', async () => {
    const base = path.join(work, 'base.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '16M']);
    const overlay = path.join(work, 'overlay.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, overlay]);
    const bytes = readFileSync(overlay);
    server.files.set('/img/overlay.qcow2', bytes);
    const { svc } = service();
    await svc.sources.add({ id: 'overlay', format: 'qcow2', url: `${server.url}/img/overlay.qcow2`, verify: { checksum: `sha256:${createHash('sha256').update(bytes).digest('hex')}` } });
    await expect(svc.pull('overlay')).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/refers to other files/) });
    expect(readdirSync(svc.partialDir)).toEqual([]);
    expect(readdirSync(svc.cacheDir)).toEqual([]);
  });

  it('checks an OpenPGP-signed SUMS file with gpgv and refuses a tampered one', async () => {
    const gnupg = mkdtempSync(path.join(work, 'gnupg-'));
    const gpg = (args: string[], input?: string) => execFileSync('gpg', ['--batch', '--homedir', gnupg, '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { input, stdio: ['pipe', 'pipe', 'pipe'] });
    gpg(['--quick-gen-key', 'VMDesk Test Signer <signer@example.invalid>', 'ed25519', 'sign', 'never']);
    const keyring = path.join(work, 'test-keyring.gpg');
    writeFileSync(keyring, gpg(['--export']));
    const sums = Buffer.from(`${sha256}  fixture.qcow2\n`);
    const sumsFile = path.join(work, 'SIGNED_SUMS');
    writeFileSync(sumsFile, sums);
    gpg(['--detach-sign', '--output', `${sumsFile}.sig`, sumsFile]);
    gpg(['--clearsign', '--output', `${sumsFile}.asc`, sumsFile]);
    server.files.set('/signed/SHA256SUMS', sums);
    server.files.set('/signed/SHA256SUMS.gpg', readFileSync(`${sumsFile}.sig`));
    server.files.set('/signed/CHECKSUM', readFileSync(`${sumsFile}.asc`));
    server.files.set('/signed/fixture.qcow2', image);
    // Same signature, altered list: an attacker who swapped the checksum.
    server.files.set('/tampered/SHA256SUMS', Buffer.from(`${'a'.repeat(64)}  fixture.qcow2\n`));
    server.files.set('/tampered/SHA256SUMS.gpg', readFileSync(`${sumsFile}.sig`));
    server.files.set('/tampered/fixture.qcow2', image);

    const { svc } = service();
    await svc.sources.add({ id: 'signed', format: 'qcow2', url: `${server.url}/signed/fixture.qcow2`, verify: { sums: `${server.url}/signed/SHA256SUMS`, algorithm: 'sha256', signature: { type: 'detached', url: `${server.url}/signed/SHA256SUMS.gpg`, keyring } } });
    const rec = await svc.pull('signed');
    expect(rec.verification.signature).toBe('signed');
    expect(rec.verification.summary).toMatch(/signature was checked with gpgv against .*test-keyring\.gpg/);

    await svc.sources.add({ id: 'clearsigned', format: 'qcow2', url: `${server.url}/signed/fixture.qcow2`, verify: { sums: `${server.url}/signed/CHECKSUM`, algorithm: 'sha256', signature: { type: 'clearsigned', keyring } } });
    expect((await svc.pull('clearsigned')).verification.signature).toBe('signed');

    await svc.sources.add({ id: 'tampered', format: 'qcow2', url: `${server.url}/tampered/fixture.qcow2`, verify: { sums: `${server.url}/tampered/SHA256SUMS`, algorithm: 'sha256', signature: { type: 'detached', url: `${server.url}/tampered/SHA256SUMS.gpg`, keyring } } });
    const n = server.requests.filter((r) => r.path === '/tampered/fixture.qcow2').length;
    await expect(svc.pull('tampered')).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/signature of SHA256SUMS is not valid: the signature does not match/) });
    expect(server.requests.filter((r) => r.path === '/tampered/fixture.qcow2').length).toBe(n);

    // A signed list whose keyring is not installed: downloaded, and said plainly to be unchecked.
    await svc.sources.add({ id: 'nokeyring', format: 'qcow2', url: `${server.url}/signed/fixture.qcow2`, verify: { sums: `${server.url}/signed/SHA256SUMS`, algorithm: 'sha256', signature: { type: 'detached', url: `${server.url}/signed/SHA256SUMS.gpg`, keyring: '/nonexistent/keyring.gpg', package: 'some-keyring' } } });
    const unchecked = await svc.pull('nokeyring');
    expect(unchecked.verification.signature).toBe('unchecked');
    expect(unchecked.verification.summary).toMatch(/keyring \/nonexistent\/keyring\.gpg is not installed \(Debian package some-keyring\), so the signature was NOT checked/);
  });

  it('goes through the proxy the environment names, and not for hosts in NO_PROXY', async () => {
    const proxy = await startConnectProxy();
    try {
      const { svc } = service({ HTTP_PROXY: proxy.url });
      await addSource(svc, 'fixture', { checksum: `sha256:${sha256}` });
      await svc.pull('fixture');
      expect(proxy.targets).toContain(`127.0.0.1:${server.port}`);
      const seen = proxy.targets.length;
      const { svc: direct } = service({ HTTP_PROXY: proxy.url, NO_PROXY: '127.0.0.1' });
      await addSource(direct, 'fixture', { checksum: `sha256:${sha256}` });
      await direct.pull('fixture');
      expect(proxy.targets.length).toBe(seen);
    } finally {
      await proxy.close();
    }
  });

  it('joins a running download instead of starting a second one', async () => {
    const { svc } = service();
    await addSource(svc, 'fixture', { checksum: `sha256:${sha256}` });
    server.throttle = 8 * MiB;
    const n = imageRequests().length;
    const [a, b] = await Promise.all([svc.pull('fixture'), svc.pull('fixture')]);
    expect(a).toEqual(b);
    expect(imageRequests().length).toBe(n + 1);
    expect(existsSync(a.file)).toBe(true);
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
