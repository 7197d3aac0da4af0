// What an import makes of a (possibly forged) archive, decided before anything is written: planImport, the
// manifest schema, the gzip expansion limit, and the sweep of what crashed exports left behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { VmConfig } from '../../main/api/schema.js';
import { Manifest, expansionLimit, planImport, spaceReserve, sweepStaleExports, type ManifestFile } from '../../main/core/backup/archive.js';
import { partialPath } from '../../main/core/snapshots/clone.js';
import type { SnapshotNode, SnapshotTree } from '../../main/core/snapshots/tree.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SHA = 'a'.repeat(64);
const now = new Date().toISOString();

function config(over: Partial<VmConfig> = {}): VmConfig {
  return VmConfig.parse({
    schemaVersion: 1,
    id: randomUUID(),
    name: 'exported',
    cpus: 2,
    memoryMiB: 512,
    disks: [{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true }],
    network: [{ mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }], mac: '52:54:00:12:34:56', model: 'e1000' }],
    createdAt: now,
    modifiedAt: now,
    ...over,
  });
}

function disk(id: string, extra: Partial<ManifestFile> = {}): ManifestFile {
  return { name: `disks/${id}.qcow2`, size: 1, sha256: SHA, role: 'disk', diskId: id, ...extra };
}

function manifest(files: ManifestFile[]): Manifest {
  return Manifest.parse({ format: 'vmdesk-export', version: 1, createdAt: now, vm: { id: 'x', name: 'exported' }, includesSnapshots: true, files });
}

function node(id: string, over: Partial<SnapshotNode> = {}): SnapshotNode {
  return { id, tag: `vmdesk-${id}`, name: `snap ${id}`, description: '', time: now, parent: null, kind: 'disk-only', config: null, thumbnail: false, vmStateBytes: 0, disks: ['disk0'], adopted: false, linkedClones: [], ...over };
}

describe('manifest schema', () => {
  it('refuses disk ids that are paths (the diskId traversal of the security issue)', () => {
    for (const diskId of ['../../0b6a1a52-0000-4000-8000-000000000000/disks/disk0', '/etc/passwd', 'a/b', 'Disk0', '', 'x'.repeat(41)]) {
      expect(() => manifest([disk('disk0', { diskId })]), diskId).toThrow();
    }
  });

  it('refuses a disk entry without an id, the same disk or entry name twice, and two configs', () => {
    expect(() => manifest([{ name: 'disks/a.qcow2', size: 1, sha256: SHA, role: 'disk' }])).toThrow(/disk id/);
    expect(() => manifest([disk('disk0'), disk('disk0', { name: 'disks/other.qcow2' })])).toThrow(/twice/);
    expect(() => manifest([disk('disk0'), disk('disk1', { name: 'disks/disk0.qcow2' })])).toThrow(/twice/);
    const cfg = { name: 'vm.json', size: 1, sha256: SHA, role: 'config' as const };
    expect(() => manifest([cfg, { ...cfg, name: 'vm2.json' }])).toThrow(/more than one config/);
  });
});

describe('planImport', () => {
  it('rebuilds the config from validated values with VMDesk file names; MACs, host paths and bases are not taken', () => {
    const c = config({
      cdrom: '/home/victim/secret.iso',
      directKernel: { kernel: '/home/victim/.ssh/id_rsa', initrd: '/etc/shadow', cmdline: 'console=ttyS0' },
      disks: [
        { id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false, bus: 'sata', base: '/var/lib/other/base.qcow2' },
        { id: 'ext0', path: '/home/victim/data.img', format: 'raw', owned: false, readOnly: false },
        { id: 'iso', path: '/srv/installer.iso', format: 'raw', owned: false, readOnly: true },
      ],
    });
    const plan = planImport(manifest([disk('disk0'), disk('stray')]), c, null);
    expect(plan.disks.map((d) => d.disk)).toEqual([{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false, bus: 'sata' }]);
    expect(plan.settings).toEqual({ osType: 'linux', engine: 'qemu', accel: 'auto', firmware: 'bios', cpus: 2, memoryMiB: 512, network: [{ mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }], model: 'e1000' }] });
    expect(plan.settings).not.toHaveProperty('cdrom');
    expect(plan.settings).not.toHaveProperty('directKernel');
    const w = plan.warnings.join('\n');
    expect(w).toMatch(/disk ext0 was the file \/home\/victim\/data.img of the exporting machine; it was not attached/);
    expect(w).toMatch(/disk iso was the file \/srv\/installer.iso/);
    expect(w).toMatch(/CD\/DVD image \/home\/victim\/secret.iso .* not kept/);
    expect(w).toMatch(/kernel \/home\/victim\/.ssh\/id_rsa, initrd \/etc\/shadow.*set the kernel and initrd again/);
    expect(w).toMatch(/base image \(\/var\/lib\/other\/base.qcow2\); it was ignored/);
    expect(w).toMatch(/disk stray, which its vm.json does not use/);
  });

  it('refuses owned disks placed outside the bundle, and duplicate disk ids', () => {
    for (const p of ['/home/victim/disk.qcow2', '../../other/disks/disk0.qcow2', 'disks/../../x.qcow2']) {
      // The schema refuses such a vm.json too; planImport must not rely on that alone (built without parse).
      const c = { ...config(), disks: [{ id: 'disk0', path: p, format: 'qcow2', owned: true, readOnly: false }] } as VmConfig;
      expect(() => planImport(manifest([disk('disk0')]), c, null), p).toThrow(/outside its own bundle/);
    }
    const twice = config({
      disks: [
        { id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false },
        { id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, readOnly: false },
      ],
    });
    expect(() => planImport(manifest([disk('disk0')]), twice, null)).toThrow(/twice/);
  });

  it("keeps disks in the engine's own format: raw ones under disks/<id>.img", () => {
    const plan = planImport(manifest([disk('disk0')]), config({ engine: 'microvm' }), null, 'raw');
    expect(plan.disks[0]!.disk).toEqual({ id: 'disk0', path: 'disks/disk0.img', format: 'raw', owned: true, readOnly: false });
  });

  it('rebuilds snapshot nodes: no host paths in their settings, no linked clones, no state files, safe tags, thumbnails only as snapshots/<id>.png', () => {
    const hostile = config({ directKernel: { kernel: '/etc/shadow', cmdline: '' } });
    const plain = config({ disks: [{ id: 'disk0', path: '/etc/passwd', format: 'raw', owned: false, readOnly: false }, { id: 'disk0x', path: 'disks/x', format: 'qcow2', owned: true, readOnly: false }] });
    const tree: SnapshotTree = {
      version: 1,
      current: 'bbbb1111',
      nodes: [
        node('aaaa1111', { config: hostile, linkedClones: [randomUUID()] }),
        node('bbbb1111', { parent: 'aaaa1111', config: plain, name: 'evil\u001b[2Jname', thumbnail: true }),
        node('cccc1111', { parent: 'bbbb1111', tag: 'x,file.filename=/etc/shadow' }),
        node('dddd1111', { parent: 'aaaa1111', stateFile: 'dddd1111.vmstate' }),
      ],
      pending: [node('eeee1111')],
    };
    const files = [
      disk('disk0'),
      { name: 'snapshots/bbbb1111.png', size: 10, sha256: SHA, role: 'thumbnail' as const },
      { name: 'disks/disk0.qcow2.png', size: 10, sha256: SHA, role: 'thumbnail' as const },
      { name: 'vm.json', size: 10, sha256: SHA, role: 'thumbnail' as const },
      { name: 'snapshots/cccc1111.png', size: 10, sha256: SHA, role: 'thumbnail' as const },
    ];
    const plan = planImport(manifest(files), config(), tree);
    const t = plan.tree!;
    expect(t.nodes.map((n) => n.id)).toEqual(['aaaa1111', 'bbbb1111']);
    expect(t.pending).toEqual([]);
    expect(t.current).toBe('bbbb1111');
    expect(t.nodes.every((n) => n.linkedClones.length === 0 && !n.thumbnail && n.stateFile === undefined)).toBe(true);
    // Settings that named host files are not kept at all (restore then keeps the VM's current ones) ...
    expect(t.nodes[0]!.config).toBeNull();
    // ... and the others keep only VMDesk's own disks under VMDesk's names.
    expect(t.nodes[1]!.config!.disks).toEqual([]);
    expect(t.nodes[1]!.name).toBe('evil [2Jname');
    expect(plan.thumbnails.map((x) => x.id)).toEqual(['bbbb1111']);
    const w = plan.warnings.join('\n');
    expect(w).toMatch(/entry disks\/disk0.qcow2.png is not the thumbnail/);
    expect(w).toMatch(/entry vm.json is not the thumbnail/);
    expect(w).toMatch(/its tag is not one VMDesk uses/);
    expect(w).toMatch(/memory snapshot's state file is not portable/);
    expect(w).toMatch(/settings saved with snapshot "snap aaaa1111" named files of the exporting machine/);
  });
});

describe('expansionLimit (gzip bombs)', () => {
  function header(virtual: number, snapshots = 0): Buffer {
    const h = Buffer.alloc(4096);
    h.write('QFI\xfb', 0, 'latin1');
    h.writeUInt32BE(3, 4);
    h.writeBigUInt64BE(BigInt(virtual), 24);
    h.writeUInt32BE(snapshots, 60);
    return h;
  }

  it('allows the virtual size plus metadata per state, RAM per snapshot', () => {
    const r = expansionLimit(header(64 * MiB, 2), { ramBytes: 256 * MiB, freeBytes: 100 * GiB, totalBytes: 200 * GiB });
    expect(r.by).toBe('header');
    expect(r.limit).toBe(3 * (72 * MiB + 256 * MiB + 16 * MiB) + 64 * MiB);
  });

  it('never allows more than the free space minus a reserve, nor the largest disk VMDesk makes', () => {
    const huge = expansionLimit(header(2 ** 60, 100000), { ramBytes: 4096 * GiB, freeBytes: 50 * GiB, totalBytes: 200 * GiB });
    expect(huge.by).toBe('space');
    expect(huge.limit).toBe(50 * GiB - spaceReserve(200 * GiB));
    const almostFull = expansionLimit(header(64 * MiB), { ramBytes: 0, freeBytes: 512 * MiB, totalBytes: 10 * GiB });
    expect(almostFull.limit).toBe(0);
    const hard = expansionLimit(header(2 ** 60, 1000), { ramBytes: 4096 * GiB, freeBytes: 2 ** 52, totalBytes: 2 ** 52 });
    expect(hard.by).toBe('hard');
    expect(hard.limit).toBe(64 * 1024 ** 4);
  });

  it('refuses an entry that does not start with a qcow2 header', () => {
    expect(() => expansionLimit(Buffer.alloc(4096), { ramBytes: 0, freeBytes: GiB * 10, totalBytes: GiB * 20 })).toThrow(/not a qcow2 image/);
    expect(() => expansionLimit(header(MiB).subarray(0, 40), { ramBytes: 0, freeBytes: GiB * 10, totalBytes: GiB * 20 })).toThrow(/not a qcow2 image/);
  });
});

describe('sweepStaleExports', () => {
  let dir: string;
  let deadPid: number;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'vmdesk-sweep-'));
    // A pid that existed and is gone: a child that has exited.
    deadPid = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("removes a dead writer's partial archive and temp folder, keeps a live writer's and the user's files", async () => {
    const tarStart = Buffer.alloc(1024);
    tarStart.write('ustar', 257, 'latin1');
    const dead = path.join(dir, `a.vmdesk.partial-${deadPid}-123`);
    writeFileSync(dead, tarStart);
    const deadEmpty = path.join(dir, `b.vmdesk.partial-${deadPid}-`);
    writeFileSync(deadEmpty, '');
    const deadTmp = path.join(dir, `.vmdesk-export-${deadPid}-123-AbC123`);
    mkdirSync(deadTmp);
    writeFileSync(path.join(deadTmp, 'disk0.qcow2'), 'x');
    const live = partialPath(path.join(dir, 'c.vmdesk'));
    writeFileSync(live, tarStart);
    const usersOwn = path.join(dir, `notes.partial-${deadPid}-1`);
    writeFileSync(usersOwn, 'not a tar file, but long enough to have a header: '.repeat(20));
    const removed = await sweepStaleExports(dir);
    expect(removed.sort()).toEqual([dead, deadEmpty, deadTmp].sort());
    expect(existsSync(live)).toBe(true);
    expect(existsSync(usersOwn)).toBe(true);
  });
});
