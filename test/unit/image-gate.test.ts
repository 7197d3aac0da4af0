// The image gate against hostile images the test builds itself: every image that would make QEMU open another
// host file, or whose format contradicts what the user stated, is refused before anything is written.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { admitImage, blockSpec, formatFromName, qemuImgSource } from '../../main/core/images/gate.js';
import { inspectImage } from '../../main/platform/image-inspect.js';

const dir = mkdtempSync(join(tmpdir(), 'vmdesk-gate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const MiB = 1024 * 1024;
const secret = join(dir, 'shadow');
writeFileSync(secret, 'root:$6$secret-hash:19000:0:99999:7:::\n');

function qemuImg(...args: string[]): void {
  execFileSync('qemu-img', args, { stdio: 'pipe' });
}

function file(name: string, data: Buffer | string): string {
  const p = join(dir, name);
  writeFileSync(p, data);
  return p;
}

const admit = (p: string, opts: Partial<Parameters<typeof admitImage>[1]> = {}) => admitImage({ path: p }, { what: `image ${p}`, stated: formatFromName(p), ...opts });

describe('image gate: references to other files', () => {
  it('refuses a qcow2 with a backing file (the shadow-file attack), whatever its name', async () => {
    const p = join(dir, 'x.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', secret, p, '1M');
    await expect(admit(p)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/backing file ".*shadow"/) });
    const img = join(dir, 'x.img');
    qemuImg('create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', secret, img, '1M');
    await expect(admit(img)).rejects.toThrow(/refers to other files/);
  });

  it('refuses a qcow2 with an external data file', async () => {
    const p = join(dir, 'data.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'data-file.raw')}`, p, '1M');
    await expect(admit(p)).rejects.toThrow(/external data file/);
  });

  it('refuses VMDK descriptors with extents and sparse VMDKs with a parent', async () => {
    const flat = join(dir, 'flat.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', flat, '1M');
    await expect(admit(flat)).rejects.toThrow(/extent "flat-flat\.vmdk"/);
    // A hand-written descriptor whose extent is a host file.
    const evil = file('evil.vmdk', `# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "${secret}" 0\n`);
    await expect(admit(evil)).rejects.toThrow(/shadow/);
    const base = join(dir, 'base.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', base, '1M');
    const child = join(dir, 'child.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-F', 'vmdk', '-b', base, child, '1M');
    await expect(admit(child)).rejects.toThrow(/parent disk "[^"]*base\.vmdk"/);
  });

  it('refuses differencing VHD and VDI images', async () => {
    const vhd = join(dir, 'dyn.vhd');
    qemuImg('create', '-q', '-f', 'vpc', vhd, '1M');
    const b = readFileSync(vhd);
    // Turn the dynamic disk into a differencing one: disk type 4 in the footer copy at 0 and at the end.
    b.writeUInt32BE(4, 60);
    b.writeUInt32BE(4, b.length - 512 + 60);
    await expect(admit(file('diff.vhd', b))).rejects.toThrow(/VHD differencing/);
    const vdi = join(dir, 'd.vdi');
    qemuImg('create', '-q', '-f', 'vdi', vdi, '1M');
    const v = readFileSync(vdi);
    v.writeUInt32LE(4, 0x4c);
    await expect(admit(file('diff.vdi', v))).rejects.toThrow(/differencing/);
  });

  it('refuses a differencing VHDX (HasParent in its file parameters)', async () => {
    const p = join(dir, 'base.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', p, '8M');
    const b = readFileSync(p);
    // The metadata region starts with "metadata"; its File Parameters item holds {block size, flags}.
    const region = b.indexOf(Buffer.from('metadata', 'latin1'));
    const fileParams = Buffer.from('3767a1ca36fa434db3b633f0aa44e76b', 'hex');
    const entry = b.indexOf(fileParams, region);
    expect(region).toBeGreaterThan(0);
    expect(entry).toBeGreaterThan(region);
    const itemOffset = b.readUInt32LE(entry + 16);
    b.writeUInt32LE(b.readUInt32LE(region + itemOffset + 4) | 2, region + itemOffset + 4);
    await expect(admit(file('diff.vhdx', b))).rejects.toThrow(/VHDX differencing/);
  });

  it('refuses encrypted and corrupt qcow2 images', async () => {
    const enc = join(dir, 'enc.qcow2');
    // LUKS times its key derivation by the CPU time it used; QEMU gives up ("Unable to get accurate CPU usage")
    // when that clock did not move, which happens now and then on a busy runner: try again.
    for (let attempt = 1; ; attempt++) {
      try {
        qemuImg('create', '-q', '--object', 'secret,id=s0,data=pw', '-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s0', enc, '1M');
        break;
      } catch (e) {
        if (attempt >= 5 || !/accurate CPU usage/.test(String((e as { stderr?: Buffer }).stderr ?? e))) throw e;
      }
    }
    await expect(admit(enc)).rejects.toThrow(/encrypted/);
    const c = join(dir, 'c.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', c, '1M');
    const b = readFileSync(c);
    b.writeBigUInt64BE(b.readBigUInt64BE(72) | 2n, 72);
    await expect(admit(file('corrupt.qcow2', b))).rejects.toThrow(/corrupt/);
  });
});

describe('image gate: formats decided from bytes and stated names', () => {
  it('refuses a file called raw that starts with a qcow2 header, and a qcow2 that is not one', async () => {
    const p = join(dir, 'disguised.raw');
    qemuImg('create', '-q', '-f', 'qcow2', p, '1M');
    await expect(admit(p)).rejects.toThrow(/called raw but starts with a qcow2 header/);
    await expect(admit(file('plain.qcow2', Buffer.alloc(MiB)))).rejects.toThrow(/called qcow2 but its contents are raw/);
  });

  it('takes a .img as what its bytes are, when they are safe', async () => {
    const p = join(dir, 'cloud.img');
    qemuImg('create', '-q', '-f', 'qcow2', p, '2M');
    expect(await admit(p)).toMatchObject({ format: 'qcow2', virtualSize: 2 * MiB });
    expect(await admit(file('blank.img', Buffer.alloc(MiB)))).toMatchObject({ format: 'raw', virtualSize: MiB });
  });

  it('reads a fixed VHD (footer only at the end, which qemu-img would call raw) as VHD', async () => {
    const p = join(dir, 'fixed.vhd');
    qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', p, '4M');
    const a = await admit(p);
    expect(a).toMatchObject({ format: 'vpc', subformat: 'fixed' });
    expect(a.virtualSize).toBeGreaterThanOrEqual(4 * MiB);
    // Read through the gate's source, the converted copy has the VHD's size (the footer is not data).
    const out = join(dir, 'fixed-copy.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', qemuImgSource(a), out]);
    expect(readFileSync(out).length).toBe(a.virtualSize);
  });

  it('accepts vmdk (monolithicSparse, streamOptimized), vdi and vhdx with their sizes', async () => {
    for (const [name, fmt, opts] of [
      ['s.vmdk', 'vmdk', []],
      ['so.vmdk', 'vmdk', ['-o', 'subformat=streamOptimized']],
      ['v.vdi', 'vdi', []],
      ['h.vhdx', 'vhdx', []],
    ] as const) {
      const p = join(dir, name);
      qemuImg('create', '-q', '-f', fmt, ...opts, p, '3M');
      expect(await admit(p), name).toMatchObject({ format: fmt, virtualSize: 3 * MiB });
    }
  });

  it('refuses images past the 64 TiB limit before anything is allocated', async () => {
    const p = join(dir, 'huge.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', p, '100T');
    await expect(admit(p)).rejects.toThrow(/virtual size of 109951162777600 bytes, more than the limit/);
  });

  it('CD-ROMs must be ISO or raw bytes', async () => {
    const q = join(dir, 'fake.iso');
    qemuImg('create', '-q', '-f', 'qcow2', q, '1M');
    await expect(admitImage({ path: q }, { what: 'ISO', purpose: 'cdrom' })).rejects.toThrow(/not a CD\/DVD image/);
    const iso = Buffer.alloc(64 * 1024);
    iso.write('\x01CD001', 0x8000, 'latin1');
    const a = await admitImage({ path: file('real.iso', iso) }, { what: 'ISO', purpose: 'cdrom' });
    expect(a.format).toBe('raw');
    expect(a.inspection.format).toBe('iso');
  });
});

describe('image gate: where images come from', () => {
  it('refuses a symlink that leaves the appliance folder, and a directory or a device', async () => {
    const folder = join(dir, 'appliance');
    mkdirSync(folder);
    symlinkSync(secret, join(folder, 'disk1.img'));
    await expect(admitImage({ path: join(folder, 'disk1.img') }, { what: 'OVF disk disk1.img', within: folder })).rejects.toThrow(/outside/);
    await expect(admit(folder)).rejects.toThrow(/not a regular file/);
    await expect(admit('/dev/null')).rejects.toThrow(/not a regular file/);
    await expect(admit(join(dir, 'absent.img'))).rejects.toThrow(/does not exist/);
  });

  it('inspects a byte range inside a bigger file (a disk inside an OVA) without leaving it', async () => {
    const q = join(dir, 'inner.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', secret, q, '1M');
    const inner = readFileSync(q);
    const outer = file('outer.tar', Buffer.concat([Buffer.alloc(1536, 7), inner, Buffer.alloc(4096, 9)]));
    await expect(admitImage({ path: outer, offset: 1536, length: inner.length }, { what: 'OVA disk' })).rejects.toThrow(/backing file/);
    const clean = join(dir, 'inner-clean.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', clean, '1M');
    const c = readFileSync(clean);
    const outer2 = file('outer2.tar', Buffer.concat([Buffer.alloc(512), c, Buffer.alloc(512)]));
    const a = await admitImage({ path: outer2, offset: 512, length: c.length }, { what: 'OVA disk' });
    expect(a.format).toBe('qcow2');
    expect(blockSpec(a)).toEqual({ driver: 'qcow2', backing: null, file: { driver: 'raw', offset: 512, size: c.length, file: { driver: 'file', filename: outer2 } } });
    await expect(inspectImage({ path: outer2, offset: 512, length: 1e9 })).rejects.toThrow(/outside/);
  });

  it('survives random and truncated headers: only a verdict or an I/O error, never a crash or a hang', async () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    const magics = ['QFI\xfb', 'KDMV', 'vhdxfile', 'conectix', '# Disk DescriptorFile\n'];
    for (let i = 0; i < 300; i++) {
      const len = rnd() % 300_000;
      const b = Buffer.alloc(len);
      for (let j = 0; j < Math.min(len, 4096); j++) b[j] = rnd() & 0xff;
      const m = magics[i % magics.length]!;
      if (len > m.length) b.write(m, 0, 'latin1');
      if (i % 3 === 0 && len > 0x50) b.writeUInt32LE(0xbeda107f, 0x40);
      const p = file(`fuzz-${i}.bin`, b);
      const r = await inspectImage({ path: p });
      expect(typeof r.format).toBe('string');
      expect(Number.isSafeInteger(r.virtualSize)).toBe(true);
      rmSync(p);
    }
  });
});
