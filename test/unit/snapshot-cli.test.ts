// The snapshot/clone/export/import CLI function on a stopped VM: output, --json, --tree, exit codes via VmdeskError.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { Core } from '../../main/core/core.js';
import { runSnapshotCli } from '../../main/cli/snapshot.js';
import { EXIT_CODES, VmdeskError } from '../../main/api/errors.js';
import { SnapshotManager } from '../../main/core/snapshots/manager.js';
import { inProcessRpc } from '../integration/snapshot-harness.js';

// No guest runs here: the QEMU engine module only makes and snapshots disks (qemu-img). The CLI talks to
// the daemon's dispatch in this process.

let home: string;
let core: Core;

async function cli(verb: 'snapshot' | 'clone' | 'export' | 'import', args: string[], json = false): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  try {
    const code = await runSnapshotCli(async () => inProcessRpc(core), verb, args, { stdout, stderr, json });
    return { code, out, err };
  } catch (e) {
    if (e instanceof VmdeskError) return { code: EXIT_CODES[e.code], out, err: err + e.message };
    throw e;
  }
}

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'vmdesk-snapcli-'));
  core = new Core({ home });
  await core.boot();
  await core.create({ name: 'box', diskBytes: 32 * 1024 * 1024, memoryMiB: 128 });
});
afterAll(async () => {
  await core.shutdown();
  rmSync(home, { recursive: true, force: true });
});

describe('vmdesk snapshot', () => {
  it('take, list (table, tree, json), info, rename, describe, restore, delete', async () => {
    expect((await cli('snapshot', ['take', 'box', 'first', '--description', 'fresh'])).out).toMatch(/took disk-only snapshot "first"/);
    expect((await cli('snapshot', ['take', 'box', 'second'])).code).toBe(0);
    const table = await cli('snapshot', ['list', 'box']);
    expect(table.out).toMatch(/^NAME\s+ID\s+KIND/m);
    expect(table.out).toMatch(/second .* first\s+<- current state/);
    const tree = await cli('snapshot', ['list', 'box', '--tree']);
    expect(tree.out.split('\n')[0]).toMatch(/^first  \[/);
    expect(tree.out.split('\n')[1]).toMatch(/^└─ second .*<- current state$/);
    const json = JSON.parse((await cli('snapshot', ['list', 'box'], true)).out);
    expect(json.snapshots.map((s: { name: string }) => s.name)).toEqual(['first', 'second']);
    const info = await cli('snapshot', ['info', 'box', 'first']);
    expect(info.out).toMatch(/description: fresh/);
    expect(info.out).toMatch(/settings: same as now/);
    expect((await cli('snapshot', ['rename', 'box', 'second', 'Second one'])).out).toMatch(/renamed snapshot to "Second one"/);
    expect((await cli('snapshot', ['describe', 'box', 'Second one', 'notes'])).code).toBe(0);
    await core.update('box', { cpus: 2 });
    const r = await cli('snapshot', ['restore', 'box', 'first']);
    expect(r.out).toMatch(/restored "first"; "box" is stopped \(the previous state was saved as "Before restoring first"\)/);
    expect((await core.get('box')).config!.cpus).toBe(1);
    const del = await cli('snapshot', ['delete', 'box', 'first', '--branch']);
    expect(del.out).toMatch(/deleted 3 snapshots/);
    expect((await cli('snapshot', ['list', 'box'])).out).toMatch(/"box" has no snapshots/);
  });

  it('maps bad input to exit codes and changes nothing', async () => {
    expect((await cli('snapshot', ['take', 'box'])).code).toBe(2);
    expect((await cli('snapshot', ['take', 'box', ''])).code).toBe(2);
    expect((await cli('snapshot', ['take', 'nobox', 'x'])).code).toBe(3);
    expect((await cli('snapshot', ['restore', 'box', 'ghost'])).code).toBe(3);
    expect((await cli('snapshot', ['frobnicate', 'box'])).code).toBe(2);
    expect((await cli('snapshot', ['list', 'box', '--bogus'])).code).toBe(2);
    await cli('snapshot', ['take', 'box', 'dup']);
    expect((await cli('snapshot', ['take', 'box', 'DUP'])).code).toBe(4);
    expect((await cli('clone', ['box', 'box'])).code).toBe(4);
    expect((await cli('import', ['/nonexistent/x.vmdesk'])).code).toBe(2);
  });

  it('clone, export and import through the CLI', async () => {
    expect((await cli('clone', ['box', 'box2'])).out).toMatch(/cloned "box" to "box2"/);
    const file = path.join(home, 'box.vmdesk');
    const ex = await cli('export', ['box', file, '--with-snapshots']);
    expect(ex.out).toMatch(/exported "box" to .*box.vmdesk .*with snapshots/);
    expect(ex.err).toMatch(/exporting disk disk0: \d+%/);
    expect(existsSync(file)).toBe(true);
    const im = JSON.parse((await cli('import', [file, '--name', 'box3'], true)).out);
    expect(im.name).toBe('box3');
    expect((await new SnapshotManager(core).list('box3')).snapshots.map((s) => s.name)).toContain('dup');
  });
});

describe('listing a big tree', () => {
  it('lists 200 snapshots quickly', async () => {
    await core.create({ name: 'many', diskBytes: 16 * 1024 * 1024, memoryMiB: 128 });
    const snaps = new SnapshotManager(core);
    // qemu-img by hand is much faster than 200 takes; reconciliation adopts them all in one list.
    const { execFileSync } = await import('node:child_process');
    const disk = path.join((await core.get('many')).bundle, 'disks', 'disk0.qcow2');
    for (let i = 0; i < 200; i++) execFileSync('qemu-img', ['snapshot', '-c', `s${String(i).padStart(3, '0')}`, disk]);
    const adopted = await snaps.list('many');
    expect(adopted.snapshots).toHaveLength(200);
    const t0 = performance.now();
    const again = await snaps.list('many');
    const ms = performance.now() - t0;
    expect(again.snapshots).toHaveLength(200);
    expect(again.notes).toEqual([]);
    expect(ms).toBeLessThan(2000);
  }, 120_000);
});
