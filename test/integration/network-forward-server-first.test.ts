// A "nat" forward to a guest service that speaks first (busybox `nc -l` sending a banner, like SMTP, FTP, MySQL
// or VNC), with a host client that sends nothing and waits for it. passt before 2023_10_04 (Debian 12's
// 0.0~git20230309) never sends the ACK that ends such a connection's handshake until the host's program sends
// data, so the guest's socket stays in SYN_RECV and the banner never comes (see PASST_FIXED_SINCE in
// main/engines/qemu/passt.ts). VMDesk cannot change that path of passt; it must say so when the VM starts.
// So: the start warning is given exactly when the banner does not come. A fixed passt: no warning, banner.
// A client-speaks-first service (the guest's httpd) through the same passt works either way.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { copyFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { guestPaths, GUEST_HTTP_PORT, GUEST_HTTP_TEXT, GUEST_READY_MARKER } from '../guest/guest.js';
import { ConsoleSession, freePort, stopDaemon, tempHome, vmdesk } from '../helpers/cli.js';
import { passtPath } from '../../main/engines/qemu/passt.js';

const BANNER = 'vmdesk-banner-first';
const GUEST_PORT = 5001;

/** Connects to 127.0.0.1:port, optionally sends `send`, and collects what arrives within ms (or until close). */
function collect(port: number, ms: number, send?: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const done = () => (clearTimeout(t), s.destroy(), resolve(got));
    const t = setTimeout(done, ms);
    s.on('connect', () => send !== undefined && s.write(send));
    s.on('data', (d) => (got += d.toString('utf8')));
    s.on('close', done);
    s.on('error', done);
  });
}

describe.skipIf(process.platform !== 'linux' || !passtPath())('nat forward to a guest service that speaks first', () => {
  let home = '';
  let con: ConsoleSession | undefined;
  let started = false;

  beforeAll(async () => {
    home = await tempHome();
  });

  afterAll(async () => {
    await con?.close().catch(() => {});
    if (started) await vmdesk(home, ['kill', 'sf']).catch(() => {});
    await stopDaemon(home).catch(() => {});
    await rm(home, { recursive: true, force: true });
  });

  it('the banner reaches a host client that sends nothing, or the start warns that this passt cannot do it', async () => {
    // A private copy of the guest: other work in this tree may rebuild .cache/guest meanwhile.
    const kernel = path.join(home, 'guest-vmlinuz');
    const initrd = path.join(home, 'guest-initrd.cpio.gz');
    await copyFile(guestPaths().kernel, kernel);
    await copyFile(guestPaths().initrd, initrd);
    const bannerPort = await freePort();
    const httpPort = await freePort();
    const c = await vmdesk(home, ['create', 'sf', '--memory', '128', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0 quiet vmdesk.eth0=dhcp', '--net', 'nat', '--forward', `tcp:${bannerPort}:${GUEST_PORT}`, '--forward', `tcp:${httpPort}:${GUEST_HTTP_PORT}`]);
    expect(c.code, c.stderr).toBe(0);
    const s = await vmdesk(home, ['start', 'sf']);
    expect(s.code, s.stderr).toBe(0);
    started = true;
    const warned = /does not complete a forwarded TCP connection until the host's program sends data/.test(s.stderr);
    con = new ConsoleSession(home, 'sf');
    await con.waitFor(new RegExp(GUEST_READY_MARKER), 90_000);

    // The listener, started in the background; the shell prints the marker once it is in LISTEN (0A) in
    // /proc/net/tcp6 (busybox nc listens on :::PORT).
    const hex = GUEST_PORT.toString(16).toUpperCase().padStart(4, '0');
    con.send(`(echo ${BANNER} | nc -l -p ${GUEST_PORT}) >/dev/null 2>&1 & for i in $(seq 50); do grep -q ':${hex} [0-9A-F:]* 0A' /proc/net/tcp6 && break; sleep 0.1; done; echo LISTEN-$((3+4))\n`);
    await con.waitFor(/LISTEN-7/, 20_000);

    // The host's client sends nothing: what a client of a server-first protocol does.
    const banner = await collect(bannerPort, 8000);
    // Control: a client that speaks first (HTTP) through the same passt.
    const http = await collect(httpPort, 8000, 'GET / HTTP/1.0\r\n\r\n');
    expect(http).toContain(GUEST_HTTP_TEXT);

    expect({ banner: banner.trim(), warned }).toEqual(warned ? { banner: '', warned: true } : { banner: BANNER, warned: false });

    // A forward added while it runs says the same (the passt serving the card is replaced with all its forwards).
    const added = await vmdesk(home, ['forward', 'add', 'sf', `tcp:${await freePort()}:5002`]);
    expect(added.code, added.stderr).toBe(0);
    expect(/does not complete a forwarded TCP connection[^\n]*guest ports 5001, 5002/.test(added.stderr)).toBe(warned);
  }, 150_000);

  it('fails the start, and leaves nothing running, when passt quits at once', async () => {
    const home2 = await tempHome();
    // The daemon is started by the first call in this library, with this environment: a "passt" that exits 1.
    const env = { VMDESK_PASST: '/bin/false' };
    try {
      const kernel = path.join(home2, 'guest-vmlinuz');
      await copyFile(guestPaths().kernel, kernel);
      const c = await vmdesk(home2, ['create', 'dead', '--memory', '128', '--kernel', kernel, '--cmdline', 'console=ttyS0', '--net', 'nat', '--forward', `tcp:${await freePort()}:22`], { env });
      expect(c.code, c.stderr).toBe(0);
      const s = await vmdesk(home2, ['start', 'dead'], { env });
      expect(s.code).not.toBe(0);
      expect(s.stderr).toMatch(/passt for network adapter 0 exited \(code 1\) at start; see logs\/passt\.log/);
      const info = JSON.parse((await vmdesk(home2, ['info', 'dead', '--json'], { env })).stdout) as { state: string; pid?: number };
      expect(info.state).not.toMatch(/running|starting/);
      expect(info.pid).toBeUndefined();
    } finally {
      await stopDaemon(home2).catch(() => {});
      await rm(home2, { recursive: true, force: true });
    }
  }, 60_000);
});
