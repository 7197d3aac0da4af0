// Pure parts of export/import: the tar writer/reader, OVF parsing (VirtualBox and VMware styles), names, .mf files.
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TarWriter, readTarIndex, readEntry, hashEntry } from '../../main/core/backup/tar.js';
import { allocationUnits, parseManifestFile, parseOvf, parseXml, sanitizeName } from '../../main/core/backup/ovf.js';
import { createHash } from 'node:crypto';

describe('tar', () => {
  it('writes archives the system tar reads, and reads archives the system tar writes', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vmdesk-tar-'));
    try {
      const mine = path.join(dir, 'mine.tar');
      const w = await TarWriter.create(mine);
      const big = Buffer.alloc(700_000, 7);
      const r1 = await w.add('a.txt', Buffer.from('hello'));
      await w.add('dir/big.bin', big);
      await w.add('empty', Buffer.alloc(0));
      await w.close();
      expect(r1.sha256).toBe(createHash('sha256').update('hello').digest('hex'));
      expect(execFileSync('tar', ['-tvf', mine], { encoding: 'utf8' })).toMatch(/dir\/big.bin/);
      const out = path.join(dir, 'x');
      execFileSync('mkdir', [out]);
      execFileSync('tar', ['-xf', mine, '-C', out]);
      expect(execFileSync('cat', [path.join(out, 'a.txt')], { encoding: 'utf8' })).toBe('hello');

      writeFileSync(path.join(dir, 'theirs-file'), 'x'.repeat(1000));
      const theirs = path.join(dir, 'theirs.tar');
      execFileSync('tar', ['--format=pax', '-cf', theirs, '-C', dir, 'theirs-file', 'mine.tar']);
      const idx = await readTarIndex(theirs);
      expect(idx.map((e) => [e.name, e.size])).toEqual([
        ['theirs-file', 1000],
        ['mine.tar', (await import('node:fs')).statSync(mine).size],
      ]);
      expect((await readEntry(theirs, idx[0]!)).toString()).toBe('x'.repeat(1000));
      expect(await hashEntry(theirs, idx[0]!)).toBe(createHash('sha256').update('x'.repeat(1000)).digest('hex'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses something that is not a tar', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vmdesk-tar-'));
    const f = path.join(dir, 'junk');
    writeFileSync(f, Buffer.alloc(2048, 0x41));
    await expect(readTarIndex(f)).rejects.toMatchObject({ code: 'EINVAL' });
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('OVF', () => {
  it('reads a VMware-style descriptor: units, EFI firmware, several NICs and disks', () => {
    const ovf = `<?xml version="1.0"?>
<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="x" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <ovf:References><ovf:File ovf:href="a-disk1.vmdk" ovf:id="file1"/><ovf:File ovf:href="a-disk2.vmdk" ovf:id="file2"/></ovf:References>
  <ovf:DiskSection><ovf:Disk ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1"/>
    <ovf:Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk2" ovf:fileRef="file2"/></ovf:DiskSection>
  <ovf:VirtualSystem ovf:id="win-box">
    <ovf:Name>win/box: "prod"</ovf:Name>
    <ovf:OperatingSystemSection ovf:id="1" vmw:osType="windows9_64Guest"><ovf:Info/></ovf:OperatingSystemSection>
    <ovf:VirtualHardwareSection>
      <ovf:Item><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></ovf:Item>
      <ovf:Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>4096</rasd:VirtualQuantity></ovf:Item>
      <ovf:Item><rasd:ResourceType>10</rasd:ResourceType></ovf:Item>
      <ovf:Item><rasd:ResourceType>10</rasd:ResourceType></ovf:Item>
      <ovf:Item><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:ResourceType>17</rasd:ResourceType></ovf:Item>
      <ovf:Item><rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource><rasd:ResourceType>17</rasd:ResourceType></ovf:Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </ovf:VirtualHardwareSection>
  </ovf:VirtualSystem>
</ovf:Envelope>`;
    const a = parseOvf(ovf);
    expect(a).toMatchObject({ cpus: 4, memoryMiB: 4096, nics: 2, osType: 'windows', firmware: 'uefi' });
    expect(a.disks).toEqual([
      { diskId: 'vmdisk1', href: 'a-disk1.vmdk', capacityBytes: 8 * 1024 ** 3 },
      { diskId: 'vmdisk2', href: 'a-disk2.vmdk', capacityBytes: 1024 ** 3 },
    ]);
    expect(a.name).toBe('win-box- -prod-');
  });

  it('refuses what is not an OVF and absurd hardware', () => {
    expect(() => parseOvf('<html><body/></html>')).toThrow(/not an OVF/);
    expect(() => parseOvf('<Envelope><VirtualSystem><VirtualHardwareSection><Item><ResourceType>3</ResourceType><VirtualQuantity>100000</VirtualQuantity></Item></VirtualHardwareSection></VirtualSystem></Envelope>')).toThrow(/CPUs/);
  });

  it('parses XML entities, CDATA and comments', () => {
    const x = parseXml('<a k="1 &amp; 2"><!-- no --><b><![CDATA[<raw>]]></b>t&lt;x</a>');
    expect(x.children[0]!.attrs.k).toBe('1 & 2');
    expect(x.children[0]!.children[0]!.text).toBe('<raw>');
    expect(x.children[0]!.text).toBe('t<x');
  });

  it('units, names and manifest files', () => {
    expect(allocationUnits('byte * 2^20')).toBe(1024 ** 2);
    expect(allocationUnits('GigaBytes')).toBe(1024 ** 3);
    expect(sanitizeName('../../etc/passwd')).toBe('etc-passwd');
    expect(sanitizeName('')).toBe('Imported VM');
    // Every line must parse and carry a digest of its algorithm's length (junk lines used to be skipped).
    const sha1 = 'ABCDEF'.padEnd(40, '0');
    const sha256 = '0123'.padEnd(64, 'a');
    const mf = parseManifestFile(`SHA1(a.ovf)= ${sha1}\r\nSHA256 (b.vmdk) = ${sha256}\n`);
    expect(mf.get('a.ovf')).toEqual({ algo: 'sha1', hex: sha1.toLowerCase() });
    expect(mf.get('b.vmdk')).toEqual({ algo: 'sha256', hex: sha256 });
    expect(() => parseManifestFile(`SHA1(a.ovf)= ${sha1}\njunk\n`)).toThrow(/line 2 of the manifest/);
    expect(() => parseManifestFile('SHA256(b.vmdk) = 0123\n')).toThrow(/wrong length/);
  });
});
