// The gallery's catalogue against its schema, checksum-file parsing, and the cloud-init documents and seed ISO
// (read back with isoinfo from genisoimage).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import gallery from '../../main/core/images/gallery.json' with { type: 'json' };
import { Catalogue, CreateFromImageRequest, UserSourceInput } from '../../main/api/images.js';
import { builtinCatalogue } from '../../main/core/images/catalogue.js';
import { clearsignedBody, parseSums, pickFile } from '../../main/core/images/sums.js';
import { buildSeedIso, hostnameFor, metaData, seedIsoTool, userData, type SeedOptions } from '../../main/core/images/cloud-init.js';

describe('the gallery', () => {
  it('is a valid, versioned catalogue with the images issue 13 asks for', () => {
    const c = builtinCatalogue();
    expect(c.catalogueVersion).toBe(1);
    const ids = c.images.map((i) => i.id);
    for (const want of ['debian-12', 'ubuntu-24.04', 'fedora-42', 'alpine-3.21-cloud', 'alpine-3.21', 'debian-13-netinst', 'ubuntu-24.04-server', 'ubuntu-24.04-desktop', 'fedora-42-workstation', 'windows-11']) expect(ids).toContain(want);
    for (const i of c.images) {
      expect(i.url.startsWith('https://')).toBe(true);
      if (i.kind === 'vendor-page') continue;
      const v = i.verify!;
      expect('sums' in v && v.sums.startsWith('https://')).toBe(true);
      // Every entry says what is and is not verified.
      expect(v.note).toBeTruthy();
      if ('sums' in v && v.signature?.url) expect(v.signature.url.startsWith('https://')).toBe(true);
    }
    // Debian's installer SUMS are checked against the debian-keyring package's role keys.
    const netinst = c.images.find((i) => i.id === 'debian-13-netinst')!;
    expect(netinst.verify && 'sums' in netinst.verify && netinst.verify.signature).toMatchObject({ type: 'detached', keyring: '/usr/share/keyrings/debian-role-keys.gpg', package: 'debian-keyring' });
  });

  it('refuses malformed catalogues and sources', () => {
    const bad = structuredClone(gallery) as { images: Record<string, unknown>[] };
    bad.images.push({ ...bad.images[0]!, url: 'file:///etc/passwd' });
    expect(Catalogue.safeParse(bad).success).toBe(false);
    const dup = structuredClone(gallery) as { images: Record<string, unknown>[] };
    dup.images.push(dup.images[0]!);
    expect(Catalogue.safeParse(dup).success).toBe(false);
    const ok = { id: 'mine', format: 'qcow2', url: 'https://example.org/a.qcow2', verify: { checksum: `sha256:${'a'.repeat(64)}` } };
    expect(UserSourceInput.safeParse(ok).success).toBe(true);
    for (const patch of [{ id: '../x' }, { url: 'https://user:pw@example.org/a' }, { url: 'ftp://example.org/a' }, { url: 'https://example.org/a b' }, { verify: { checksum: 'md5:abc' } }, { verify: {} }]) {
      expect(UserSourceInput.safeParse({ ...ok, ...patch }).success, JSON.stringify(patch)).toBe(false);
    }
    expect(CreateFromImageRequest.safeParse({ name: 'a', image: 'debian-12', cloudInit: { user: 'root' } }).success).toBe(false);
    expect(CreateFromImageRequest.safeParse({ name: 'a', image: 'debian-12', cloudInit: { hostname: 'a b' } }).success).toBe(false);
    expect(CreateFromImageRequest.safeParse({ name: 'a', image: 'debian-12', cloudInit: { packages: ['vim; rm -rf /'] } }).success).toBe(false);
  });
});

describe('checksum files', () => {
  const h256 = 'ab'.repeat(32);
  const h512 = 'cd'.repeat(64);
  it('reads GNU and BSD lines, skips the rest, refuses names listed with two digests', () => {
    const m = parseSums([`${h256}  a.qcow2`, `${h256.toUpperCase()} *b.iso`, `SHA256 (c.img) = ${h256}`, `SHA512 (c.img) = ${h512}`, '# comment', `${h256}  ./d.iso`, `${h256}  e`, `${'ef'.repeat(32)}  e`, 'x'.repeat(5000)].join('\n'), 'sha256');
    expect([...m.entries()]).toEqual([
      ['a.qcow2', h256],
      ['b.iso', h256],
      ['c.img', h256],
      ['d.iso', h256],
    ]);
    expect(parseSums(`SHA512 (c.img) = ${h512}\n${h256}  a`, 'sha512')).toEqual(new Map([['c.img', h512]]));
  });
  it('takes the signed text out of a clear-signed file and picks the newest matching name', () => {
    const signed = ['-----BEGIN PGP SIGNED MESSAGE-----', 'Hash: SHA256', '', `SHA256 (x.iso) = ${h256}`, '- -dash escaped', '-----BEGIN PGP SIGNATURE-----', 'abc', '-----END PGP SIGNATURE-----'].join('\n');
    expect(clearsignedBody(signed)).toBe(`SHA256 (x.iso) = ${h256}\n-dash escaped`);
    const m = new Map([['debian-13.1.0-amd64-netinst.iso', h256], ['debian-13.10.0-amd64-netinst.iso', h256], ['debian-13.2.0-amd64-netinst.iso', h256], ['sub/debian-13.99.0-amd64-netinst.iso', h256]]);
    expect(pickFile(m, '^debian-13\\.[0-9]+\\.[0-9]+-amd64-netinst\\.iso$')).toBe('debian-13.10.0-amd64-netinst.iso');
  });
});

describe('cloud-init NoCloud', () => {
  const o: SeedOptions = { instanceId: 'vmdesk-1', hostname: 'web-1', user: 'alice', publicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK vmdesk web', preset: 'debian', packages: ['nginx', 'git'] };

  it('writes meta-data and a #cloud-config whose values cannot add keys of their own', () => {
    expect(metaData(o)).toBe('instance-id: "vmdesk-1"\nlocal-hostname: "web-1"\n');
    const ud = userData(o);
    expect(ud).toMatch(/^#cloud-config\n/);
    expect(ud).toContain('  - name: "alice"\n    sudo: "ALL=(ALL) NOPASSWD:ALL"\n    shell: "/bin/bash"\n');
    expect(ud).toContain('      - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK vmdesk web"\n');
    expect(ud).toContain('packages:\n  - "nginx"\n  - "git"\n');
    expect(userData({ ...o, publicKey: 'ssh-ed25519 AAAA x"\nruncmd: [reboot]' })).toContain('"ssh-ed25519 AAAA x\\"\\nruncmd: [reboot]"');
    expect(hostnameFor('My VM_2 (copy)')).toBe('my-vm-2-copy');
  });

  it('puts the user\'s own user-data after VMDesk\'s in a multipart message, and refuses what is not user-data', () => {
    const ud = userData({ ...o, userData: '#cloud-config\nruncmd:\n  - echo hi\n' });
    const boundary = /boundary="([^"]+)"/.exec(ud)![1]!;
    const parts = ud.split(`--${boundary}`);
    expect(parts).toHaveLength(4);
    expect(parts[1]).toContain('Content-Type: text/cloud-config');
    expect(parts[1]).toContain('ssh_authorized_keys');
    expect(parts[2]).toContain('Merge-Type: list(append)+dict(no_replace,recurse_list)+str()');
    expect(parts[2]).toContain('runcmd:\n  - echo hi\n');
    expect(parts[3]).toBe('--\n');
    expect(userData({ ...o, userData: '#!/bin/sh\necho hi\n' })).toContain('Content-Type: text/x-shellscript');
    expect(() => userData({ ...o, userData: 'just text' })).toThrow(/must start with #cloud-config/);
    expect(() => userData({ ...o, userData: 'Content-Type: multipart/mixed\n' })).toThrow(/multipart document is not accepted/);
  });

  it.skipIf(!seedIsoTool())('builds a seed ISO labelled cidata that isoinfo reads back', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-seed-'));
    try {
      const iso = path.join(dir, 'seed.iso');
      const r = await buildSeedIso(iso, o);
      expect(['cloud-localds', 'genisoimage', 'xorriso', 'mkisofs']).toContain(r.tool);
      expect(execFileSync('isoinfo', ['-d', '-i', iso], { encoding: 'utf8' })).toMatch(/^Volume id: cidata$/m);
      const files = execFileSync('isoinfo', ['-i', iso, '-J', '-f'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
      expect(files).toEqual(['/meta-data', '/user-data']);
      expect(execFileSync('isoinfo', ['-i', iso, '-J', '-x', '/meta-data'], { encoding: 'utf8' })).toBe(metaData(o));
      expect(execFileSync('isoinfo', ['-i', iso, '-J', '-x', '/user-data'], { encoding: 'utf8' })).toBe(userData(o));
      // Rock Ridge names too (what Linux's isofs shows a guest without Joliet).
      expect(execFileSync('isoinfo', ['-i', iso, '-R', '-f'], { encoding: 'utf8' })).toMatch(/\/user-data/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
