// Network modes with real guests, tested rather than assumed. Everything runs in a network namespace of its
// own (a veth pair that leads nowhere gives passt a default route), so "nothing reaches the host" is checked
// against services that really listen there, and no test can reach or disturb the machine's network:
//   nat       DHCP gives 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3; forwards reach the guest; the guest
//             reaches neither a service on the host's 127.0.0.1 nor another VM's forward.
//   nat-host  the same addresses, and the host's loopback at 10.0.2.2.
//   internal  VMs on internal:lab talk to each other; one on internal:other reaches neither; no host, no
//             internet; a link set down cuts a VM off; a daemon restart plugs running guests back in.
//   forwards  added and removed while the guest runs (passt and QEMU's user network), conflicts refused in
//             plain words (another program, another VM, VMDesk's own GUI server, privileged ports).
// The daemon runs inside the namespace (`vmdesk daemon run` there), so QEMU and passt do too; the CLI talks to
// it over its unix socket from outside, as a user's would.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFile, readFile, rm } from 'node:fs/promises';
import { readlinkSync, statSync } from 'node:fs';
import path from 'node:path';
import { guestPaths, GUEST_HTTP_PORT, GUEST_HTTP_TEXT, GUEST_READY_MARKER } from '../guest/guest.js';
import { BIN, ConsoleSession, stopDaemon, tempHome, vmdesk, vmdeskJson } from '../helpers/cli.js';
import { passtPath } from '../../main/engines/qemu/passt.js';

const NS = `vmdt-${process.pid}`;
const SECRET = 'host-loopback-secret';

/** Makes the namespace (loopback up, a veth pair to nowhere, a default route through it); the reason when it cannot. */
function makeNamespace(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces are Linux's (this is ${process.platform})`;
  if (!passtPath()) return 'passt is not installed, so nat has no isolation to test (sudo apt install passt)';
  const steps = [
    ['netns', 'add', NS],
    ['-n', NS, 'link', 'set', 'lo', 'up'],
    ['-n', NS, 'link', 'add', 'vd0', 'type', 'veth', 'peer', 'name', 'vd1'],
    ['-n', NS, 'addr', 'add', '10.199.0.1/24', 'dev', 'vd0'],
    ['-n', NS, 'link', 'set', 'vd0', 'up'],
    ['-n', NS, 'link', 'set', 'vd1', 'up'],
    ['-n', NS, 'route', 'add', 'default', 'via', '10.199.0.254', 'dev', 'vd0'],
  ];
  for (const s of steps) {
    const r = spawnSync('ip', s, { encoding: 'utf8' });
    if (r.status !== 0) {
      spawnSync('ip', ['netns', 'del', NS]);
      return `cannot create a network namespace (ip ${s.join(' ')}: ${(r.stderr || r.error?.message || 'failed').trim()}); run as root or with CAP_SYS_ADMIN`;
    }
  }
  return undefined;
}

const nsProblem = makeNamespace();
if (nsProblem) console.warn(`network isolation tests skipped: ${nsProblem}`);

/** A Node script run inside the namespace; resolves with its stdout. */
function inNs(script: string, args: string[] = [], timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', script, ...args]);
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('close', (code) => {
      clearTimeout(t);
      if (code === 0) resolve(out);
      else reject(new Error(`in namespace: exit ${code}: ${err}`));
    });
  });
}

/** GET http://127.0.0.1:PORT/ from inside the namespace (where forwards listen); '' when nothing answers. */
function hostGet(port: number): Promise<string> {
  return inNs(
    `fetch('http://127.0.0.1:' + process.argv[1] + '/', { signal: AbortSignal.timeout(4000) }).then(r => r.text()).then(t => process.stdout.write(t), () => process.stdout.write(''))`,
    [String(port)],
  );
}

async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** A private copy of the test guest (a gzip initramfs, checked), taken while no rebuild is half-way. */
export async function snapshotGuest(dir: string): Promise<{ kernel: string; initrd: string }> {
  for (let attempt = 0; ; attempt++) {
    const src = guestPaths();
    const kernel = path.join(dir, 'guest-vmlinuz');
    const initrd = path.join(dir, 'guest-initrd.cpio.gz');
    await copyFile(src.kernel, kernel);
    await copyFile(src.initrd, initrd);
    const head = (await readFile(initrd)).subarray(0, 2);
    if ((head[0] === 0x1f && head[1] === 0x8b) || attempt > 30) return { kernel, initrd };
    await new Promise((r) => setTimeout(r, 2000));
  }
}

/** Runs a shell command in the guest; resolves with its output (between two markers the shell computes). */
async function guest(con: ConsoleSession, cmd: string, timeoutMs = 40_000): Promise<string> {
  const tag = `T${Math.random().toString(36).slice(2, 8)}`;
  // Both markers are computed by the shell, so the echoed command line never matches them: that echo can be
  // split by the shell's banner (a command typed while the shell starts) or wrapped by its line editor.
  con.send(`echo ${tag}-$((20+1))-BEGIN; ${cmd} 2>&1; echo ${tag}-$((40+2))-END\n`);
  const m = await con.waitFor(new RegExp(`${tag}-21-BEGIN\\r?\\n([\\s\\S]*?)${tag}-42-END`), timeoutMs).catch((e: Error) => {
    throw new Error(`${e.message}\n(console process: ${con.child.exitCode === null ? 'running' : `exited ${con.child.exitCode}`})`);
  });
  return m[1] ?? '';
}

/** busybox nc fetching http://HOST:PORT/ in the guest (4 s to connect). */
const fetchCmd = (host: string, port: number) => `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 4 ${host} ${port} | head -c 300; echo`;

describe.skipIf(!!nsProblem)(`network isolation (in network namespace ${NS})`, () => {
  let home: string;
  let daemon: ChildProcess;
  let service: ChildProcess;
  const servicePort = 47001;
  // The guest's files are copied once: other work in this tree may rebuild .cache/guest while the tests run.
  let kernel = '';
  let initrd = '';
  const consoles: ConsoleSession[] = [];
  const started = new Set<string>();

  async function startDaemonInNs(): Promise<void> {
    // It must not exit when idle between tests: the next CLI call would start a daemon outside the namespace.
    daemon = spawn('ip', ['netns', 'exec', NS, process.execPath, BIN, '--home', home, 'daemon', 'run'], { stdio: 'ignore', env: { ...process.env, VMDESK_DAEMON_IDLE_MS: String(24 * 3600_000) } });
    // `daemon status` answers (exit 0, "daemon": false) before the daemon listens: wait for a daemon that runs
    // in the namespace. Going on earlier let the next CLI call start a daemon outside it, where the host's port
    // 47001 is free (the "host port is taken" case then failed).
    const nsInode = statSync(`/run/netns/${NS}`).ino;
    for (let i = 0; i < 200 && daemon.exitCode === null; i++) {
      const s = await vmdesk(home, ['daemon', 'status', '--json']);
      const pid = s.code === 0 ? (JSON.parse(s.stdout) as { pid?: number }).pid : undefined;
      if (pid) {
        const netns = readlinkSync(`/proc/${pid}/ns/net`);
        if (netns === `net:[${nsInode}]`) return;
        throw new Error(`a daemon outside namespace ${NS} serves the library (pid ${pid}, ${netns})`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('the daemon did not come up in the namespace');
  }

  async function vm(name: string, net: string[], cmdline: string, extra: string[] = []): Promise<ConsoleSession> {
    const args = ['create', name, '--memory', '128', '--kernel', kernel, '--initrd', initrd, '--cmdline', `console=ttyS0 quiet ${cmdline}`.trim(), ...net.flatMap((n) => ['--net', n]), ...extra];
    const c = await vmdesk(home, args);
    expect(c.code, c.stderr).toBe(0);
    const s = await vmdesk(home, ['start', name]);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stderr).not.toMatch(/passt is not installed/);
    started.add(name);
    const con = new ConsoleSession(home, name);
    consoles.push(con);
    await con.waitFor(new RegExp(GUEST_READY_MARKER), 90_000);
    return con;
  }

  async function kill(...names: string[]): Promise<void> {
    for (const n of names) {
      await vmdesk(home, ['kill', n]);
      started.delete(n);
    }
  }

  beforeAll(async () => {
    home = await tempHome();
    ({ kernel, initrd } = await snapshotGuest(home));
    await startDaemonInNs();
    // A service on the host's loopback (the namespace's): what a guest must not reach under nat.
    service = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', `require('http').createServer((q, s) => s.end('${SECRET}')).listen(${servicePort}, '127.0.0.1', () => console.log('up'))`]);
    await new Promise<void>((r) => service.stdout!.once('data', () => r()));
    expect(await hostGet(servicePort)).toBe(SECRET);
  });

  afterAll(async () => {
    for (const c of consoles) await c.close().catch(() => {});
    for (const n of started) await vmdesk(home, ['kill', n]).catch(() => {});
    await stopDaemon(home).catch(() => {});
    service?.kill();
    daemon?.kill();
    spawnSync('ip', ['netns', 'del', NS]);
    await rm(home, { recursive: true, force: true });
  });

  it('nat: DHCP gives QEMU\'s addresses; forwards reach the guest; it reaches no host service and no other VM\'s forward; forwards change while it runs', async () => {
    const fa = 47011;
    const fb = 47012;
    const conB = await vm('b', ['nat'], '', ['--forward', `tcp:${fb}:${GUEST_HTTP_PORT}`]);
    const conA = await vm('a', ['nat'], 'vmdesk.eth0=dhcp', ['--forward', `tcp:${fa}:${GUEST_HTTP_PORT}`]);
    void conB;
    // The lease the guest's DHCP client took (printed by its udhcpc script), and what it configured.
    const addr = await guest(conA, 'ip -4 addr show eth0; ip route; cat /etc/resolv.conf');
    expect(addr).toMatch(/inet 10\.0\.2\.15\/24/);
    expect(addr).toMatch(/default via 10\.0\.2\.2/);
    expect(addr).toMatch(/nameserver 10\.0\.2\.3/);
    expect(conA.output).toMatch(/eth0 dhcp 10\.0\.2\.15\/24 router 10\.0\.2\.2 dns 10\.0\.2\.3/);
    // Forwards reach both guests from the host.
    expect(await eventually(() => hostGet(fa), (t) => t.includes(GUEST_HTTP_TEXT), 30_000)).toContain(GUEST_HTTP_TEXT);
    expect(await eventually(() => hostGet(fb), (t) => t.includes(GUEST_HTTP_TEXT), 30_000)).toContain(GUEST_HTTP_TEXT);
    // A reaches neither the host's service nor B's forward (nor its own) through the gateway.
    expect(await guest(conA, fetchCmd('10.0.2.2', servicePort))).not.toContain(SECRET);
    expect(await guest(conA, fetchCmd('10.0.2.2', fb))).not.toContain(GUEST_HTTP_TEXT);
    expect(await guest(conA, fetchCmd('10.0.2.2', fa))).not.toContain(GUEST_HTTP_TEXT);
    // The host's address on the (dead-end) veth is not the way in either.
    expect(await guest(conA, fetchCmd('10.199.0.1', servicePort))).not.toContain(SECRET);

    // A forward added while A runs works at once (passt is replaced on QEMU's socket); one removed is gone.
    const fa2 = 47013;
    const add = await vmdesk(home, ['forward', 'add', 'a', `tcp:${fa2}:${GUEST_HTTP_PORT}`]);
    expect(add.code, add.stderr).toBe(0);
    expect(await eventually(() => hostGet(fa2), (t) => t.includes(GUEST_HTTP_TEXT), 10_000)).toContain(GUEST_HTTP_TEXT);
    expect(await hostGet(fa)).toContain(GUEST_HTTP_TEXT);
    const rm1 = await vmdesk(home, ['forward', 'remove', 'a', `tcp:${fa}`]);
    expect(rm1.code, rm1.stderr).toBe(0);
    expect(await hostGet(fa)).toBe('');
    expect(await hostGet(fa2)).toContain(GUEST_HTTP_TEXT);
    const listed = await vmdeskJson(home, ['forward', 'list', 'a']);
    expect(listed).toEqual([{ adapter: 0, protocol: 'tcp', hostPort: fa2, guestPort: GUEST_HTTP_PORT }]);
    expect((await vmdeskJson(home, ['info', 'a'])).config.network[0].forwards).toEqual([{ protocol: 'tcp', hostPort: fa2, guestPort: GUEST_HTTP_PORT }]);
    // The guest's own connections still work after the swap.
    expect(await guest(conA, 'ip -4 addr show eth0')).toMatch(/10\.0\.2\.15/);

    // Conflicts, each refused before anything changes, in plain words.
    const other = await vmdesk(home, ['forward', 'add', 'a', `tcp:${servicePort}:22`]);
    expect(other.code).toBe(5);
    expect(other.stderr).toMatch(new RegExp(`host port tcp:${servicePort} is already in use by another program`));
    const byVm = await vmdesk(home, ['forward', 'add', 'a', `tcp:${fb}:22`]);
    expect(byVm.code).toBe(5);
    expect(byVm.stderr).toMatch(new RegExp(`host port tcp:${fb} is already forwarded by VM "b", which is running`));
    const priv = await vmdesk(home, ['forward', 'add', 'a', 'tcp:80:8080']);
    expect(priv.code).toBe(13);
    expect(priv.stderr).toMatch(/host port 80 is privileged \(below 1024\)/);
    const twice = await vmdesk(home, ['forward', 'add', 'a', `tcp:${fa2}:22`]);
    expect(twice.code).toBe(4);
    expect(twice.stderr).toMatch(/already forwards host port tcp:47013/);
    const junk = await vmdesk(home, ['forward', 'add', 'a', 'tcp:1e3:22']);
    expect(junk.code).toBe(2);
    // VMDesk's own GUI server (vmdesk serve in the namespace) holds a port: named as such.
    const serve = spawn('ip', ['netns', 'exec', NS, process.execPath, BIN, '--home', home, 'serve', '--port', '47020']);
    try {
      await new Promise<void>((resolve, reject) => {
        serve.stdout!.on('data', (d: Buffer) => d.toString().includes('serving at') && resolve());
        serve.once('exit', (c) => reject(new Error(`vmdesk serve exited (${c})`)));
      });
      const gui = await vmdesk(home, ['forward', 'add', 'a', 'tcp:47020:8080']);
      expect(gui.code).toBe(5);
      expect(gui.stderr).toMatch(/host port tcp:47020 is VMDesk's own GUI server/);
    } finally {
      serve.kill('SIGTERM');
    }
    expect((await vmdeskJson(home, ['info', 'a'])).config.network[0].forwards).toHaveLength(1);
    await kill('a', 'b');
  }, 300_000);

  it('nat-host: the same addresses by DHCP, the host loopback at 10.0.2.2, forwards changed live through QEMU', async () => {
    const con = await vm('open', ['nat-host'], 'vmdesk.eth0=dhcp');
    const addr = await guest(con, 'ip -4 addr show eth0; ip route; cat /etc/resolv.conf');
    expect(addr).toMatch(/inet 10\.0\.2\.15\/24/);
    expect(addr).toMatch(/default via 10\.0\.2\.2/);
    expect(addr).toMatch(/nameserver 10\.0\.2\.3/);
    expect(await guest(con, fetchCmd('10.0.2.2', servicePort))).toContain(SECRET);
    const f = 47031;
    expect((await vmdesk(home, ['forward', 'add', 'open', `tcp:${f}:${GUEST_HTTP_PORT}`])).code).toBe(0);
    expect(await eventually(() => hostGet(f), (t) => t.includes(GUEST_HTTP_TEXT), 10_000)).toContain(GUEST_HTTP_TEXT);
    expect((await vmdesk(home, ['forward', 'remove', 'open', `tcp:${f}`])).code).toBe(0);
    expect(await hostGet(f)).toBe('');
    await kill('open');
  }, 180_000);

  it('internal: VMs on one network talk, another network does not reach them, nor do they reach the host; links and a daemon restart', async () => {
    const lab1 = await vm('lab1', ['internal:lab'], 'vmdesk.eth0=192.168.77.11/24');
    const lab2 = await vm('lab2', ['internal:lab'], 'vmdesk.eth0=192.168.77.12/24');
    const other = await vm('other', ['internal:other'], 'vmdesk.eth0=192.168.77.13/24');
    void lab2;
    expect(await guest(lab1, fetchCmd('192.168.77.12', GUEST_HTTP_PORT))).toContain(GUEST_HTTP_TEXT);
    expect(await guest(lab1, 'ping -c 2 -W 2 192.168.77.12')).toMatch(/2 packets received/);
    // Another network, same addresses plan: nothing gets across either way.
    expect(await guest(other, 'ping -c 2 -W 2 192.168.77.11')).toMatch(/0 packets received/);
    expect(await guest(other, fetchCmd('192.168.77.12', GUEST_HTTP_PORT))).not.toContain(GUEST_HTTP_TEXT);
    // No host, no internet: no route out, and an address on the host's side answers nothing.
    expect(await guest(lab1, 'ip route')).not.toMatch(/default/);
    expect(await guest(lab1, 'ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2; ' + fetchCmd('10.0.2.2', servicePort))).not.toContain(SECRET);
    // Every card has its own MAC address, the one in vm.json.
    const macs = await Promise.all(['lab1', 'lab2', 'other'].map(async (n) => (await vmdeskJson(home, ['info', n])).config.network[0].mac as string));
    expect(new Set(macs).size).toBe(3);
    expect(await guest(lab1, 'cat /sys/class/net/eth0/address')).toContain(macs[0]);
    // The switch counts what the guests sent and received.
    const stats = await vmdeskJson(home, ['stats', 'lab1']);
    expect(stats.netTxBytes).toBeGreaterThan(1000);
    expect(stats.netRxBytes).toBeGreaterThan(1000);
    // A cable pulled: lab1 cannot reach lab2 until it is plugged back in.
    const down = await vmdesk(home, ['link', 'lab2', 'eth0', 'down']);
    expect(down.code, down.stderr).toBe(0);
    expect((await vmdeskJson(home, ['info', 'lab2'])).linkDown).toEqual([0]);
    expect(await guest(lab1, 'ping -c 2 -W 2 192.168.77.12')).toMatch(/0 packets received/);
    expect((await vmdesk(home, ['link', 'lab2', 'eth0', 'up'])).code).toBe(0);
    expect(await guest(lab1, 'ping -c 3 -W 2 192.168.77.12')).toMatch(/[1-3] packets received/);
    expect((await vmdesk(home, ['link', 'lab2', 'eth1', 'up'])).stderr).toMatch(/has no network card 1/);
    // The daemon goes (guests keep running); the next one plugs their adapters back into the switch.
    expect((await vmdesk(home, ['daemon', 'stop'])).code).toBe(0);
    await new Promise<void>((r) => (daemon.exitCode !== null ? r() : daemon.once('exit', () => r())));
    await startDaemonInNs();
    // Consoles end with the daemon that served them: new ones on the new daemon.
    const lab1b = new ConsoleSession(home, 'lab1');
    const otherb = new ConsoleSession(home, 'other');
    consoles.push(lab1b, otherb);
    expect(await eventually(() => guest(lab1b, 'ping -c 2 -W 2 192.168.77.12'), (t) => /[12] packets received/.test(t), 20_000)).toMatch(/[12] packets received/);
    expect(await guest(otherb, 'ping -c 2 -W 2 192.168.77.11')).toMatch(/0 packets received/);
    await kill('lab1', 'lab2', 'other');
  }, 300_000);

  it('a forward whose host port is taken is refused before anything starts, in plain words', async () => {
    const r = await vmdesk(home, ['create', 'clash', '--memory', '128', '--kernel', kernel, '--initrd', initrd, '--forward', `tcp:${servicePort}:22`]);
    expect(r.code, r.stderr).toBe(0);
    const start = await vmdesk(home, ['start', 'clash']);
    expect(start.code, start.stderr).toBe(5);
    expect(start.stderr).toMatch(new RegExp(`host port ${servicePort} \\(forwarded to guest port 22\\) is already in use`));
    expect((await vmdeskJson(home, ['info', 'clash'])).state).toBe('stopped');
  });
});

// Shown in the report with the reason, where the namespace could not be made.
if (nsProblem) it.skip(`network isolation tests: ${nsProblem}`, () => {});
