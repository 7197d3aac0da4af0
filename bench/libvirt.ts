// libvirt engine benchmark (issue 15): list and start latency through VMDesk vs virsh on the same host, a
// private libvirtd on this machine (test/helpers/libvirtd.ts; root). Alternating rounds, medians:
//  - list: `vmdesk hosts domains` (CLI) and `hosts.domains` (one RPC on a warm connection, answered through the
//    daemon's open virsh session) vs `virsh list --all` (a new virsh each time, as a script would run it)
//  - start: `vmdesk start` and `vm.start` (one RPC) of the test guest until it is running, vs `virsh start` of
//    the same definition; each followed by a power-off
// Run with: npm run bench:libvirt   (needs root, libvirtd, and the test guest: npm run test:guest)
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { cpSync, mkdtempSync, symlinkSync } from 'node:fs';
import { libvirtdMissing, startLibvirtd } from '../test/helpers/libvirtd.js';

const run = promisify(execFile);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
// A private copy of the build (others rebuilding dist/ meanwhile would make the CLI and its daemon differ).
const frozen = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-bench-build-'));
for (const d of ['bin', 'dist/main', 'package.json']) cpSync(path.resolve(d), path.join(frozen, d), { recursive: true });
for (const d of ['node_modules', 'native']) symlinkSync(path.resolve(d), path.join(frozen, d));
const BIN = path.join(frozen, 'bin', 'vmdesk.js');
const { connectDaemon } = (await import(path.join(frozen, 'dist/main/client/daemon-client.js'))) as typeof import('../dist/main/client/daemon-client.js');
const guest = { kernel: path.resolve('.cache/guest/vmlinuz'), initrd: path.resolve('.cache/guest/initrd.cpio.gz') };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (x: number) => `${x.toFixed(0)} ms`;

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

const why = libvirtdMissing();
if (why) {
  console.log(`bench:libvirt skipped: ${why}`);
  process.exit(0);
}

const lv = await startLibvirtd();
const home = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-bench-lv-'));
const vmdesk = (...args: string[]) => run(process.execPath, [BIN, '--home', home, ...args]);
const virsh = (...args: string[]) => run('virsh', ['-c', lv.uri, ...args], { env: { ...process.env, LC_ALL: 'C' } });
try {
  await vmdesk('hosts', 'add', 'lab', lv.uri);
  const client = await connectDaemon(home);
  await client.call('vm.create', { name: 'bench', host: 'lab', memoryMiB: 128, cpus: 1, network: [{ mode: 'none', forwards: [] }], directKernel: { ...guest, cmdline: 'console=ttyS0 quiet' } });
  // The same definition under another name and id, for virsh to start on its own.
  const xml = (await virsh('dumpxml', 'bench')).stdout.replace(/<name>bench<\/name>/, '<name>bench-virsh</name>').replace(/<uuid>[^<]*<\/uuid>/, '');
  const file = path.join(home, 'bench-virsh.xml');
  await import('node:fs/promises').then((f) => f.writeFile(file, xml));
  await virsh('define', file);

  const list = { cli: [] as number[], rpc: [] as number[], virsh: [] as number[] };
  await client.call('hosts.domains', { name: 'lab' });
  for (let i = 0; i < ROUNDS * 2; i++) {
    list.cli.push(await timed(() => vmdesk('hosts', 'domains', 'lab', '--json')));
    list.rpc.push(await timed(() => client.call('hosts.domains', { name: 'lab' })));
    list.virsh.push(await timed(() => virsh('list', '--all')));
  }
  const start = { cli: [] as number[], rpc: [] as number[], virsh: [] as number[] };
  for (let i = 0; i < ROUNDS; i++) {
    start.cli.push(await timed(() => vmdesk('start', 'bench')));
    await client.call('vm.kill', { id: 'bench' });
    start.rpc.push(await timed(() => client.call('vm.start', { id: 'bench' })));
    await client.call('vm.kill', { id: 'bench' });
    start.virsh.push(await timed(() => virsh('start', 'bench-virsh')));
    await virsh('destroy', 'bench-virsh');
  }
  console.log(`libvirt engine vs virsh, same private libvirtd (TCG), median of ${ROUNDS * 2} list / ${ROUNDS} start rounds:`);
  console.log(`  list: vmdesk hosts domains ${ms(median(list.cli))}, hosts.domains RPC ${ms(median(list.rpc))}, virsh list --all ${ms(median(list.virsh))}`);
  console.log(`  start (until running): vmdesk start ${ms(median(start.cli))}, vm.start RPC ${ms(median(start.rpc))}, virsh start ${ms(median(start.virsh))}`);
  console.log(`  start overhead of the engine over virsh (RPC - virsh): ${ms(median(start.rpc) - median(start.virsh))}`);
  await client.call('vm.delete', { id: 'bench' });
  client.close();
  await vmdesk('daemon', 'stop');
} finally {
  await lv.stop();
  await rm(home, { recursive: true, force: true });
  await rm(frozen, { recursive: true, force: true });
}
