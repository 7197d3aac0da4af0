// Issue 11 without a guest: what the CLI accepts for networks and limits (hostile input included), the
// schema's rules for adapters, MAC addresses, forward checks (privileged, another VM, the GUI server, another
// program), limits merged and checked against capabilities, CPU caps on a fake cgroup tree (v1, delegated
// v2, neither), usage rates, and the stats feed's subscriptions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { NetAdapter, ResourceLimitsPatch, VmConfig } from '../../main/api/schema.js';
import { formatCpuList, parseCpuList } from '../../main/api/values.js';
import { limitsFrom, networkFrom, parseForward, parseNet, adapterIndex } from '../../main/cli/resources.js';
import { checkForwardConflicts, checkForwards, randomMac, withMacs } from '../../main/core/network.js';
import { checkLimits, kindsChanged, mergeLimits } from '../../main/core/limits.js';
import { CpuCapController, parseMountInfo, quotaFor } from '../../main/platform/cpu-limits.js';
import { UsageSampler } from '../../main/core/stats.js';
import { StatsFeed, type StatsSink } from '../../main/daemon/stats-feed.js';
import type { EngineModule, VmRuntime } from '../../main/engines/engine.js';
import type { VmEvent } from '../../main/api/events.js';
import { recordGuiServer } from '../../main/platform/gui-servers.js';
import { guiServerPorts } from '../../main/core/network.js';

const now = '2026-01-01T00:00:00.000Z';
function config(extra: Record<string, unknown> = {}): VmConfig {
  return VmConfig.parse({ schemaVersion: 1, id: '0b6e2d4e-6a1f-4d8e-9a51-3f1c2b7d9e10', name: 'vm', cpus: 2, memoryMiB: 512, createdAt: now, modifiedAt: now, ...extra });
}

describe('CLI: --net, --forward and limits', () => {
  it('parses every mode, with model and MAC', () => {
    expect(parseNet('nat')).toEqual({ mode: 'nat', forwards: [] });
    expect(parseNet('nat-host,model=e1000')).toEqual({ mode: 'nat-host', forwards: [], model: 'e1000' });
    expect(parseNet('internal:lab-1.a,mac=52:54:00:AA:bb:01')).toEqual({ mode: 'internal', network: 'lab-1.a', forwards: [], mac: '52:54:00:aa:bb:01' });
    expect(parseNet('none')).toEqual({ mode: 'none', forwards: [] });
  });

  it.each([
    ['bridge', /must be nat, nat-host, internal:NAME or none/],
    ['internal', /needs a network name/],
    ['internal:', /internal network's name/],
    ['internal:../etc', /internal network's name/],
    ['internal:a b', /internal network's name/],
    [`internal:${'x'.repeat(33)}`, /internal network's name/],
    ['internal:lab\u001b[31m', /internal network's name/],
    ['nat,model=ne2k', /model must be one of/],
    ['nat,mac=01:00:5e:00:00:01', /multicast/],
    ['nat,mac=52:54:00:zz:00:01', /MAC address looks like/],
    ['nat,model', /options are model=MODEL and mac=MAC/],
    ['nat,vlan=3', /unknown option/],
    ['none,model=e1000', /takes no options/],
    ['nat,' + 'model=e1000,'.repeat(40), /too long/],
  ])('refuses --net %j', (spec, re) => {
    expect(() => parseNet(spec)).toThrow(re);
  });

  it.each(['tcp:80', 'tcp:0:22', 'tcp:70000:22', 'sctp:2222:22', 'tcp:2222:22:1', ' tcp:2222:22', 'tcp:-1:22', 'tcp:2222:22\n'])('refuses --forward %j', (spec) => {
    expect(() => parseForward(spec)).toThrow(/--forward/);
  });

  it('puts forwards on the first nat card, keeps the cards on set when only --forward is given', () => {
    expect(networkFrom({ net: ['internal:lab', 'nat-host'], forward: ['tcp:2222:22'] })).toEqual([
      { mode: 'internal', network: 'lab', forwards: [] },
      { mode: 'nat-host', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }] },
    ]);
    const cur: NetAdapter[] = [{ mode: 'internal', network: 'x', forwards: [], mac: '52:54:00:00:00:01' }, { mode: 'nat', forwards: [], mac: '52:54:00:00:00:02' }];
    expect(networkFrom({ forward: ['udp:5353:53'] }, cur)).toEqual([cur[0], { ...cur[1], forwards: [{ protocol: 'udp', hostPort: 5353, guestPort: 53 }] }]);
    expect(() => networkFrom({ net: ['internal:lab'], forward: ['tcp:2222:22'] })).toThrow(/needs a nat or nat-host adapter/);
    expect(() => networkFrom({ net: ['nat', 'nat', 'nat', 'nat', 'nat'] })).toThrow(/at most 4/);
    expect(networkFrom({})).toBeUndefined();
  });

  it('reads limits, none clears them on set only, and refuses nonsense', () => {
    expect(limitsFrom({ 'cpu-cap': '50%', 'cpu-pin': '3,0-1', 'memory-target': '1G', 'disk-iops': '500', 'disk-bps': '20M/s' }, true)).toEqual({
      cpuCapPercent: 50,
      cpuPinning: [0, 1, 3],
      memoryTargetMiB: 1024,
      diskIops: 500,
      diskBytesPerSec: 20 * 1024 * 1024,
    });
    expect(limitsFrom({ 'memory-target': '256' }, true)).toEqual({ memoryTargetMiB: 256 });
    expect(limitsFrom({ 'cpu-cap': 'none', 'disk-bps': 'off' }, false)).toEqual({ cpuCapPercent: null, diskBytesPerSec: null });
    expect(() => limitsFrom({ 'cpu-cap': 'none' }, true)).toThrow(/no limit to clear/);
    expect(() => limitsFrom({ 'cpu-cap': '0' }, true)).toThrow(/1-100/);
    expect(() => limitsFrom({ 'cpu-cap': '150' }, true)).toThrow(/1-100/);
    expect(() => limitsFrom({ 'cpu-cap': '1e3' }, true)).toThrow(/whole number/);
    expect(() => limitsFrom({ 'cpu-pin': '0-99999' }, true)).toThrow(/largest CPU/);
    expect(() => limitsFrom({ 'cpu-pin': '3-1' }, true)).toThrow(/smaller/);
    expect(() => limitsFrom({ 'cpu-pin': '0;rm -rf /' }, true)).toThrow(/invalid CPU list/);
    expect(() => limitsFrom({ 'disk-iops': '-5' }, true)).toThrow(/whole number/);
    expect(() => limitsFrom({ 'memory-target': 'lots' }, true)).toThrow(/--memory-target/);
    expect(limitsFrom({}, false)).toBeUndefined();
    // What the CLI sends, the contract takes.
    expect(ResourceLimitsPatch.safeParse(limitsFrom({ 'cpu-cap': 'none', 'cpu-pin': '1' }, false)).success).toBe(true);
  });

  it('CPU lists and adapter names', () => {
    expect(parseCpuList('0-2,5,5,4')).toEqual([0, 1, 2, 4, 5]);
    expect(formatCpuList([5, 0, 1, 2, 4])).toBe('0-2,4-5');
    expect(() => parseCpuList('1'.repeat(2000))).toThrow();
    expect(adapterIndex('eth1')).toBe(1);
    expect(adapterIndex('nic0')).toBe(0);
    expect(adapterIndex('3')).toBe(3);
    for (const bad of ['eth4', 'eth-1', 'wlan0', '']) expect(() => adapterIndex(bad)).toThrow(/eth0-eth3/);
  });
});

describe('schema: adapters', () => {
  it('an internal adapter names its network and only it does; forwards need NAT', () => {
    expect(NetAdapter.safeParse({ mode: 'internal', forwards: [] }).success).toBe(false);
    expect(NetAdapter.safeParse({ mode: 'nat', network: 'lab', forwards: [] }).success).toBe(false);
    expect(NetAdapter.safeParse({ mode: 'internal', network: 'lab', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }] }).success).toBe(false);
    expect(NetAdapter.safeParse({ mode: 'internal', network: 'a/b', forwards: [] }).success).toBe(false);
    expect(NetAdapter.safeParse({ mode: 'nat', mac: '03:00:00:00:00:01', forwards: [] }).success).toBe(false);
    expect(NetAdapter.safeParse({ mode: 'internal', network: 'lab', forwards: [] }).success).toBe(true);
  });
});

describe('MAC addresses', () => {
  it('are in QEMU range, fill only missing ones, keep a card’s by position, avoid those taken', () => {
    const m = randomMac();
    expect(m).toMatch(/^52:54:00:([0-9a-f]{2}:){2}[0-9a-f]{2}$/);
    const prev: NetAdapter[] = [{ mode: 'nat', forwards: [], mac: '52:54:00:00:00:01' }];
    const out = withMacs([{ mode: 'nat', forwards: [] }, { mode: 'internal', network: 'lab', forwards: [] }, { mode: 'none', forwards: [], mac: '52:54:00:00:00:09' }], new Set(['52:54:00:00:00:02']), prev);
    expect(out[0]!.mac).toBe('52:54:00:00:00:01');
    expect(out[1]!.mac).toMatch(/^52:54:00:/);
    expect(out[1]!.mac).not.toBe(out[0]!.mac);
    expect(out[2]!.mac).toBeUndefined();
    // Reordered: the card that moved keeps its MAC, the one now in its old place gets a new one, not the same.
    const before = [{ mode: 'nat' as const, forwards: [], mac: '52:54:00:00:00:0a' }, { mode: 'nat' as const, forwards: [], mac: '52:54:00:00:00:0b' }];
    const swapped = withMacs([{ mode: 'internal', network: 'lab', forwards: [] }, { mode: 'nat', forwards: [], mac: '52:54:00:00:00:0a' }], new Set(), before);
    expect(swapped[1]!.mac).toBe('52:54:00:00:00:0a');
    expect(swapped[0]!.mac).toMatch(/^52:54:00:/);
    expect(swapped[0]!.mac).not.toBe('52:54:00:00:00:0a');
    const many = new Set<string>();
    for (let i = 0; i < 2000; i++) many.add(randomMac(many));
    expect(many.size).toBe(2000);
  });
});

describe('forwards', () => {
  let busy: Server;
  let busyPort = 0;
  let tmp: string;
  beforeAll(async () => {
    busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    busyPort = (busy.address() as { port: number }).port;
    tmp = mkdtempSync(path.join(os.tmpdir(), 'vmd-fwd-'));
  });
  afterAll(() => {
    busy.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('within one VM: no privileged port, no port twice, only on NAT cards', () => {
    expect(() => checkForwards([{ mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 80, guestPort: 80 }] }])).toThrow(/privileged \(below 1024\)/);
    expect(() =>
      checkForwards([
        { mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }] },
        { mode: 'nat-host', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 23 }] },
      ]),
    ).toThrow(/forwarded twice/);
    expect(() => checkForwards([{ mode: 'internal', network: 'x', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }] }])).toThrow(/need a nat or nat-host/);
    // tcp and udp of one number are two ports.
    checkForwards([{ mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 5353, guestPort: 53 }, { protocol: 'udp', hostPort: 5353, guestPort: 53 }] }]);
  });

  it('names who holds a port: a running VM, the GUI server, another program; warns of stopped VMs', async () => {
    const owners = { runningVms: new Map([['tcp:3000', 'web']]), stoppedVms: new Map([['tcp:3001', ['db', 'cache']]]), guiPorts: [{ port: 3002, pid: 42 }] };
    await expect(checkForwardConflicts('me', [{ protocol: 'tcp', hostPort: 3000, guestPort: 80 }], owners, false)).rejects.toThrow(/already forwarded by VM "web", which is running/);
    await expect(checkForwardConflicts('me', [{ protocol: 'tcp', hostPort: 3002, guestPort: 80 }], owners, false)).rejects.toThrow(/VMDesk's own GUI server \(pid 42\)/);
    await expect(checkForwardConflicts('me', [{ protocol: 'tcp', hostPort: busyPort, guestPort: 80 }], owners, true)).rejects.toThrow(/in use by another program/);
    await expect(checkForwardConflicts('me', [{ protocol: 'tcp', hostPort: 443, guestPort: 80 }], owners, true)).rejects.toThrow(/privileged/);
    const warnings = await checkForwardConflicts('me', [{ protocol: 'tcp', hostPort: 3001, guestPort: 80 }], owners, false);
    expect(warnings).toEqual(['host port tcp:3001 is also forwarded by "db", "cache": they cannot run at the same time as "me"']);
  });

  it('GUI servers are found by their records while they run', () => {
    const root = path.join(tmp, 'rt');
    const remove = recordGuiServer(root, 45678);
    expect(guiServerPorts(root)).toEqual([{ port: 45678, pid: process.pid }]);
    // A record of a process that is gone is swept.
    writeFileSync(path.join(root, 'gui', '999999-1.json'), JSON.stringify({ pid: 999999, startTime: 'x', port: 1 }));
    writeFileSync(path.join(root, 'gui', '1-2.json'), 'not json');
    expect(guiServerPorts(root)).toEqual([{ port: 45678, pid: process.pid }]);
    remove();
    expect(guiServerPorts(root)).toEqual([]);
  });
});

describe('limits', () => {
  const engine = (limits?: EngineModule['capabilities']['limits']) => ({ kind: 'test', capabilities: { limits } }) as unknown as EngineModule;

  it('merge: values set, null clears, absent keeps', () => {
    expect(mergeLimits({ cpuCapPercent: 50, diskIops: 100 }, { cpuCapPercent: null, cpuPinning: [3, 1, 1] })).toEqual({ diskIops: 100, cpuPinning: [1, 3] });
    expect(mergeLimits({ diskIops: 100 }, { diskIops: null })).toBeUndefined();
    expect(kindsChanged({ diskIops: 1 }, { diskIops: 1, diskBytesPerSec: 1 << 20, memoryTargetMiB: 64 }).sort()).toEqual(['diskIo', 'memoryTarget']);
  });

  it('are refused by capability, not by engine name, and must fit the VM', () => {
    const none = engine(undefined);
    expect(() => checkLimits(config({ limits: { memoryTargetMiB: 256 } }), none)).toThrow(/the test engine cannot apply a memory target/);
    const procOnly = engine({ cpuCap: true, cpuPinning: true, memoryTarget: false, diskIo: false, live: ['cpuCap'] });
    expect(() => checkLimits(config({ limits: { diskIops: 100 } }), procOnly)).toThrow(/cannot apply disk I\/O limits/);
    const all = engine({ cpuCap: true, cpuPinning: true, memoryTarget: true, diskIo: true, live: [] });
    expect(() => checkLimits(config({ limits: { memoryTargetMiB: 1024 } }), all)).toThrow(/more than the VM's memory/);
    expect(() => checkLimits(config({ limits: { cpuPinning: [4000] } }), all)).toThrow(/not available here/);
  });
});

describe('CPU caps on a cgroup tree', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'vmd-cg-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  function tree(name: string, mountinfo: string, cgroup: string, files: Record<string, string>): string {
    const r = path.join(root, name);
    mkdirSync(path.join(r, 'proc/self'), { recursive: true });
    writeFileSync(path.join(r, 'proc/self/mountinfo'), mountinfo);
    writeFileSync(path.join(r, 'proc/self/cgroup'), cgroup);
    for (const [f, content] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(r, f)), { recursive: true });
      writeFileSync(path.join(r, f), content);
    }
    return r;
  }

  it('quota is the percentage of each vCPU over one period', () => {
    expect(quotaFor(50, 2)).toBe(100_000);
    expect(quotaFor(20, 1)).toBe(20_000);
    expect(quotaFor(1, 1)).toBe(1000);
  });

  it('parses mountinfo with escaped paths', () => {
    const m = parseMountInfo('30 25 0:26 / /sys/fs/cgroup/cpu\\040x rw - cgroup cgroup rw,cpu\n');
    expect(m).toEqual([{ root: '/', mountPoint: '/sys/fs/cgroup/cpu x', fsType: 'cgroup', superOptions: ['rw', 'cpu'] }]);
  });

  it('v1: a group per VM under ours, quota and period written, the process moved, the group removed after', () => {
    const r = tree('v1', '30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n', '4:cpu,cpuacct:/user.slice\n0::/\n', {
      'sys/fs/cgroup/cpu,cpuacct/user.slice/cpu.cfs_quota_us': '-1',
    });
    const c = new CpuCapController(r);
    expect(c.support).toMatchObject({ available: true, mechanism: expect.stringContaining('cgroup v1') });
    c.apply('vm-1', 1234, { percent: 25, cpus: 2 });
    const g = path.join(r, 'sys/fs/cgroup/cpu,cpuacct/user.slice/vmdesk/vm-1');
    expect(readFileSync(path.join(g, 'cpu.cfs_quota_us'), 'utf8')).toBe('50000');
    expect(readFileSync(path.join(g, 'cgroup.procs'), 'utf8')).toBe('1234');
    expect(c.read('vm-1')).toEqual({ quotaUs: 50000, periodUs: 100000 });
    c.apply('vm-1', 1234, null);
    expect(c.read('vm-1')).toEqual({ quotaUs: null, periodUs: 100000 });
    expect(() => c.apply('../../etc', 1, null)).toThrow(/invalid cgroup key/);
  });

  it('v2 delegated: our processes move to a leaf, +cpu is enabled, cpu.max written', () => {
    const r = tree('v2', '30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n', '0::/user.slice/app.slice/vmdesk.service\n', {
      'sys/fs/cgroup/user.slice/app.slice/vmdesk.service/cgroup.controllers': 'cpu memory pids\n',
      'sys/fs/cgroup/user.slice/app.slice/vmdesk.service/cgroup.subtree_control': '\n',
      'sys/fs/cgroup/user.slice/app.slice/vmdesk.service/cgroup.procs': '777\n',
    });
    const c = new CpuCapController(r);
    expect(c.support).toMatchObject({ available: true, mechanism: expect.stringContaining('cgroup v2') });
    c.apply('vm-2', 4321, { percent: 50, cpus: 1 });
    const d = path.join(r, 'sys/fs/cgroup/user.slice/app.slice/vmdesk.service');
    expect(readFileSync(path.join(d, 'vmdesk-daemon/cgroup.procs'), 'utf8')).toBe('777');
    expect(readFileSync(path.join(d, 'cgroup.subtree_control'), 'utf8')).toBe('+cpu');
    expect(readFileSync(path.join(d, 'vmdesk-vm-2/cpu.max'), 'utf8')).toBe('50000 100000');
    expect(readFileSync(path.join(d, 'vmdesk-vm-2/cgroup.procs'), 'utf8')).toBe('4321');
  });

  it('neither: says which it looked for, and refuses plainly', () => {
    const r = tree('none', '30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n', '0::/user.slice/session-1.scope\n', {
      'sys/fs/cgroup/user.slice/session-1.scope/cgroup.controllers': 'memory pids\n',
    });
    const c = new CpuCapController(r);
    expect(c.support.available).toBe(false);
    expect(c.support.reason).toMatch(/cpu controller is not available in VMDesk's cgroup \/user.slice\/session-1.scope/);
    expect(() => c.apply('vm', 1, { percent: 10, cpus: 1 })).toThrow(/CPU caps are not available on this host/);
  });
});

describe('usage samples', () => {
  it('cumulative counters, rates against the previous sample, notes for what is unknown', async () => {
    let disk = { readBytes: 1000, writeBytes: 0, readOps: 1, writeOps: 0 };
    const rt = { pid: process.pid, usage: async () => ({ disk, memoryGuestBytes: 100, notes: [] }) } as unknown as VmRuntime;
    const s = new UsageSampler();
    const cfg = config({ network: [{ mode: 'nat', forwards: [] }, { mode: 'internal', network: 'lab', forwards: [] }] });
    const first = await s.sample('vm', rt, cfg, { rxBytes: 10, txBytes: 20, rxFrames: 1, txFrames: 1, dropped: 0 });
    expect(first.intervalMs).toBeNull();
    expect(first.cpuPercent).toBeNull();
    expect(first.memoryRssBytes).toBeGreaterThan(0);
    expect(first.notes.join(' ')).toMatch(/network counters cover internal networks only/);
    await new Promise((r) => setTimeout(r, 200));
    disk = { readBytes: 3000, writeBytes: 0, readOps: 3, writeOps: 0 };
    const second = await s.sample('vm', rt, cfg, { rxBytes: 110, txBytes: 20, rxFrames: 2, txFrames: 1, dropped: 0 });
    expect(second.intervalMs).toBeGreaterThanOrEqual(190);
    expect(second.cpuPercent).not.toBeNull();
    // 2,000 bytes over the interval the sample reports (a loaded machine may stretch the 200 ms asked for).
    expect(Math.abs((second.rates.diskReadBytesPerSec! * second.intervalMs!) / 1000 - 2000)).toBeLessThan(10);
    expect(second.netRxBytes).toBe(110);
    expect(second.rates.netTxBytesPerSec).toBe(0);
    // A counter that went backwards (a new guest process) gives no rate.
    disk = { readBytes: 0, writeBytes: 0, readOps: 0, writeOps: 0 };
    expect((await s.sample('vm', rt, cfg, undefined)).rates.diskReadBytesPerSec).toBeNull();
  });
});

describe('stats feed', () => {
  it('sends samples once a second to subscribers only, skips one that is behind, stops when none is left', async () => {
    const rt = { pid: process.pid, usage: async () => ({ notes: [] }) } as unknown as VmRuntime;
    const vm = { id: 'vm-1', name: 'one', state: 'running', config: config() };
    const fakeCore = {
      list: async () => [vm],
      get: async (ref: string) => {
        if (ref !== 'one' && ref !== 'vm-1') throw new Error(`no VM named "${ref}"`);
        return vm;
      },
      runtime: () => rt,
      usage: new UsageSampler(),
      fabric: { counters: () => undefined },
    };
    const feed = new StatsFeed(fakeCore as never, 100);
    const sink = (behind = 0) => {
      const got: VmEvent[] = [];
      return { got, pushEvent: (e: VmEvent) => got.push(e), usage: () => ({ bufferedBytes: behind }) } satisfies StatsSink & { got: VmEvent[] };
    };
    const a = sink();
    const b = sink();
    const slow = sink(10 * 1024 * 1024);
    expect(await feed.clientOf(() => a).subscribe(['one'])).toEqual({ all: false, ids: ['vm-1'] });
    await feed.clientOf(() => slow).subscribe(undefined);
    await expect(feed.clientOf(() => b).subscribe(['nope'])).rejects.toThrow(/no VM named/);
    // Three ticks of 100 ms, however late a loaded machine runs the timers.
    await expect.poll(() => a.got.length, { timeout: 10_000 }).toBeGreaterThanOrEqual(3);
    expect(a.got.every((e) => e.type === 'vm-stats' && e.id === 'vm-1')).toBe(true);
    expect(b.got).toHaveLength(0);
    expect(slow.got).toHaveLength(0);
    expect(feed.counters.skipped).toBeGreaterThan(0);
    expect(await feed.clientOf(() => a).unsubscribe(['one'])).toEqual({ all: false, ids: [] });
    feed.drop(slow);
    expect(feed.subscribers).toBe(0);
    const n = a.got.length;
    await new Promise((r) => setTimeout(r, 250));
    expect(a.got.length).toBe(n);
    feed.close();
  });
});
