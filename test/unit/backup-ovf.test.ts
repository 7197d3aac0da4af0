// The OVF descriptor reader and writer: linear time on hostile input, DTDs and entities refused, bounds on
// size, elements and depth, device types (disk controllers, NIC models, CD drives) from VirtualBox and VMware
// descriptors, manifests, and the OVA exporter's descriptor read back by the parser.
import { describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { VmdeskError } from '../../main/api/errors.js';
import { VM_SCHEMA_VERSION, type VmConfig } from '../../main/api/schema.js';
import { decodeDescriptor, parseManifestFile, parseOvf, parseXml, OVF_MAX_BYTES } from '../../main/core/backup/ovf.js';
import { XML_LIMITS } from '../../main/core/backup/ovf-xml.js';
import { buildOvf } from '../../main/core/backup/ova-export.js';

function timed<T>(fn: () => T): { ms: number; result?: T; error?: unknown } {
  const t0 = performance.now();
  try {
    const result = fn();
    return { ms: performance.now() - t0, result };
  } catch (error) {
    return { ms: performance.now() - t0, error };
  }
}

function expectRefused(fn: () => unknown, message?: RegExp): void {
  const { error } = timed(fn);
  expect(error).toBeInstanceOf(VmdeskError);
  expect(error).toMatchObject({ code: 'EINVAL' });
  if (message) expect((error as Error).message).toMatch(message);
}

const NS = `xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vbox="http://www.virtualbox.org/ovf/machine" xmlns:vmw="http://www.vmware.com/schema/ovf"`;

const item = (fields: Record<string, string | number>) => `<Item>${Object.entries(fields).map(([k, v]) => `<rasd:${k}>${v}</rasd:${k}>`).join('')}</Item>`;

/** A descriptor as VirtualBox 7 exports it: SATA (AHCI) disk, IDE (PIIX4) DVD, E1000 + virtio + PCnet NICs. */
const VBOX_OVF = `<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" ${NS}>
  <References><File ovf:id="file1" ovf:href="deb-disk001.vmdk"/><File ovf:id="file2" ovf:href="deb-disk002.vmdk"/></References>
  <DiskSection><Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="10737418240" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" vbox:uuid="381ab720-eda4-482e-bc02-9e7eee41d651"/>
    <Disk ovf:capacity="1073741824" ovf:diskId="vmdisk2" ovf:fileRef="file2" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>Logical networks used in the package</Info><Network ovf:name="NAT"><Description>Logical network used by this appliance.</Description></Network></NetworkSection>
  <VirtualSystem ovf:id="deb">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96"><Info>The kind of installed guest operating system</Info><Description>Debian_64</Description><vbox:OSType ovf:required="false">Debian_64</vbox:OSType></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemIdentifier>deb</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType></System>
      ${item({ Caption: '2 virtual CPU', InstanceID: 1, ResourceType: 3, VirtualQuantity: 2 })}
      ${item({ AllocationUnits: 'MegaBytes', InstanceID: 2, ResourceType: 4, VirtualQuantity: 2048 })}
      ${item({ Address: 0, Caption: 'ideController0', InstanceID: 3, ResourceSubType: 'PIIX4', ResourceType: 5 })}
      ${item({ Address: 0, Caption: 'sataController0', InstanceID: 5, ResourceSubType: 'AHCI', ResourceType: 20 })}
      ${item({ AddressOnParent: 0, Caption: 'disk1', HostResource: '/disk/vmdisk1', InstanceID: 7, Parent: 5, ResourceType: 17 })}
      ${item({ AddressOnParent: 1, Caption: 'disk2', HostResource: '/disk/vmdisk2', InstanceID: 8, Parent: 3, ResourceType: 17 })}
      ${item({ AddressOnParent: 0, AutomaticAllocation: 'true', Caption: 'cdrom1', InstanceID: 9, Parent: 3, ResourceType: 15 })}
      ${item({ AutomaticAllocation: 'true', Caption: "Ethernet adapter on 'NAT'", Connection: 'NAT', InstanceID: 10, ResourceSubType: 'E1000', ResourceType: 10 })}
      ${item({ AutomaticAllocation: 'true', Connection: 'NAT', InstanceID: 11, ResourceSubType: 'virtio', ResourceType: 10 })}
      ${item({ AutomaticAllocation: 'true', Connection: 'NAT', InstanceID: 12, ResourceSubType: 'PCNet32', ResourceType: 10 })}
      ${item({ Caption: 'sound', InstanceID: 13, ResourceSubType: 'ensoniq1371', ResourceType: 35 })}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>`;

describe('XML reader', () => {
  it('is linear: hostile shapes that took the regex reader tens of seconds are refused or read in time proportional to their size', () => {
    const shapes: ((n: number) => string)[] = [
      (n) => '<'.repeat(n), // 53 s for 100 KB with the old reader
      (n) => `<Envelope>${'<'.repeat(n)}</Envelope>`,
      (n) => `<a ${Array.from({ length: 60 }, (_, i) => `b${i}="c"`).join(' ')} ${'x'.repeat(n)}`,
      (n) => `<a>${'<!--'.repeat(n)}`,
      (n) => `<a>${'<![CDATA['.repeat(n)}`,
      (n) => `<a k="${'"'.repeat(n)}"/>`,
      (n) => `<a>${'&amp'.repeat(n)}</a>`,
      (n) => `<a>${'a'.repeat(10 * n)}</a>`,
      (n) => `<Envelope>${'<Item><x>1</x></Item>'.repeat(n / 4)}</Envelope>`,
      (n) => `${'<a>'.repeat(n)}`,
      (n) => '<a ' + "b='c' ".repeat(n) + '/>',
    ];
    // The process's own CPU time (other processes on a shared machine do not count), the best of three runs,
    // and a ratio rather than a deadline: four times the input costs about four times as much when linear,
    // sixteen times when quadratic.
    const best = (xml: string) => {
      let ms = Infinity;
      for (let i = 0; i < 3; i++) {
        const before = process.cpuUsage();
        const r = timed(() => parseOvf(xml));
        const used = process.cpuUsage(before);
        if (r.error) expect(r.error).toBeInstanceOf(VmdeskError);
        ms = Math.min(ms, (used.user + used.system) / 1000);
      }
      return ms;
    };
    for (const shape of shapes) {
      const small = best(shape(25_000));
      const large = best(shape(100_000));
      expect(large).toBeLessThan(5_000);
      // Below a few milliseconds the ratio is noise: only a measurable time must scale linearly.
      if (large > 20) expect(large / Math.max(small, 1), shape(8)).toBeLessThan(10);
    }
  });

  it('refuses DTDs: billion laughs, external entities, and undefined entities', () => {
    const laughs = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><Envelope><VirtualSystem><Name>&lol3;</Name></VirtualSystem></Envelope>`;
    expectRefused(() => parseOvf(laughs), /DOCTYPE/);
    const xxe = `<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><Envelope><VirtualSystem><Name>&xxe;</Name></VirtualSystem></Envelope>`;
    expectRefused(() => parseOvf(xxe), /DOCTYPE/);
    expectRefused(() => parseOvf('<Envelope><VirtualSystem><Name>&xxe;</Name></VirtualSystem></Envelope>'), /not well-formed/);
    expectRefused(() => parseOvf('<Envelope><VirtualSystem></Envelope>'), /not well-formed/);
  });

  it('bounds size, element count, depth and attributes', () => {
    const big = `<Envelope>${' '.repeat(XML_LIMITS.chars)}</Envelope>`;
    expectRefused(() => parseXml(big), /too large/);
    expectRefused(() => decodeDescriptor(Buffer.alloc(OVF_MAX_BYTES + 1, 0x20), 'the descriptor'), /too large/);
    expectRefused(() => parseXml(`<r>${'<a/>'.repeat(XML_LIMITS.elements)}</r>`), /more than 200000 elements/);
    expectRefused(() => parseXml(`${'<a>'.repeat(XML_LIMITS.depth + 1)}${'</a>'.repeat(XML_LIMITS.depth + 1)}`), /nests elements more than 64 deep/);
    expectRefused(() => parseXml(`<a ${Array.from({ length: 65 }, (_, i) => `x${i}="1"`).join(' ')}/>`), /more than 64 attributes/);
    expect(parseXml(`${'<a>'.repeat(XML_LIMITS.depth)}${'</a>'.repeat(XML_LIMITS.depth)}`).children).toHaveLength(1);
  });

  it('treats "__proto__" as an attribute name like any other', () => {
    const x = parseXml('<a __proto__="1" constructor="2" ovf:toString="3"/>');
    const attrs = x.children[0]!.attrs;
    expect(Object.keys(attrs).sort()).toEqual(['__proto__', 'constructor', 'toString']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('reads UTF-8 with a BOM and UTF-16, refuses invalid UTF-8', () => {
    expect(parseOvf(decodeDescriptor(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(VBOX_OVF)]), 'd')).name).toBe('deb');
    expect(parseOvf(decodeDescriptor(Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(VBOX_OVF, 'utf16le')]), 'd')).cpus).toBe(2);
    expectRefused(() => decodeDescriptor(Buffer.from([0x3c, 0x61, 0xff, 0x3e]), 'the descriptor'), /not valid UTF-8/);
  });
});

describe('OVF devices', () => {
  it('keeps VirtualBox 7 devices: SATA and IDE disks, E1000 and virtio NICs; PCnet, the DVD drive and sound are notes', () => {
    const a = parseOvf(VBOX_OVF);
    expect(a).toMatchObject({ name: 'deb', cpus: 2, memoryMiB: 2048, osType: 'linux', firmware: 'bios', nics: 3 });
    expect(a.disks).toEqual([
      { diskId: 'vmdisk1', href: 'deb-disk001.vmdk', capacityBytes: 10 * 1024 ** 3, formatUrl: expect.stringContaining('streamOptimized'), bus: 'sata' },
      { diskId: 'vmdisk2', href: 'deb-disk002.vmdk', capacityBytes: 1024 ** 3, formatUrl: expect.stringContaining('vmdk'), bus: 'ide' },
    ]);
    expect(a.adapters.map((n) => n.model)).toEqual(['e1000', 'virtio-net', undefined]);
    expect(a.cdroms).toEqual([{ bus: 'ide' }]);
    expect(a.warnings).toEqual([expect.stringMatching(/network adapter 3 is an AMD PCnet.*virtio-net/), expect.stringMatching(/CD\/DVD drive on IDE.*no ISO.*--iso/)]);
  });

  it('keeps VMware devices: LSI Logic and paravirtual SCSI, E1000e and VMXNET3, EFI firmware', () => {
    const ovf = `<Envelope ${NS}>
      <References><File ovf:id="f1" ovf:href="a.vmdk"/><File ovf:id="f2" ovf:href="b.vmdk"/><File ovf:id="f3" ovf:href="c.vmdk"/></References>
      <DiskSection><Disk ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="d1" ovf:fileRef="f1"/><Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="d2" ovf:fileRef="f2"/><Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="d3" ovf:fileRef="f3"/></DiskSection>
      <VirtualSystem ovf:id="win"><OperatingSystemSection ovf:id="1" vmw:osType="windows9_64Guest"/>
      <VirtualHardwareSection>
        ${item({ InstanceID: 3, ResourceSubType: 'lsilogicsas', ResourceType: 6 })}
        ${item({ InstanceID: 4, ResourceSubType: 'VirtualSCSI', ResourceType: 6 })}
        ${item({ InstanceID: 5, ResourceSubType: 'vmware.sata.ahci', ResourceType: 20 })}
        ${item({ HostResource: 'ovf:/disk/d1', InstanceID: 6, Parent: 3, ResourceType: 17 })}
        ${item({ HostResource: 'ovf:/disk/d2', InstanceID: 7, Parent: 4, ResourceType: 17 })}
        ${item({ HostResource: 'ovf:/disk/d3', InstanceID: 8, Parent: 5, ResourceType: 17 })}
        ${item({ InstanceID: 9, ResourceSubType: 'E1000e', ResourceType: 10 })}
        ${item({ InstanceID: 10, ResourceSubType: 'VmxNet3', ResourceType: 10 })}
        <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      </VirtualHardwareSection></VirtualSystem></Envelope>`;
    const a = parseOvf(ovf);
    expect(a.disks.map((d) => d.bus)).toEqual(['scsi', 'virtio', 'sata']);
    expect(a.adapters.map((n) => n.model)).toEqual(['e1000e', undefined]);
    expect(a).toMatchObject({ osType: 'windows', firmware: 'uefi' });
    expect(a.warnings).toEqual([
      expect.stringMatching(/controller 3 is a lsilogicsas controller.*virtio-scsi/),
      expect.stringMatching(/controller 4 is a VMware paravirtual SCSI controller.*virtio/),
      expect.stringMatching(/network adapter 2 is a VMware VmxNet3.*virtio-net/),
    ]);
  });

  it('maps VirtioSCSI to scsi (virtio-scsi), NVMe to SATA, and a blank disk (no file) to a new empty disk', () => {
    const ovf = `<Envelope ${NS}><References><File ovf:id="f1" ovf:href="a.vmdk"/></References>
      <DiskSection><Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="d1" ovf:fileRef="f1"/><Disk ovf:capacity="2147483648" ovf:diskId="blank"/></DiskSection>
      <VirtualSystem ovf:id="x"><OperatingSystemSection ovf:id="94"/><VirtualHardwareSection>
        ${item({ InstanceID: 1, ResourceSubType: 'VirtioSCSI', ResourceType: 20 })}
        ${item({ InstanceID: 2, ResourceSubType: 'NVMe', ResourceType: 20 })}
        ${item({ HostResource: '/disk/d1', InstanceID: 3, Parent: 1, ResourceType: 17 })}
        ${item({ HostResource: '/disk/blank', InstanceID: 4, Parent: 2, ResourceType: 17 })}
      </VirtualHardwareSection></VirtualSystem></Envelope>`;
    const a = parseOvf(ovf);
    expect(a.disks).toEqual([
      { diskId: 'd1', href: 'a.vmdk', capacityBytes: 1024 ** 3, bus: 'scsi' },
      { diskId: 'blank', capacityBytes: 2 * 1024 ** 3, bus: 'sata' },
    ]);
    expect(a.osType).toBe('linux'); // CIM id 94, Ubuntu 64-bit, with no name to go by
    expect(a.warnings).toEqual([expect.stringMatching(/NVMe controller/)]);
  });

  it('refuses descriptors that are ambiguous or reach outside the appliance', () => {
    const base = (refs: string, disks: string, items: string, vs = 1) =>
      `<Envelope ${NS}><References>${refs}</References><DiskSection>${disks}</DiskSection>${`<VirtualSystem ovf:id="v"><VirtualHardwareSection>${items}</VirtualHardwareSection></VirtualSystem>`.repeat(vs)}</Envelope>`;
    const f1 = '<File ovf:id="f1" ovf:href="a.vmdk"/>';
    const d1 = '<Disk ovf:capacity="1" ovf:diskId="d1" ovf:fileRef="f1"/>';
    const i1 = item({ HostResource: '/disk/d1', ResourceType: 17 });
    expectRefused(() => parseOvf(base(f1, d1, i1, 2)), /2 virtual machines/);
    expectRefused(() => parseOvf(base(f1 + f1, d1, i1)), /file id "f1" twice/);
    expectRefused(() => parseOvf(base(f1, d1 + d1, i1)), /disk "d1" twice/);
    expectRefused(() => parseOvf(base(f1, d1, i1 + i1)), /attaches the disk "d1" twice/);
    expectRefused(() => parseOvf(base('<File ovf:id="f1" ovf:href="http://evil.example/a.vmdk"/>', d1, i1)), /remote references/);
    expectRefused(() => parseOvf(base('<File ovf:id="f1" ovf:href="a.vmdk" ovf:chunkSize="1000"/>', d1, i1)), /chunks/);
    expectRefused(() => parseOvf(base('<File ovf:id="f1" ovf:href="a.vmdk.gz"/>', d1, i1)), /looks gzip-compressed/);
    expectRefused(() => parseOvf(base('<File ovf:id="f1" ovf:href="a.vmdk" ovf:compression="bzip2"/>', d1, i1)), /gzip only/);
    expectRefused(() => parseOvf(base(f1, '<Disk ovf:capacity="100" ovf:capacityAllocationUnits="byte * 2^40" ovf:diskId="d1" ovf:fileRef="f1"/>', i1)), /capacity past the limit/);
    expectRefused(() => parseOvf(base(f1, d1, i1 + item({ ResourceType: 4, VirtualQuantity: 1, AllocationUnits: 'byte' }))), /memory, which is out of range/);
    const gz = parseOvf(base('<File ovf:id="f1" ovf:href="a.vmdk.gz" ovf:compression="gzip"/>', d1, i1));
    expect(gz.disks[0]).toMatchObject({ href: 'a.vmdk.gz', gzip: true });
  });

  it('ignores quantities that are not whole numbers', () => {
    const ovf = `<Envelope><VirtualSystem><VirtualHardwareSection>${item({ ResourceType: 3, VirtualQuantity: '1e3' })}${item({ ResourceType: 4, VirtualQuantity: '-5' })}${item({ ResourceType: 3, VirtualQuantity: 'Infinity' })}</VirtualHardwareSection></VirtualSystem></Envelope>`;
    expect(parseOvf(ovf)).toMatchObject({ cpus: 1, memoryMiB: 512 });
  });
});

describe('manifests', () => {
  const h = (n: number, c = 'a') => c.repeat(n);
  it('reads both "SHA256(name)= hex" forms and SHA1/SHA512', () => {
    const mf = parseManifestFile(`SHA256(a.ovf)= ${h(64)}\nSHA1 (a-disk1.vmdk) = ${h(40, 'B')}\r\nSHA512(./c.vmdk)=${h(128, 'c')}\n\n`);
    expect([...mf]).toEqual([
      ['a.ovf', { algo: 'sha256', hex: h(64) }],
      ['a-disk1.vmdk', { algo: 'sha1', hex: h(40, 'b') }],
      ['c.vmdk', { algo: 'sha512', hex: h(128, 'c') }],
    ]);
    expect(parseManifestFile('SHA256(disk (1).vmdk)= ' + h(64)).has('disk (1).vmdk')).toBe(true);
  });

  it('refuses lines that do not parse, wrong digest lengths, unknown algorithms, duplicates and paths', () => {
    expectRefused(() => parseManifestFile(`SHA256(a.ovf)= ${h(64)}\ngarbage`), /line 2/);
    expectRefused(() => parseManifestFile(`MD5(a.ovf)= ${h(32)}`), /line 1/);
    expectRefused(() => parseManifestFile(`SHA256(a.ovf)= ${h(40)}`), /wrong length/);
    expectRefused(() => parseManifestFile(`SHA256(a.ovf)= ${h(64)}\nSHA1(a.ovf)= ${h(40)}`), /twice/);
    expectRefused(() => parseManifestFile(`SHA256(../a.ovf)= ${h(64)}`), /not a file of the appliance/);
    expectRefused(() => parseManifestFile(`SHA256(/etc/passwd)= ${h(64)}`), /not a file of the appliance/);
    expectRefused(() => parseManifestFile(`SHA256(${'x'.repeat(5000)})= ${h(64)}`), /too long/);
  });
});

describe('OVA descriptor writer', () => {
  const config = (p: Partial<VmConfig> = {}): VmConfig => ({
    schemaVersion: VM_SCHEMA_VERSION,
    id: randomUUID(),
    name: 'web & db',
    osType: 'linux',
    engine: 'qemu',
    accel: 'auto',
    firmware: 'bios',
    cpus: 2,
    memoryMiB: 1536,
    disks: [],
    network: [{ mode: 'nat', forwards: [] }],
    createdAt: new Date().toISOString(),
    modifiedAt: new Date().toISOString(),
    ...p,
  });

  it('writes what the parser reads back: CPUs, memory, every bus, NIC models, OS, firmware', () => {
    const c = config({
      name: 'web db',
      osType: 'windows',
      firmware: 'uefi',
      cdrom: '/isos/install.iso',
      network: [
        { mode: 'nat', forwards: [], model: 'e1000' },
        { mode: 'none', forwards: [] },
        { mode: 'nat', forwards: [] },
        { mode: 'nat', forwards: [], model: 'e1000e' },
        { mode: 'nat', forwards: [], model: 'rtl8139' },
      ],
    });
    const disks = (['virtio', 'sata', 'ide', 'scsi'] as const).map((bus, i) => ({ href: `web db-disk00${i + 1}.vmdk`, capacityBytes: (i + 1) * 1024 ** 3, bus }));
    const { xml, warnings } = buildOvf(c, disks);
    const a = parseOvf(xml);
    expect(a).toMatchObject({ name: 'web db', cpus: 2, memoryMiB: 1536, osType: 'windows', firmware: 'uefi', nics: 4 });
    expect(a.disks.map((d) => [d.href, d.capacityBytes, d.bus])).toEqual(disks.map((d) => [d.href, d.capacityBytes, d.bus]));
    expect(a.adapters.map((n) => n.model)).toEqual(['e1000', 'virtio-net', 'e1000e', 'rtl8139']);
    expect(a.cdroms).toEqual([{ bus: 'ide' }]);
    expect(a.warnings).toEqual([expect.stringMatching(/CD\/DVD drive on IDE/)]);
    expect(warnings).toEqual([expect.stringMatching(/ISO .*install.iso.* not included/), expect.stringMatching(/UEFI/)]);
    // VirtualBox's shape: its system type, MegaBytes, AHCI for SATA and virtio disks, PIIX4, VirtioSCSI.
    expect(xml).toContain('<vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>');
    expect(xml).toContain('<rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>');
    for (const s of ['AHCI', 'PIIX4', 'VirtioSCSI', 'E1000', 'virtio']) expect(xml).toContain(`<rasd:ResourceSubType>${s}</rasd:ResourceSubType>`);
    expect(xml.match(/<rasd:ResourceSubType>AHCI</g)).toHaveLength(1);
  });

  it('escapes names and writes a rasd element order VMware accepts', () => {
    const { xml } = buildOvf(config({ name: 'a&b' as string }), [{ href: 'a&b-disk001.vmdk', capacityBytes: 1024 ** 2, bus: 'sata' }]);
    expect(xml).toContain('ovf:href="a&amp;b-disk001.vmdk"');
    expect(parseOvf(xml).disks[0]!.href).toBe('a&b-disk001.vmdk');
    for (const block of xml.match(/<Item>[\s\S]*?<\/Item>/g)!) {
      const names = [...block.matchAll(/<rasd:(\w+)>/g)].map((m) => m[1]!);
      expect(names).toEqual([...names].sort());
    }
  });
});
