// Fuzzes the OVF descriptor reader, the manifest reader and the descriptor decoder with fast-check: XML-ish
// token soup, random hardware sections, and mutations of the descriptor VMDesk itself exports. Whatever comes
// in, the result is a sane appliance (within VMDesk's limits) or a VmdeskError EINVAL, quickly.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { randomUUID } from 'node:crypto';
import { VmdeskError } from '../../main/api/errors.js';
import { DiskBus, LIMITS, NicModel, VM_SCHEMA_VERSION, VmName, type VmConfig } from '../../main/api/schema.js';
import { decodeDescriptor, parseManifestFile, parseOvf, type OvfAppliance } from '../../main/core/backup/ovf.js';
import { buildOvf } from '../../main/core/backup/ova-export.js';

/** Runs `fn`; it must return or throw VmdeskError EINVAL, within `ms`. */
function bounded<T>(fn: () => T, ms = 1000): T | undefined {
  const t0 = performance.now();
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof VmdeskError)) throw new Error(`threw something other than VmdeskError: ${String((e as Error)?.stack ?? e)}`);
    expect(e.code).toBe('EINVAL');
    return undefined;
  } finally {
    expect(performance.now() - t0).toBeLessThan(ms);
  }
}

function sane(a: OvfAppliance | undefined): void {
  if (!a) return;
  expect(VmName.safeParse(a.name).success).toBe(true);
  expect(Number.isInteger(a.cpus) && a.cpus >= 1 && a.cpus <= LIMITS.cpusMax).toBe(true);
  expect(Number.isInteger(a.memoryMiB) && a.memoryMiB >= LIMITS.memoryMinMiB && a.memoryMiB <= LIMITS.memoryMaxMiB).toBe(true);
  expect(a.disks.length).toBeLessThanOrEqual(LIMITS.disksMax);
  expect(a.adapters.length).toBeLessThanOrEqual(4);
  expect(a.nics).toBe(a.adapters.length);
  for (const d of a.disks) {
    if (d.bus !== undefined) expect(DiskBus.safeParse(d.bus).success).toBe(true);
    if (d.capacityBytes !== undefined) expect(Number.isSafeInteger(d.capacityBytes) && d.capacityBytes <= LIMITS.diskMaxBytes).toBe(true);
    if (d.href !== undefined) expect(d.href).not.toMatch(/^[a-z][a-z0-9+.-]*:/i);
    else expect(d.capacityBytes).toBeGreaterThanOrEqual(LIMITS.diskMinBytes);
  }
  for (const n of a.adapters) if (n.model !== undefined) expect(NicModel.safeParse(n.model).success).toBe(true);
  expect(new Set(a.disks.map((d) => d.diskId)).size).toBe(a.disks.length);
}

const TOKENS = ['<', '>', '</', '/>', '=', '"', "'", ' ', '\n', '&', '&amp;', '&lt;', '&#x41;', '&#0;', '&xxe;', '<!--', '-->', '<![CDATA[', ']]>', '<!DOCTYPE x [', '<!ENTITY a "b">', ']>', '<?xml version="1.0"?>',
  'Envelope', 'VirtualSystem', 'VirtualHardwareSection', 'Item', 'References', 'File', 'DiskSection', 'Disk', 'ovf:', 'rasd:', 'ResourceType', 'ResourceSubType', 'HostResource', 'InstanceID', 'Parent', 'VirtualQuantity',
  'ovf:href', 'ovf:id', 'ovf:diskId', 'ovf:fileRef', 'ovf:capacity', '17', '3', '4', '10', '20', '/disk/d1', 'f1', 'd1', '__proto__', 'x'];

const resourceItem = fc.record({
  type: fc.oneof(fc.constantFrom('3', '4', '5', '6', '10', '14', '15', '17', '20', '35'), fc.string({ maxLength: 6 })),
  sub: fc.oneof(fc.constantFrom('', 'AHCI', 'PIIX4', 'lsilogic', 'VirtualSCSI', 'VirtioSCSI', 'NVMe', 'E1000', 'E1000e', 'PCNet32', 'VmxNet3', 'virtio', 'rtl8139'), fc.string({ maxLength: 8 })),
  id: fc.oneof(fc.constantFrom('1', '2', '3', '4', '5'), fc.string({ maxLength: 4 })),
  parent: fc.option(fc.constantFrom('1', '2', '3', '4', '5', 'nope'), { nil: undefined }),
  host: fc.option(fc.oneof(fc.constantFrom('/disk/d1', 'ovf:/disk/d2', 'ovf://disk/d3', '/file/f1', '/disk/missing'), fc.string({ maxLength: 12 })), { nil: undefined }),
  quantity: fc.option(fc.oneof(fc.nat({ max: 100_000 }).map(String), fc.constantFrom('-1', '1e9', 'Infinity', '99999999999999999999', '0', ' 7 ')), { nil: undefined }),
  units: fc.option(fc.constantFrom('MegaBytes', 'byte * 2^20', 'byte * 2^30', 'byte * 2^99', 'GB', 'byte', 'furlongs'), { nil: undefined }),
});
const fileRef = fc.record({ id: fc.constantFrom('f1', 'f2', 'f3', ''), href: fc.oneof(fc.constantFrom('a.vmdk', 'b.vmdk.gz', 'http://x/y', '../up.vmdk', 'c.raw'), fc.string({ maxLength: 10 })), compression: fc.option(fc.constantFrom('gzip', 'identity', 'xz'), { nil: undefined }) });
const diskDef = fc.record({ id: fc.constantFrom('d1', 'd2', 'd3', ''), fileRef: fc.option(fc.constantFrom('f1', 'f2', 'f3', 'none'), { nil: undefined }), capacity: fc.oneof(fc.nat().map(String), fc.constantFrom('${size}', '-5', '1e3', '99999999999999999999')), units: fc.option(fc.constantFrom('byte * 2^30', 'byte * 2^40', 'byte * 2^61', 'GB'), { nil: undefined }) });

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');

interface ResItem {
  type: string;
  sub: string;
  id: string;
  parent?: string;
  host?: string;
  quantity?: string;
  units?: string;
}

function descriptor(files: { id: string; href: string; compression?: string }[], disks: { id: string; fileRef?: string; capacity: string; units?: string }[], items: ResItem[]): string {
  const it = items
    .map((i) => {
      const f: [string, string | undefined][] = [['AllocationUnits', i.units], ['HostResource', i.host], ['InstanceID', i.id], ['Parent', i.parent], ['ResourceSubType', i.sub], ['ResourceType', i.type], ['VirtualQuantity', i.quantity]];
      return `<Item>${f.filter(([, v]) => v !== undefined).map(([k, v]) => `<rasd:${k}>${esc(v!)}</rasd:${k}>`).join('')}</Item>`;
    })
    .join('');
  return `<Envelope xmlns:ovf="o" xmlns:rasd="r"><References>${files.map((f) => `<File ovf:id="${esc(f.id)}" ovf:href="${esc(f.href)}"${f.compression ? ` ovf:compression="${f.compression}"` : ''}/>`).join('')}</References><DiskSection>${disks
    .map((d) => `<Disk ovf:diskId="${esc(d.id)}"${d.fileRef ? ` ovf:fileRef="${d.fileRef}"` : ''} ovf:capacity="${esc(d.capacity)}"${d.units ? ` ovf:capacityAllocationUnits="${d.units}"` : ''}/>`)
    .join('')}</DiskSection><VirtualSystem ovf:id="fuzz"><VirtualHardwareSection>${it}</VirtualHardwareSection></VirtualSystem></Envelope>`;
}

describe('OVF fuzzing', () => {
  it('XML-ish token soup is parsed or refused with EINVAL, never slowly', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constantFrom(...TOKENS), fc.string({ maxLength: 3 })), { maxLength: 400 }), (tokens) => {
        sane(bounded(() => parseOvf(tokens.join(''))));
        sane(bounded(() => parseOvf(`<Envelope><VirtualSystem><VirtualHardwareSection>${tokens.join('')}</VirtualHardwareSection></VirtualSystem></Envelope>`)));
      }),
      { numRuns: 1500 },
    );
  });

  it('random hardware sections, references and disks give a sane appliance or EINVAL', () => {
    fc.assert(
      fc.property(fc.array(fileRef, { maxLength: 4 }), fc.array(diskDef, { maxLength: 4 }), fc.array(resourceItem, { maxLength: 14 }), (files, disks, items) => {
        sane(bounded(() => parseOvf(descriptor(files, disks, items))));
      }),
      { numRuns: 1500 },
    );
  });

  it('mutations of an exported descriptor give a sane appliance or EINVAL', () => {
    const config: VmConfig = {
      schemaVersion: VM_SCHEMA_VERSION,
      id: randomUUID(),
      name: 'fuzz',
      osType: 'linux',
      engine: 'qemu',
      accel: 'auto',
      firmware: 'uefi',
      cpus: 2,
      memoryMiB: 1024,
      disks: [],
      network: [{ mode: 'nat', forwards: [], model: 'e1000' }],
      createdAt: new Date().toISOString(),
      modifiedAt: new Date().toISOString(),
    };
    const { xml } = buildOvf(config, [
      { href: 'fuzz-disk001.vmdk', capacityBytes: 1024 ** 3, bus: 'virtio' },
      { href: 'fuzz-disk002.vmdk', capacityBytes: 1024 ** 2, bus: 'ide' },
    ]);
    fc.assert(
      fc.property(fc.array(fc.record({ at: fc.nat(), del: fc.nat({ max: 20 }), ins: fc.oneof(fc.constantFrom('<', '>', '"', '&', '</Item>', '<Item>', '17', '<!DOCTYPE a>', ''), fc.string({ maxLength: 5 })) }), { minLength: 1, maxLength: 8 }), (muts) => {
        let s = xml;
        for (const m of muts) {
          const at = m.at % (s.length + 1);
          s = s.slice(0, at) + m.ins + s.slice(at + m.del);
        }
        sane(bounded(() => parseOvf(s)));
      }),
      { numRuns: 1500 },
    );
  });

  it('manifests and descriptor bytes: parsed or refused with EINVAL', () => {
    const line = fc.oneof(
      fc.tuple(fc.constantFrom('SHA1', 'SHA256', 'SHA512', 'MD5', 'sha256'), fc.constantFrom('', ' '), fc.oneof(fc.constantFrom('a.ovf', 'd.vmdk', '../x', '/etc/passwd', 'a (1).vmdk', ''), fc.string({ maxLength: 12 })), fc.constantFrom('=', ' = ', '= ', ''), fc.stringMatching(/^[0-9a-fA-F]{0,130}$/)).map(([a, s, n, e, h]) => `${a}${s}(${n})${e}${h}`),
      fc.string({ maxLength: 40 }),
    );
    fc.assert(
      fc.property(fc.array(line, { maxLength: 6 }), fc.constantFrom('\n', '\r\n'), (lines, nl) => {
        const m = bounded(() => parseManifestFile(lines.join(nl)));
        for (const [name, e] of m ?? []) {
          expect(name).not.toMatch(/(^|\/)\.\.(\/|$)|^\//);
          expect(e.hex).toMatch({ sha1: /^[0-9a-f]{40}$/, sha256: /^[0-9a-f]{64}$/, sha512: /^[0-9a-f]{128}$/ }[e.algo]);
        }
      }),
      { numRuns: 1500 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const text = bounded(() => decodeDescriptor(Buffer.from(bytes), 'the descriptor'));
        if (text !== undefined) sane(bounded(() => parseOvf(text)));
      }),
      { numRuns: 1000 },
    );
  });
});
