import { describe, expect, it } from 'vitest';
import { CreateVmRequest, VmName, parseSize, HostPath, VmConfig } from '../../main/api/schema.js';

describe('VM names', () => {
  it.each(['web', 'Debian 12', 'a.b_c+d-e', 'x'.repeat(64)])('accepts %j', (n) => {
    expect(VmName.safeParse(n).success).toBe(true);
  });
  it.each(['', '../x', 'a/b', '..', '.hidden', 'a,b', 'a\nb', ' lead', 'trail ', 'x'.repeat(65), 'a..b'])('rejects %j', (n) => {
    expect(VmName.safeParse(n).success).toBe(false);
  });
});

describe('sizes', () => {
  it('parses units', () => {
    expect(parseSize('512M')).toBe(512 * 1024 ** 2);
    expect(parseSize('8G')).toBe(8 * 1024 ** 3);
    expect(parseSize('1.5GiB')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('4096')).toBe(4096);
  });
  it.each(['', 'abc', '-1G', '1X', '1e9'])('rejects %j', (s) => {
    expect(() => parseSize(s)).toThrow(/invalid size/);
  });
});

describe('create request', () => {
  it('fills defaults', () => {
    const r = CreateVmRequest.parse({ name: 'vm' });
    expect(r).toMatchObject({ cpus: 1, memoryMiB: 512, accel: 'auto', engine: 'qemu', firmware: 'bios' });
    // Absent: the core gives the engine's default (NAT where the engine has a network).
    expect(r.network).toBeUndefined();
  });
  it.each([
    [{ name: 'vm', cpus: 0 }, /at least 1 CPU/],
    [{ name: 'vm', cpus: -2 }, /at least 1 CPU/],
    [{ name: 'vm', cpus: 100000 }, /at most/],
    [{ name: 'vm', memoryMiB: 0 }, /at least 16/],
    [{ name: 'vm', memoryMiB: 1e12 }, /at most 4 TiB of memory/],
    [{ name: 'vm', diskBytes: 1e18 }, /larger than the limit of 64 TiB/],
    [{ name: 'vm', diskBytes: 1 }, /at least 1 MiB \(give a unit/],
    [{ name: 'vm', iso: 'relative.iso' }, /absolute/],
    [{ name: 'vm', iso: '/x/a\nb.iso' }, /newlines/],
    [{ name: 'vm', directKernel: { kernel: '/k', cmdline: 'a\nb' } }, /newlines/],
  ])('rejects %j', (input, msg) => {
    const r = CreateVmRequest.safeParse(input);
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => i.message).join('\n')).toMatch(msg);
  });
});

describe('vm.json schema', () => {
  it('keeps a VM\'s own disks inside its bundle', () => {
    const base = { schemaVersion: 1, id: '0b6e2d4e-6a1f-4d8e-9a51-3f1c2b7d9e10', name: 'x', cpus: 1, memoryMiB: 64, createdAt: '2026-01-01T00:00:00.000Z', modifiedAt: '2026-01-01T00:00:00.000Z' };
    for (const p of ['/etc/shadow', '../other/disks/disk0.qcow2', 'disks/../../x']) {
      expect(VmConfig.safeParse({ ...base, disks: [{ id: 'disk0', path: p, format: 'raw', owned: true }] }).success, p).toBe(false);
    }
    expect(VmConfig.safeParse({ ...base, disks: [{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true }] }).success).toBe(true);
    expect(VmConfig.safeParse({ ...base, disks: [{ id: 'ext0', path: '/srv/data.img', format: 'raw', owned: false }] }).success).toBe(true);
  });

  it('rejects unknown schema versions and missing fields', () => {
    expect(VmConfig.safeParse({ schemaVersion: 2 }).success).toBe(false);
    expect(HostPath.safeParse('/ok/path').success).toBe(true);
  });
});
