// Pins QEMU's command line per scenario against test/golden/qemu/<scenario>.args (UPDATE_GOLDEN=1 rewrites them).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { VmConfig } from '../../main/api/schema.js';
import { VmdeskError } from '../../main/api/errors.js';
import { buildQemuArgs, optValue, type QemuArgsInput } from '../../main/engines/qemu/args.js';

const goldenDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'golden', 'qemu');

function config(extra: Record<string, unknown> = {}): VmConfig {
  return VmConfig.parse({
    schemaVersion: 1,
    id: '0b6e2d4e-6a1f-4d8e-9a51-3f1c2b7d9e10',
    name: 'Test VM',
    cpus: 2,
    memoryMiB: 512,
    createdAt: '2026-01-01T00:00:00.000Z',
    modifiedAt: '2026-01-01T00:00:00.000Z',
    ...extra,
  });
}

const base = {
  bundleDir: '/home/u/VMs/Test VM.vmdesk',
  runtimeDir: '/run/user/1000/vmdesk/0b6e2d4e',
  accel: 'tcg' as const,
  capabilities: { sandbox: true },
};

const scenarios: Record<string, QemuArgsInput> = {
  minimal: { ...base, config: config({ network: [] }) },
  'disks-cdrom': {
    ...base,
    config: config({
      cdrom: '/isos/debian-12.iso',
      disks: [
        { id: 'root', path: 'disks/root.qcow2', format: 'qcow2', owned: true },
        { id: 'data', path: '/srv/images/data,old.img', format: 'raw', owned: false, readOnly: true },
      ],
    }),
  },
  'direct-kernel': {
    ...base,
    config: config({
      directKernel: { kernel: '/boot/a,b/vmlinuz', initrd: '/boot/a,b/initrd.img', cmdline: 'console=ttyS0 opt=x,y quiet' },
    }),
  },
  'nat-forwards': {
    ...base,
    config: config({
      network: [
        {
          mode: 'nat',
          mac: '52:54:00:12:34:56',
          forwards: [
            { protocol: 'tcp', hostPort: 2222, guestPort: 22 },
            { protocol: 'udp', hostPort: 5353, guestPort: 53 },
          ],
        },
      ],
    }),
  },
  'nat-passt': {
    ...base,
    capabilities: { sandbox: true, passt: true },
    config: config({
      network: [
        { mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }] },
        { mode: 'nat-host', forwards: [], model: 'e1000' },
      ],
    }),
  },
  'net-none': { ...base, capabilities: { sandbox: false }, config: config({ network: [{ mode: 'none', forwards: [] }] }) },
  uefi: {
    ...base,
    config: config({ firmware: 'uefi', osType: 'windows' }),
    uefi: { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/home/u/VMs/Test VM.vmdesk/uefi-vars.qcow2' },
  },
  'buses-models-linked': {
    ...base,
    config: config({
      cdrom: '/isos/win11.iso',
      disks: [
        { id: 'root', path: 'disks/root.qcow2', format: 'qcow2', owned: true, bus: 'sata', base: '/lib/vms/src/snapshots/bases/abc/root.qcow2' },
        { id: 'legacy', path: '/srv/old.vhd', format: 'vpc', owned: false, bus: 'ide' },
        { id: 'data', path: 'disks/data.qcow2', format: 'qcow2', owned: true, bus: 'scsi' },
        { id: 'data2', path: 'disks/data2.qcow2', format: 'qcow2', owned: true, bus: 'scsi' },
      ],
      network: [
        { mode: 'nat', forwards: [], model: 'e1000e' },
        { mode: 'nat', forwards: [], model: 'rtl8139' },
      ],
    }),
  },
  'kvm-accel': { ...base, accel: 'kvm', paused: true, config: config({ accel: 'kvm', cpus: 4, memoryMiB: 2048 }) },
  // Issue 11: internal networks are QEMU-side stream servers the daemon's switch connects to, beside passt NAT
  // and an unplugged card; the balloon device comes last so the other devices keep their PCI slots.
  'internal-balloon': {
    ...base,
    capabilities: { sandbox: true, passt: true },
    config: config({
      balloon: true,
      network: [
        { mode: 'nat', mac: '52:54:00:0a:0b:0c', forwards: [] },
        { mode: 'internal', network: 'lab', mac: '52:54:00:0a:0b:0d', forwards: [] },
        { mode: 'none', forwards: [] },
        { mode: 'internal', network: 'other', mac: '52:54:00:0a:0b:0e', forwards: [], model: 'e1000e' },
      ],
    }),
  },
};

describe('buildQemuArgs golden files', () => {
  for (const [name, input] of Object.entries(scenarios)) {
    it(name, () => {
      const text = buildQemuArgs(input).join('\n') + '\n';
      const file = join(goldenDir, `${name}.args`);
      if (process.env.UPDATE_GOLDEN) {
        mkdirSync(goldenDir, { recursive: true });
        writeFileSync(file, text);
      }
      expect(existsSync(file), `${file} is missing: run UPDATE_GOLDEN=1 npx vitest run test/unit/qemu-args.test.ts`).toBe(true);
      expect(text).toBe(readFileSync(file, 'utf8'));
    });
  }
});

describe('buildQemuArgs rules', () => {
  const all = (input: QemuArgsInput) => buildQemuArgs(input);

  it('never uses -cpu host/max under TCG and never opens VNC on TCP', () => {
    for (const input of Object.values(scenarios)) {
      const args = all(input);
      const vnc = args[args.indexOf('-vnc') + 1];
      expect(vnc).toMatch(/^unix:/);
      if (input.accel === 'tcg') expect(args).not.toContain('-cpu');
    }
  });

  it('binds every forward to 127.0.0.1', () => {
    const netdev = all(scenarios['nat-forwards']!).find((a) => a.startsWith('user,'))!;
    for (const part of netdev.split(',').filter((p) => p.startsWith('hostfwd='))) expect(part).toContain(':127.0.0.1:');
  });

  it('states every image format and switches backing files off, except a linked clone\'s own base', () => {
    for (const input of Object.values(scenarios)) {
      const nodes = all(input)
        .filter((_, i, a) => a[i - 1] === '-blockdev')
        .map((j) => JSON.parse(j) as Record<string, unknown>);
      for (const n of nodes) {
        expect(typeof n.driver).toBe('string');
        if (n.driver === 'qcow2' || n.driver === 'vmdk') {
          if (n['node-name'] === 'disk-root' && input === scenarios['buses-models-linked']) expect(n.backing).toBe('disk-root-base');
          else expect(n.backing).toBeNull();
        }
      }
    }
  });

  it('keeps paths whole inside JSON block options, doubles commas in option lists, passes -kernel/-append verbatim', () => {
    const disks = all(scenarios['disks-cdrom']!);
    expect(disks.some((a) => a.startsWith('{') && (JSON.parse(a) as { filename?: string }).filename === '/srv/images/data,old.img')).toBe(true);
    const dk = all(scenarios['direct-kernel']!);
    expect(dk[dk.indexOf('-kernel') + 1]).toBe('/boot/a,b/vmlinuz');
    expect(dk[dk.indexOf('-append') + 1]).toBe('console=ttyS0 opt=x,y quiet');
    expect(optValue('x', 'a,b,,c')).toBe('a,,b,,,,c');
  });

  it('rejects control characters in user strings', () => {
    const bad = config({ cdrom: '/isos/x.iso' });
    bad.cdrom = '/isos/evil\n.iso';
    expect(() => all({ ...base, config: bad })).toThrow(VmdeskError);
    const badKernel = config({ directKernel: { kernel: '/k', cmdline: '' } });
    badKernel.directKernel!.cmdline = 'a\u0007b';
    expect(() => all({ ...base, config: badKernel })).toThrow(/control characters/);
  });

  it('refuses UEFI without firmware paths', () => {
    expect(() => all({ ...base, config: config({ firmware: 'uefi' }) })).toThrow(/OVMF/);
  });

  it('adds -sandbox only when QEMU supports it', () => {
    expect(all(scenarios.minimal!)).toContain('-sandbox');
    expect(all(scenarios['net-none']!)).not.toContain('-sandbox');
  });
});
