// VMDesk's VM config <-> libvirt domain XML, pinned per scenario against test/golden/libvirt/<scenario>.xml
// (UPDATE_GOLDEN=1 rewrites them; test/integration/libvirt-host.test.ts has a real libvirtd define every one),
// read back into the same settings; the host URI rules; the bounded XML reader; virsh's outputs as parsed.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { VmConfig } from '../../main/api/schema.js';
import { connectUri, describeHostUri, hostNameProblem, parseHostUri } from '../../main/api/host-uri.js';
import { buildDomainXml, configFromDomain, parseDomainXml, type DomainPlan } from '../../main/engines/libvirt/domain-xml.js';
import { parseXml } from '../../main/engines/libvirt/xml.js';
import { parseEventLine } from '../../main/engines/libvirt/connection.js';
import { parseDomState } from '../../main/engines/libvirt/runtime.js';
import { parseSnapshotList } from '../../main/engines/libvirt/snapshots.js';
import { classify, virshArg } from '../../main/engines/libvirt/virsh.js';
import { ppmToPng } from '../../main/engines/libvirt/ppm.js';

const goldenDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'golden', 'libvirt');

const ID = '0b6e2d4e-6a1f-4d8e-9a51-3f1c2b7d9e10';

function config(extra: Record<string, unknown> = {}): VmConfig {
  return VmConfig.parse({
    schemaVersion: 1,
    id: ID,
    name: 'Test VM',
    engine: 'libvirt',
    host: 'lab',
    cpus: 2,
    memoryMiB: 512,
    network: [],
    createdAt: '2026-01-01T00:00:00.000Z',
    modifiedAt: '2026-01-01T00:00:00.000Z',
    ...extra,
  });
}

const pool = 'default';
const vol = (what: string) => `/var/lib/libvirt/images/vmdesk-${ID}-${what}`;

const scenarios: Record<string, DomainPlan> = {
  minimal: { domainType: 'qemu', pool, config: config() },
  'direct-kernel': {
    domainType: 'qemu',
    pool,
    config: config({
      disks: [{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true }],
      directKernel: { kernel: '/home/u/vmlinuz', initrd: '/home/u/initrd.gz', cmdline: "console=ttyS0 root=/dev/vda quiet msg='a&b<c>'" },
      network: [{ mode: 'nat-host', forwards: [], mac: '52:54:00:12:34:56' }],
    }),
    bootFiles: { kernel: vol('kernel'), initrd: vol('initrd') },
  },
  'disks-cdrom-buses': {
    domainType: 'kvm',
    pool,
    config: config({
      osType: 'windows',
      cdrom: '/isos/win.iso',
      balloon: true,
      disks: [
        { id: 'root', path: 'disks/root.qcow2', format: 'qcow2', owned: true, bus: 'sata' },
        { id: 'data', path: 'disks/data.img', format: 'raw', owned: true, bus: 'scsi' },
        { id: 'ext0', path: "/srv/images/shared,old 'x'.img", format: 'raw', owned: false, readOnly: true },
        { id: 'fast', path: 'disks/fast.qcow2', format: 'qcow2', owned: true },
      ],
      network: [
        { mode: 'nat-host', forwards: [], model: 'e1000e', mac: '52:54:00:aa:bb:cc' },
        { mode: 'none', forwards: [] },
      ],
    }),
    cdrom: vol('cdrom.iso'),
  },
  uefi: {
    domainType: 'kvm',
    pool,
    config: config({ firmware: 'uefi', name: 'Lab VM+2.0 _x', disks: [{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true }] }),
  },
};

describe('buildDomainXml golden files', () => {
  for (const [name, plan] of Object.entries(scenarios)) {
    it(`matches test/golden/libvirt/${name}.xml`, () => {
      const xml = buildDomainXml(plan);
      const file = join(goldenDir, `${name}.xml`);
      if (process.env.UPDATE_GOLDEN) {
        mkdirSync(goldenDir, { recursive: true });
        writeFileSync(file, xml);
      }
      expect(existsSync(file), `${file} is missing: run UPDATE_GOLDEN=1 npx vitest run test/unit/libvirt-domain-xml.test.ts`).toBe(true);
      expect(xml).toBe(readFileSync(file, 'utf8'));
    });
  }

  it('has no golden file without a scenario', () => {
    const files = readdirSync(goldenDir).filter((f) => f.endsWith('.xml')).map((f) => f.slice(0, -4));
    expect(files.sort()).toEqual(Object.keys(scenarios).sort());
  });
});

describe('domain XML back to VMDesk settings', () => {
  for (const [name, plan] of Object.entries(scenarios)) {
    it(`reads back what ${name} wrote`, () => {
      const c = plan.config;
      const { settings, ignored } = configFromDomain(parseDomainXml(buildDomainXml(plan)), { pool });
      expect(ignored).toEqual([]);
      expect(settings).toMatchObject({ name: c.name, id: c.id, cpus: c.cpus, memoryMiB: c.memoryMiB, firmware: c.firmware, osType: c.osType, accel: plan.domainType === 'kvm' ? 'kvm' : 'tcg' });
      // Owned disks come back by id, format, bus and read-only; attached files by path.
      const disks = (settings.disks ?? []).map((d) => ({ id: d.owned ? d.id : 'attached', path: d.owned ? d.path : d.path, format: d.format, bus: d.bus ?? 'virtio', readOnly: !!d.readOnly }));
      expect(disks).toEqual(c.disks.map((d) => ({ id: d.owned ? d.id : 'attached', path: d.path, format: d.format, bus: d.bus ?? 'virtio', readOnly: !!d.readOnly })));
      const cards = c.network.filter((n) => n.mode !== 'none');
      expect((settings.network ?? []).filter((n) => n.mode !== 'none').map((n) => ({ mac: n.mac, model: n.model ?? 'virtio-net' }))).toEqual(cards.map((n) => ({ mac: n.mac, model: n.model ?? 'virtio-net' })));
      if (c.directKernel) expect(settings.directKernel).toEqual({ kernel: plan.bootFiles!.kernel, initrd: plan.bootFiles!.initrd, cmdline: c.directKernel.cmdline });
      if (c.cdrom) expect(settings.cdrom).toBe(plan.cdrom);
    });
  }

  it("reports what VMDesk has no setting for in someone else's domain, and takes its memory in any unit", () => {
    const xml = `<domain type='kvm'><name>theirs</name><uuid>${ID}</uuid><memory unit='GiB'>2</memory><vcpu>4</vcpu>
      <os><type>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader></os>
      <devices><disk type='volume' device='disk'><driver type='qcow2'/><source pool='other' volume='x.qcow2'/><target dev='vda' bus='virtio'/></disk>
      <disk type='block' device='lun'><target dev='sdb' bus='scsi'/></disk>
      <interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface></devices></domain>`;
    const s = parseDomainXml(xml);
    expect(s).toMatchObject({ name: 'theirs', memoryMiB: 2048, cpus: 4, firmware: 'uefi', vmdesk: false });
    const { settings, ignored } = configFromDomain(s, { pool });
    expect(settings.disks).toEqual([]);
    expect(settings.network).toEqual([{ mode: 'none', forwards: [] }]);
    expect(ignored.join('; ')).toMatch(/pool other.*lun.*bridge|pool other.*bridge/s);
  });

  it('finds the VNC socket and serial pty of a running domain', () => {
    const s = parseDomainXml(`<domain type='qemu'><name>a</name><uuid>${ID}</uuid><memory>262144</memory><vcpu>1</vcpu><devices>
      <serial type='pty'><source path='/dev/pts/7'/><target port='0'/></serial>
      <graphics type='vnc' socket='/var/lib/libvirt/qemu/domain-1-a/vnc.sock'><listen type='socket' socket='/var/lib/libvirt/qemu/domain-1-a/vnc.sock'/></graphics></devices></domain>`);
    expect(s).toMatchObject({ memoryMiB: 256, serialPty: '/dev/pts/7', vncSocket: '/var/lib/libvirt/qemu/domain-1-a/vnc.sock' });
  });

  it('refuses what cannot be said in a definition, and XML a host should not send', () => {
    expect(() => buildDomainXml({ ...scenarios.minimal!, config: { ...config(), directKernel: { kernel: '/k', cmdline: 'a\u0001b' } } as VmConfig })).toThrow(/control characters|uploaded/);
    expect(() => buildDomainXml({ domainType: 'qemu', pool, config: config({ directKernel: { kernel: '/k', cmdline: '' } }) })).toThrow(/kernel uploaded/);
    expect(() => parseXml('<!DOCTYPE d [<!ENTITY x "y">]><domain>&x;</domain>')).toThrow(/DOCTYPE/);
    expect(() => parseXml('<domain><name>a</domain>')).toThrow(/not well-formed/);
    expect(() => parseXml('<a>' + '<b>'.repeat(60) + '</b>'.repeat(60) + '</a>')).toThrow(/deep/);
    expect(() => parseXml('<a>' + '<b/>'.repeat(50_001) + '</a>')).toThrow(/elements/);
    expect(() => parseDomainXml('<network/>')).toThrow(/no <domain>/);
    expect(() => parseDomainXml(`<domain><memory unit='parsecs'>3</memory></domain>`)).toThrow(/not a size/);
  });
});

describe('host URIs', () => {
  it.each([
    ['qemu:///session', 'local', true],
    ['qemu:///system', 'local', true],
    ['qemu+ssh://alice@lab.example.org/system', 'ssh', false],
    ['qemu+ssh://alice@[2001:db8::1]:2222/system?keyfile=/home/alice/.ssh/id_ed25519', 'ssh', false],
    ['qemu+unix:///system?socket=/tmp/x/libvirt-sock', 'unix', true],
    ['qemu+tls://lab/system', 'tls', false],
  ])('accepts %s', (uri, transport, local) => {
    const u = parseHostUri(uri);
    expect(u).toMatchObject({ transport, local });
    expect(describeHostUri(u).length).toBeGreaterThan(5);
  });

  it.each([
    ['', /empty/],
    ['qemu+ssh://alice:secret@lab/system', /password/],
    ['qemu+ssh://lab/system?no_verify=1', /verification/],
    ['qemu+ssh://lab/system?command=/bin/evil', /command/],
    ['qemu+ssh://lab/system?netcat=/tmp/nc', /command/],
    ['qemu+ssh://lab/system?password=x', /passwords/],
    ['qemu+ssh://lab/system?known_hosts_verify=ignore', /host keys/],
    ['qemu+ssh://lab/system?keyfile=relative', /absolute/],
    ['qemu+ssh://lab/system?frobnicate=1', /not one VMDesk passes on/],
    ['qemu+ssh://lab/system?sshauth=password', /no passwords/],
    ['http://lab/system', /scheme "http"/],
    ['xen:///system', /scheme "xen"/],
    ['qemu:///embed?root=/tmp', /session or \/system/],
    ['qemu://lab/system', /no host name/],
    ['qemu+ssh:///system', /needs a host/],
    ['qemu+ssh://a b@lab/system', /spaces/],
    ['qemu+ssh://lab;rm -rf/system', /spaces|host name/],
    ['qemu+ssh://lab:99999/system', /port/],
    ['qemu+ssh://lab/system?socket=/x', /does not apply/],
    ['qemu+ssh://lab/system?keyfile=/a&keyfile=/b', /twice/],
    ['qemu+ssh://lab/system\n', /control/],
  ])('refuses %j', (uri, why) => {
    expect(() => parseHostUri(uri)).toThrow(why);
  });

  it('connects over ssh without a terminal (no password prompt nobody can answer)', () => {
    expect(connectUri(parseHostUri('qemu+ssh://a@lab/system'))).toBe('qemu+ssh://a@lab/system?no_tty=1');
    expect(connectUri(parseHostUri('qemu+ssh://a@lab/system?keyfile=/k'))).toBe('qemu+ssh://a@lab/system?keyfile=/k&no_tty=1');
    expect(connectUri(parseHostUri('qemu:///system'))).toBe('qemu:///system');
  });

  it('names hosts plainly and keeps "local" for the library', () => {
    expect(hostNameProblem('lab-1.home')).toBeUndefined();
    expect(hostNameProblem('local')).toMatch(/local library/);
    expect(hostNameProblem('LOCAL')).toMatch(/local library/);
    expect(hostNameProblem('a/b')).toMatch(/letters/);
    expect(hostNameProblem('x'.repeat(33))).toMatch(/at most/);
  });
});

describe("virsh's outputs", () => {
  it('parses domain events, states and snapshot lists', () => {
    expect(parseEventLine("event 'lifecycle' for domain 'web 1': Stopped Destroyed")).toEqual({ type: 'lifecycle', domain: 'web 1', event: 'Stopped', detail: 'Destroyed' });
    expect(parseEventLine("event 'reboot' for domain 'a'")).toEqual({ type: 'reboot', domain: 'a', event: '', detail: '' });
    expect(parseEventLine('garbage')).toBeUndefined();
    expect(parseDomState('running (booted)\n')).toEqual({ state: 'running', reason: 'booted', text: 'running (booted)' });
    expect(parseDomState('shut off (destroyed)')).toMatchObject({ state: 'shutoff', reason: 'destroyed' });
    expect(parseDomState('paused (user)')).toMatchObject({ state: 'paused' });
    expect(parseDomState('crashed (panicked)')).toMatchObject({ state: 'crashed' });
    const rows = parseSnapshotList(' Name         Creation Time               State\n-----\n vmdesk-abc   2026-11-26 16:17:21 +0000   running\n s2           2026-11-26 17:00:00 +0100   shutoff\n');
    expect(rows).toEqual([
      { tag: 'vmdesk-abc', dateSec: Date.parse('2026-11-26T16:17:21Z') / 1000, state: 'running' },
      { tag: 's2', dateSec: Date.parse('2026-11-26T16:00:00Z') / 1000, state: 'shutoff' },
    ]);
  });

  it("classifies virsh's errors and refuses arguments its parser would misread", () => {
    expect(classify('error: failed to connect to the hypervisor\nerror: Failed to connect socket to /x: No such file or directory')).toBe('connect');
    expect(classify("error: failed to get domain 'x'")).toBe('not-found');
    expect(classify('error: Requested operation is not valid: domain is not running')).toBe('state');
    expect(virshArg('/a b/c')).toBe("'/a b/c'");
    expect(() => virshArg("it's")).toThrow(/quotes/);
    expect(() => virshArg('a\nb')).toThrow(/control/);
  });

  it('turns a PPM screenshot into a PNG and refuses a malformed one', () => {
    const ppm = Buffer.concat([Buffer.from('P6\n# c\n2 1\n255\n'), Buffer.from([255, 0, 0, 0, 255, 0])]);
    const png = ppmToPng(ppm);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(() => ppmToPng(Buffer.concat([Buffer.from('P6 2 1 255\n'), Buffer.alloc(5)]))).toThrow(/bytes of pixels/);
    expect(() => ppmToPng(Buffer.from('P5 2 1 255\n'))).toThrow(/P6/);
  });
});
