// Pins QEMU's command line for the guest integration devices (issue 12) against test/golden/qemu/guest-*.args
// (UPDATE_GOLDEN=1 rewrites them), and the rules those devices follow.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { VmConfig } from '../../main/api/schema.js';
import { buildQemuArgs, type QemuArgsInput } from '../../main/engines/qemu/args.js';
import { mountCommand, planShares, virtiofsdCommand, type ResolvedShare } from '../../main/engines/qemu/shares.js';
import { parseHostname, parseInterfaces } from '../../main/engines/qemu/guest-agent.js';

const goldenDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'golden', 'qemu');

function config(extra: Record<string, unknown> = {}): VmConfig {
  return VmConfig.parse({
    schemaVersion: 1,
    id: '0b6e2d4e-6a1f-4d8e-9a51-3f1c2b7d9e10',
    name: 'Test VM',
    cpus: 2,
    memoryMiB: 512,
    network: [],
    createdAt: '2026-01-01T00:00:00.000Z',
    modifiedAt: '2026-01-01T00:00:00.000Z',
    ...extra,
  });
}

const runtimeDir = '/run/user/1000/vmdesk/0b6e2d4e';
const base = { bundleDir: '/home/u/VMs/Test VM.vmdesk', runtimeDir, accel: 'tcg' as const, capabilities: { sandbox: true } };

const virtiofs: ResolvedShare = { tag: 'src', hostPath: '/home/u/src,old', readOnly: false, driver: 'virtiofs', socket: `${runtimeDir}/fs0.sock` };
const nineP: ResolvedShare = { tag: 'docs', hostPath: '/home/u/My Docs,2024', readOnly: true, driver: '9p' };

const scenarios: Record<string, QemuArgsInput> = {
  // virtio-vga (resize), the agent's and the clipboard's virtio-serial ports, before the balloon.
  'guest-display-agent-clipboard': { ...base, config: config({ display: 'virtio', guestAgent: true, clipboard: true, balloon: true }) },
  'guest-agent-only': { ...base, config: config({ guestAgent: true }) },
  // virtiofs needs the RAM shared with virtiofsd (memfd named pc.ram, so saved states stay loadable); 9p read-only.
  'guest-shares': { ...base, config: config({ memoryMiB: 1024 }), shares: [virtiofs, nineP] },
  'guest-shares-9p-only': { ...base, config: config(), shares: [{ ...nineP, readOnly: false, tag: 'rw' }] },
};

describe('guest integration golden files', () => {
  for (const [name, input] of Object.entries(scenarios)) {
    it(name, () => {
      const text = buildQemuArgs(input).join('\n') + '\n';
      const file = join(goldenDir, `${name}.args`);
      if (process.env.UPDATE_GOLDEN) {
        mkdirSync(goldenDir, { recursive: true });
        writeFileSync(file, text);
      }
      expect(existsSync(file), `${file} is missing: run UPDATE_GOLDEN=1 npx vitest run test/unit/qemu-guest-args.test.ts`).toBe(true);
      expect(text).toBe(readFileSync(file, 'utf8'));
    });
  }
});

describe('guest integration devices', () => {
  it('adds nothing for a VM that asks for none (older VMs keep their command line)', () => {
    const args = buildQemuArgs({ ...base, config: config() });
    expect(args).toContain('VGA,id=video0');
    expect(args.join(' ')).not.toMatch(/virtio-serial|vdagent|qga|vhost-user-fs|fsdev|memory-backend/);
  });

  it('keeps every channel on a unix socket in the runtime dir and the clipboard agent off the pointer', () => {
    const args = buildQemuArgs(scenarios['guest-display-agent-clipboard']!);
    const chardevs = args.filter((_, i) => args[i - 1] === '-chardev');
    for (const c of chardevs.filter((c) => c.startsWith('socket,'))) expect(c).toMatch(new RegExp(`path=${runtimeDir}/`));
    expect(chardevs.some((c) => /tcp|host=|port=/.test(c))).toBe(false);
    expect(chardevs.find((c) => c.startsWith('qemu-vdagent'))).toContain('clipboard=on,mouse=off');
    // The balloon stays the last PCI device.
    const devices = args.filter((_, i) => args[i - 1] === '-device');
    expect(devices.at(-1)).toMatch(/^virtio-balloon-pci/);
  });

  it('doubles commas in share paths and refuses control characters in them', () => {
    const args = buildQemuArgs(scenarios['guest-shares']!);
    expect(args).toContain('local,id=fsdev1,path=/home/u/My Docs,,2024,security_model=mapped-xattr,readonly=on');
    expect(() => buildQemuArgs({ ...base, config: config(), shares: [{ ...nineP, hostPath: '/x\ny' }] })).toThrow(/control characters/);
  });

  it('runs virtiofsd for a read-only share on a read-only bind mount, passing the folder as an argument', () => {
    const ro = virtiofsdCommand('/usr/lib/qemu/virtiofsd', { ...virtiofs, readOnly: true }, true);
    expect(ro.file).toBe('unshare');
    expect(ro.argv.slice(0, 3)).toEqual(['--mount', '--propagation', 'private']);
    const script = ro.argv[ro.argv.indexOf('-c') + 1]!;
    expect(script).toContain('mount --bind -o ro "$1" "$1"');
    expect(script).not.toContain('/home/u');
    // virtiofsd's -o list splits at commas: the comma in the folder's name is escaped for it.
    expect(ro.argv).toContain('source=/home/u/src\\,old');
    const rw = virtiofsdCommand('/usr/lib/qemu/virtiofsd', virtiofs, true);
    expect(rw.file).toBe('/usr/lib/qemu/virtiofsd');
    const user = virtiofsdCommand('/usr/lib/qemu/virtiofsd', virtiofs, false);
    expect(user.argv.slice(0, 2)).toEqual(['--user', '--map-root-user']);
  });

  it('falls back to 9p without virtiofsd, and leaves out a folder that is gone', () => {
    const cfg = config({ shares: [{ tag: 'a', hostPath: '/tmp', readOnly: false }, { tag: 'gone', hostPath: '/nonexistent-vmdesk-share', readOnly: false }] });
    const planned = planShares(cfg, runtimeDir, undefined);
    expect(planned.shares).toEqual([{ tag: 'a', hostPath: '/tmp', readOnly: false, driver: '9p' }]);
    expect(planned.warnings.join('\n')).toMatch(/"gone" left out: .* does not exist/);
    expect(planShares(cfg, runtimeDir, '/usr/lib/qemu/virtiofsd').shares[0]).toMatchObject({ driver: 'virtiofs', socket: `${runtimeDir}/fs0.sock` });
    expect(mountCommand({ tag: 'a', driver: '9p', readOnly: true })).toBe('mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro a /mnt/a');
  });
});

describe('guest agent replies are untrusted', () => {
  it('keeps only addresses that parse, with sane prefixes, and bounds the lists', () => {
    const raw = [
      {
        name: 'eth0\u001b[31m',
        'hardware-address': '52:54:00:12:34:56',
        'ip-addresses': [
          { 'ip-address': '10.0.2.15', 'ip-address-type': 'ipv4', prefix: 24 },
          { 'ip-address': 'fe80::1', 'ip-address-type': 'ipv6', prefix: 64 },
          { 'ip-address': '10.0.2.999', 'ip-address-type': 'ipv4', prefix: 24 },
          { 'ip-address': '::1', 'ip-address-type': 'ipv4', prefix: 8 },
          { 'ip-address': '10.0.0.1', 'ip-address-type': 'ipv4', prefix: 33 },
        ],
      },
      'junk',
      { name: 42 },
      ...Array.from({ length: 100 }, (_, i) => ({ name: `x${i}` })),
    ];
    const ifs = parseInterfaces(raw);
    // The list is cut at 64 entries before anything is read from them; the two that are not interfaces are dropped.
    expect(ifs.length).toBe(62);
    expect(ifs[0]).toEqual({
      name: 'eth0?[31m',
      mac: '52:54:00:12:34:56',
      addresses: [
        { address: '10.0.2.15', prefix: 24, family: 'ipv4' },
        { address: 'fe80::1', prefix: 64, family: 'ipv6' },
      ],
    });
    expect(() => parseInterfaces({ not: 'a list' })).toThrow();
  });

  it('drops a host name that is not one', () => {
    expect(parseHostname({ 'host-name': 'web-1.example' })).toBe('web-1.example');
    expect(parseHostname({ 'host-name': 'evil\u001b]0;x\u0007' })).toBeUndefined();
    expect(parseHostname({ 'host-name': 'a'.repeat(300) })).toBeUndefined();
    expect(parseHostname(null)).toBeUndefined();
  });
});
