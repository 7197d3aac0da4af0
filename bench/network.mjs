// Network throughput benchmark (issue 11): a TCP blast (busybox dd | nc in the test guest, BENCH_MIB MiB of
// zeros per transfer) in every setup, in the same run, rounds interleaved so a change in the machine's load
// hits every setup alike:
//   guest -> host
//     nat (passt)             to a listener on the host's own non-loopback address (what "internet" reaches),
//                             and pulled by the host through a forward (127.0.0.1:F -> guest)
//     nat-host (VMDesk)       to a listener on the host's loopback at 10.0.2.2, and through a forward
//                             (nat-host is QEMU's user network in VMDesk's command line)
//     plain QEMU -netdev user a qemu-system-x86_64 started here (no VMDesk) with the same kernel, initramfs and
//                             devices as VMDesk's VMs and -netdev user,hostfwd=...: to 10.0.2.2, and through
//                             its hostfwd (BENCH_PLAIN_DEVICES=minimal: NIC and serial port only)
//   guest <-> guest
//     internal:lab            two VMDesk VMs on the daemon's switch (unix sockets), one listens with nc -l
//     plain QEMU user x2      what plain user networking offers instead: guest A -> 10.0.2.2:F -> B's hostfwd
// Guests run under TCG here, so the absolute figures are low; the comparison within the run is the point.
// Seconds: a transfer the guest starts is timed by the guest's clock (/proc/uptime, 10 ms steps: dd starts ->
// nc exits, which is after the receiver has read everything and closed); one the host pulls through a
// forward by the host's clock (connected -> end of stream). Where the host receives a guest's blast, the
// host's own timing (first byte -> end) is printed too, as a check on the guest's clock.
// Everything runs from a copy of dist/ (others may rebuild the tree meanwhile) in a temporary home that is
// removed, with every VM and QEMU killed, whatever happens.
// Run with: npm run bench:network   (BENCH_MIB per transfer, default 64; BENCH_ROUNDS, default 3)
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const MIB = Number(process.env.BENCH_MIB ?? 64);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const PLAIN_DEVICES = process.env.BENCH_PLAIN_DEVICES === 'minimal' ? 'minimal' : 'vmdesk';
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const GUEST_PORT = 5001;
const READY = 'VMDESK-GUEST-READY';
// no_timer_check: under TCG on a loaded machine the kernel's IO-APIC timer check can fail and panic the boot
// ("IO-APIC + timer doesn't work"); every setup gets the same command line.
const CMDLINE = 'console=ttyS0 quiet no_timer_check';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * A copy of the compiled CLI and daemon (dist/main, bin, package.json; node_modules and native linked), taken
 * when dist/main matches its build stamp: a rebuild by someone else half-way through would otherwise change
 * the build under a running daemon. Returns the copy's bin/vmdesk.js.
 */
export async function snapshotApp(dir) {
  const app = path.join(dir, 'app');
  for (let attempt = 0; ; attempt++) {
    await rm(app, { recursive: true, force: true });
    mkdirSync(path.join(app, 'dist'), { recursive: true });
    cpSync(path.join(REPO, 'dist', 'main'), path.join(app, 'dist', 'main'), { recursive: true });
    cpSync(path.join(REPO, 'bin'), path.join(app, 'bin'), { recursive: true });
    copyFileSync(path.join(REPO, 'package.json'), path.join(app, 'package.json'));
    symlinkSync(path.join(REPO, 'node_modules'), path.join(app, 'node_modules'));
    symlinkSync(path.join(REPO, 'native'), path.join(app, 'native'));
    // The stamp is a hash of the compiled files (scripts/build-info.mjs), recomputed on the copy.
    const hash = createHash('sha256');
    const walk = (d, rel) => {
      for (const name of readdirSync(d).sort()) {
        const p = path.join(d, name);
        if (statSync(p).isDirectory()) walk(p, path.join(rel, name));
        else if (name.endsWith('.js')) hash.update(path.join(rel, name)).update(readFileSync(p));
      }
    };
    walk(path.join(app, 'dist', 'main'), path.join('dist', 'main'));
    const stamp = JSON.parse(readFileSync(path.join(app, 'dist', 'main', 'build-info.json'), 'utf8'));
    if (stamp.build === hash.digest('hex').slice(0, 16)) return path.join(app, 'bin', 'vmdesk.js');
    if (attempt >= 40) throw new Error('dist/main does not match its build stamp (a build is running?); run npm run build:main');
    await sleep(5000);
  }
}

/** The test guest's kernel and initramfs, copied (others may rebuild .cache/guest meanwhile). */
export async function snapshotGuest(dir) {
  const src = path.join(REPO, '.cache', 'guest');
  if (!existsSync(path.join(src, 'vmlinuz')) || !existsSync(path.join(src, 'initrd.cpio.gz'))) throw new Error('test guest not built: run npm run test:guest');
  for (let attempt = 0; ; attempt++) {
    const kernel = path.join(dir, 'guest-vmlinuz');
    const initrd = path.join(dir, 'guest-initrd.cpio.gz');
    copyFileSync(path.join(src, 'vmlinuz'), kernel);
    copyFileSync(path.join(src, 'initrd.cpio.gz'), initrd);
    const head = readFileSync(initrd).subarray(0, 2);
    if ((head[0] === 0x1f && head[1] === 0x8b) || attempt > 30) return { kernel, initrd };
    await sleep(2000);
  }
}

/** A serial console: `vmdesk console NAME` or a QEMU with -serial stdio. */
export class Console {
  out = '';
  consumed = 0;
  waiters = [];
  constructor(child) {
    this.child = child;
    const take = (d) => {
      this.out += d.toString('utf8');
      if (this.out.length > 1_000_000) {
        const cut = this.out.length - 200_000;
        this.out = this.out.slice(cut);
        this.consumed = Math.max(0, this.consumed - cut);
        for (const w of this.waiters) w.from = Math.max(0, w.from - cut);
      }
      this.check();
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
  }
  check() {
    this.waiters = this.waiters.filter((w) => {
      const re = new RegExp(w.re.source, 'g');
      re.lastIndex = w.from;
      const m = re.exec(this.out);
      if (!m) return true;
      this.consumed = re.lastIndex;
      w.resolve(m);
      return false;
    });
  }
  waitFor(re, timeoutMs) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${re}; console so far:\n${this.out.slice(-1500)}`)), timeoutMs);
      this.waiters.push({ re, from: this.consumed, resolve: (m) => (clearTimeout(t), resolve(m)) });
      this.check();
    });
  }
  /**
   * Runs a shell command in the guest; resolves with its output. Both markers are computed by the shell, so
   * the echoed command line (which the shell's line editor may redraw) never matches them.
   */
  async sh(cmd, timeoutMs = 300_000) {
    const tag = `T${Math.random().toString(36).slice(2, 8)}`;
    this.child.stdin.write(`echo ${tag}-$((40+1))-BEGIN; ${cmd} 2>&1; echo ${tag}-$((40+2))-END\n`);
    const m = await this.waitFor(new RegExp(`${tag}-41-BEGIN\\r?\\n([\\s\\S]*?)${tag}-42-END`), timeoutMs);
    return m[1] ?? '';
  }
  close() {
    this.child.stdin.end();
    if (this.child.exitCode === null) this.child.kill();
  }
}

export async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** The host's first non-loopback IPv4 address (what a nat guest reaches like any other address), if any. */
function hostAddress() {
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}

/** A one-connection sink on the host: resolves with the bytes and the host's timing of the stream. */
async function hostSink(address) {
  let done;
  const result = new Promise((r) => (done = r));
  const server = net.createServer((sock) => {
    let bytes = 0;
    let first = 0;
    sock.on('data', (d) => {
      if (!first) first = performance.now();
      bytes += d.length;
    });
    sock.on('end', () => {
      const end = performance.now();
      server.close();
      done({ bytes, hostSeconds: first ? (end - first) / 1000 : 0 });
    });
    sock.on('error', () => {});
  });
  await new Promise((r, j) => server.once('error', j).listen(0, address, r));
  return { port: server.address().port, result, close: () => server.close() };
}

/**
 * Pulls from 127.0.0.1:PORT (a forward to a guest sending with nc -l) until a connection brings data. It sends
 * one byte first (nc -l in the guest writes it to /dev/null): passt before 2023_10_04 (Debian 12's) ends a
 * forwarded connection's handshake only with data from the host's side, so a client that only reads would
 * leave the guest's socket in SYN_RECV (see PASST_FIXED_SINCE in main/engines/qemu/passt.ts). The timing
 * starts at the connection either way.
 */
export async function pullForward(port, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await new Promise((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      let bytes = 0;
      let t0 = 0;
      sock.on('connect', () => {
        t0 = performance.now();
        sock.write('\n');
      });
      sock.on('data', (d) => (bytes += d.length));
      sock.on('end', () => resolve({ bytes, seconds: (performance.now() - t0) / 1000 }));
      sock.on('error', () => resolve({ bytes, seconds: 0 }));
      sock.on('close', () => resolve({ bytes, seconds: (performance.now() - t0) / 1000 }));
    });
    if (r.bytes > 0) return r;
    if (Date.now() > deadline) throw new Error(`nothing came through the forward on port ${port}`);
    await sleep(300);
  }
}

const COUNT = MIB * 16; // 64 KiB blocks
const blastCmd = (host, port) =>
  `a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero bs=65536 count=${COUNT} 2>/dev/null | nc ${host} ${port}; b=$(cut -d' ' -f1 /proc/uptime); echo "BLAST $a $b"`;

function guestSeconds(out) {
  const m = /BLAST ([\d.]+) ([\d.]+)/.exec(out);
  if (!m) throw new Error(`the guest's blast printed no timing: ${out.slice(-500)}`);
  return Number(m[2]) - Number(m[1]);
}

/** Guest -> host listener (host address as the guest sees it, listener address on the host). */
async function toHost(con, guestSide, hostSide) {
  const sink = await hostSink(hostSide);
  try {
    const out = await con.sh(blastCmd(guestSide, sink.port));
    const seconds = guestSeconds(out);
    const r = await Promise.race([sink.result, sleep(10_000).then(() => ({ bytes: 0, hostSeconds: 0 }))]);
    return { bytes: r.bytes, seconds, hostSeconds: r.hostSeconds, clock: 'guest' };
  } finally {
    sink.close();
  }
}

const HEX_PORT = GUEST_PORT.toString(16).toUpperCase().padStart(4, '0');

/** Until the guest listens on GUEST_PORT (IPv4 or dual-stack IPv6): a connection that comes too early can leave nc -l stuck. */
async function listening(con) {
  for (let i = 0; i < 100; i++) {
    if (/^\s*[1-9]/m.test(await con.sh(`cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -cE ':${HEX_PORT} [0-9A-F]+:0000 0A'`))) return;
    await sleep(200);
  }
  throw new Error(`the guest does not listen on port ${GUEST_PORT}`);
}

/** Guest sends as the listener; the host pulls through the forward hostPort -> GUEST_PORT. */
async function throughForward(con, hostPort) {
  await con.sh(`(dd if=/dev/zero bs=65536 count=${COUNT} 2>/dev/null | nc -l -p ${GUEST_PORT}) >/dev/null 2>&1 &`);
  await listening(con);
  let r;
  try {
    r = await pullForward(hostPort);
  } catch (e) {
    // Recorded as a failed round (with what the guest saw), not the end of the benchmark.
    const tcp = await con.sh(`cat /proc/net/tcp /proc/net/tcp6 | grep -E ':${HEX_PORT} ' | grep -vE ' 0A ' | cut -c1-110; killall nc >/dev/null 2>&1; wait`);
    const synRecv = / 03 /.test(tcp);
    return { failed: `${e.message}${synRecv ? ' (the guest held the connection in SYN_RECV: its SYN-ACK was never answered)' : ''}` };
  }
  await con.sh('wait');
  return { bytes: r.bytes, seconds: r.seconds, clock: 'host' };
}

/** Guest A blasts to B (listening on GUEST_PORT) at address:port as A sees it; B counts what arrived. */
async function guestToGuest(a, b, address, port) {
  // wc writes once nc has ended (the sleep only keeps nc's stdin open: EOF there would end the connection).
  await b.sh(`rm -f /tmp/rx; (sleep 3600 | nc -l -p ${GUEST_PORT} | wc -c >/tmp/rx) >/dev/null 2>&1 &`);
  await listening(b);
  const out = await a.sh(blastCmd(address, port));
  const seconds = guestSeconds(out);
  let bytes = 0;
  for (let i = 0; i < 50; i++) {
    const m = /^\s*(\d+)\s*$/m.exec(await b.sh('cat /tmp/rx 2>/dev/null'));
    if (m) {
      bytes = Number(m[1]);
      break;
    }
    await sleep(200);
  }
  await b.sh('killall sleep >/dev/null 2>&1; true');
  return { bytes, seconds, clock: 'guest' };
}

async function main() {
  const load0 = os.loadavg();
  const work = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-bench-net-'));
  const home = path.join(work, 'home');
  mkdirSync(home);
  const consoles = [];
  const qemus = [];
  let bin;
  const vmdesk = (args) => run(process.execPath, [bin, '--home', home, ...args], { maxBuffer: 16 * 1024 * 1024 });
  const cleanup = async () => {
    for (const c of consoles) c.close();
    for (const q of qemus) if (q.exitCode === null) q.kill('SIGKILL');
    if (bin && existsSync(path.join(home, 'vms'))) {
      const list = await vmdesk(['list', '--json']).then((r) => JSON.parse(r.stdout), () => []);
      for (const v of list) await vmdesk(['kill', v.name]).catch(() => {});
      await vmdesk(['daemon', 'stop']).catch(() => {});
    }
    await rm(work, { recursive: true, force: true });
  };
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    console.error('interrupted: cleaning up');
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    bin = await snapshotApp(work);
    const { kernel, initrd } = await snapshotGuest(work);
    const qemu = (await run('sh', ['-c', 'command -v qemu-system-x86_64'])).stdout.trim();
    const hostAddr = hostAddress();

    // VMDesk VMs.
    const fwd = { nat: await freePort(), nathost: await freePort(), q1: await freePort(), q2: await freePort() };
    const base = (cmdline) => ['--memory', '128', '--cpus', '1', '--kernel', kernel, '--initrd', initrd, '--cmdline', `${CMDLINE} ${cmdline}`];
    const vms = {
      nat: [...base('vmdesk.eth0=dhcp'), '--net', 'nat', '--forward', `tcp:${fwd.nat}:${GUEST_PORT}`],
      nathost: [...base('vmdesk.eth0=dhcp'), '--net', 'nat-host', '--forward', `tcp:${fwd.nathost}:${GUEST_PORT}`],
      lab1: [...base('vmdesk.eth0=192.168.77.11/24'), '--net', 'internal:lab'],
      lab2: [...base('vmdesk.eth0=192.168.77.12/24'), '--net', 'internal:lab'],
    };
    const con = {};
    for (const [name, args] of Object.entries(vms)) {
      await vmdesk(['create', name, ...args]);
      const s = await vmdesk(['start', name]);
      if (/passt is not installed/.test(s.stderr)) throw new Error('passt is not installed: nat would be QEMU\'s user network (sudo apt install passt)');
      con[name] = new Console(spawn(process.execPath, [bin, '--home', home, 'console', name]));
      consoles.push(con[name]);
    }
    // Plain QEMU, user networking, the same guest; the console on its stdio.
    for (const name of ['q1', 'q2']) {
      const child = spawn(qemu, [
        '-nodefaults', '-no-user-config', '-name', `vmdesk-bench-${name}`, '-machine', 'q35', '-accel', 'tcg', '-smp', '1', '-m', '128M',
        '-kernel', kernel, '-initrd', initrd, '-append', `${CMDLINE} vmdesk.eth0=dhcp`,
        '-netdev', `user,id=net0,hostfwd=tcp:127.0.0.1:${fwd[name]}-:${GUEST_PORT}`, '-device', 'virtio-net-pci,netdev=net0',
        '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
        // The devices VMDesk gives every VM (display with VNC, USB tablet, guest-agent port, balloon), so only
        // the network differs; BENCH_PLAIN_DEVICES=minimal leaves them out.
        ...(PLAIN_DEVICES === 'minimal'
          ? []
          : ['-device', 'virtio-vga', '-vnc', `unix:${path.join(work, `${name}-vnc.sock`)}`, '-device', 'qemu-xhci,id=usb0', '-device', 'usb-tablet,bus=usb0.0',
             '-device', 'virtio-serial-pci', '-device', 'virtio-balloon-pci,free-page-reporting=on,deflate-on-oom=on']),
      ]);
      qemus.push(child);
      con[name] = new Console(child);
      consoles.push(con[name]);
    }
    const info = await vmdesk(['info', 'nat', '--json']).then((r) => JSON.parse(r.stdout));
    for (const name of Object.keys(con)) await con[name].waitFor(new RegExp(READY), 300_000);
    // The nat VM's QEMU command line shows the passt socket (-netdev stream), nat-host's the user network.
    const argv = (pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const netdevOf = (pid) => argv(pid)[argv(pid).indexOf('-netdev') + 1]?.split(',')[0];
    const nathostPid = (await vmdesk(['info', 'nathost', '--json']).then((r) => JSON.parse(r.stdout))).pid;
    console.log(`QEMU netdevs: nat -> ${netdevOf(info.pid)} (passt), nat-host -> ${netdevOf(nathostPid)}, plain -> user`);

    const setups = [
      hostAddr
        ? { group: 'guest -> host', name: 'nat (passt)', route: `to the host's ${hostAddr}`, fn: () => toHost(con.nat, hostAddr, hostAddr) }
        : { group: 'guest -> host', name: 'nat (passt)', route: 'to the host (no non-loopback address here: skipped)', fn: null },
      { group: 'guest -> host', name: 'nat (passt)', route: 'host pulls via forward', fn: () => throughForward(con.nat, fwd.nat) },
      { group: 'guest -> host', name: 'nat-host (VMDesk)', route: 'to 10.0.2.2 (host loopback)', fn: () => toHost(con.nathost, '10.0.2.2', '127.0.0.1') },
      { group: 'guest -> host', name: 'nat-host (VMDesk)', route: 'host pulls via forward', fn: () => throughForward(con.nathost, fwd.nathost) },
      { group: 'guest -> host', name: 'plain QEMU -netdev user', route: 'to 10.0.2.2 (host loopback)', fn: () => toHost(con.q1, '10.0.2.2', '127.0.0.1') },
      { group: 'guest -> host', name: 'plain QEMU -netdev user', route: 'host pulls via hostfwd', fn: () => throughForward(con.q1, fwd.q1) },
      { group: 'guest <-> guest', name: 'internal:lab (VMDesk switch)', route: '192.168.77.11 -> .12', fn: () => guestToGuest(con.lab1, con.lab2, '192.168.77.12', GUEST_PORT) },
      { group: 'guest <-> guest', name: 'plain QEMU -netdev user x2', route: "A -> 10.0.2.2:F -> B's hostfwd", fn: () => guestToGuest(con.q1, con.q2, '10.0.2.2', fwd.q2) },
    ];
    for (const s of setups) (s.results = []), (s.failures = []);
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of setups) {
        if (!s.fn) continue;
        const r = await s.fn();
        const want = COUNT * 65536;
        if (!r.failed && r.bytes !== want) r.failed = `${r.bytes} of ${want} bytes arrived (the sender finished without an error)`;
        if (r.failed) {
          s.failures.push(r.failed);
          process.stderr.write(`  round ${round + 1} ${s.name}, ${s.route}: FAILED: ${r.failed}\n`);
          continue;
        }
        if (!(r.seconds > 0)) throw new Error(`${s.name} ${s.route}: no time measured`);
        s.results.push(r);
        process.stderr.write(`  round ${round + 1} ${s.name}, ${s.route}: ${(r.bytes / 1048576 / r.seconds).toFixed(1)} MiB/s\n`);
      }
    }
    const load1 = os.loadavg();

    console.log(`\nTCP blast, ${MIB} MiB (${COUNT * 65536} bytes) per transfer, median of ${ROUNDS} rounds (guests: 1 vCPU, 128 MiB, TCG; virtio-net; plain QEMU with ${PLAIN_DEVICES === 'minimal' ? 'NIC and serial only' : "VMDesk's device set"}):`);
    const rows = [['', 'setup', 'route', 'bytes', 'seconds', 'MiB/s', 'clock', 'rounds MiB/s', 'host clock s']];
    for (const s of setups) {
      if (!s.fn) {
        rows.push([s.group, s.name, s.route, '-', '-', '-', '-', '-', '-']);
        continue;
      }
      if (!s.results.length) {
        rows.push([s.group, s.name, s.route, '-', '-', 'failed', '-', `${s.failures.length}/${ROUNDS} failed`, '']);
        continue;
      }
      const rates = s.results.map((r) => r.bytes / 1048576 / r.seconds);
      const mid = s.results[rates.indexOf(median(rates))];
      rows.push([
        s.group,
        s.name,
        s.route,
        String(mid.bytes),
        mid.seconds.toFixed(2),
        median(rates).toFixed(1),
        mid.clock,
        rates.map((x) => x.toFixed(1)).join(' ') + (s.failures.length ? ` (+${s.failures.length} failed)` : ''),
        mid.hostSeconds !== undefined ? mid.hostSeconds.toFixed(2) : '',
      ]);
    }
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    for (const r of rows) console.log('  ' + r.map((c, i) => (i >= 3 && i <= 5 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd());
    console.log(`\nseconds: "guest" = the sending guest's /proc/uptime (dd start -> nc exit); "host" = the host's clock (connect -> end of stream).`);
    console.log(`host clock s: where the host received a guest's blast, the host's own first-byte -> end timing of the same transfer.`);
    for (const s of setups) for (const f of new Set(s.failures)) console.log(`failed: ${s.name}, ${s.route}: ${f}`);
    console.log(`nat (passt) guests reach neither the host's loopback nor other VMs' forwards, so there is no nat guest <-> guest row.`);
    console.log(`load average (1/5/15 min) at start ${load0.map((x) => x.toFixed(2)).join(' ')}, at end ${load1.map((x) => x.toFixed(2)).join(' ')}; ${os.cpus().length} CPUs`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (!interrupted) await cleanup();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.stack : e);
    process.exitCode = 1;
  });
}
