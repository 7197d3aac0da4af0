// NAT isolation with a real guest: under "nat" the guest reaches neither the host's loopback services nor
// forwarded ports (its own or another VM's) through 10.0.2.2, while forwards still reach the guest from the
// host; "nat-host" is VirtualBox's NAT, where the host's loopback is at 10.0.2.2. Busy ports are refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm } from 'node:fs/promises';
import { guestPaths, GUEST_HTTP_PORT, GUEST_HTTP_TEXT, GUEST_READY_MARKER } from '../guest/guest.js';
import { ConsoleSession, freePort, stopDaemon, tempHome, vmdesk, vmdeskJson } from '../helpers/cli.js';
import { spawnSync } from 'node:child_process';
import { passtPath } from '../../main/engines/qemu/passt.js';

/**
 * network-modes.test.ts proves all of this (and more) inside a network namespace; this file is for machines
 * where no namespace can be made, and stands aside where one can (CI time).
 */
function namespacesWork(): boolean {
  if (process.platform !== 'linux') return false;
  const ns = `vmdt-probe-${process.pid}`;
  const ok = spawnSync('ip', ['netns', 'add', ns]).status === 0;
  if (ok) spawnSync('ip', ['netns', 'del', ns]);
  return ok;
}

function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

async function retry<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** Asks the guest to fetch http://10.0.2.2:PORT/ with busybox nc; resolves with what came back. */
async function fetchFromGuest(con: ConsoleSession, port: number, tag: string): Promise<string> {
  // Both markers are computed by the shell, so the echoed command line (which the shell's banner can split or
  // its line editor wrap) never matches them.
  con.send(`echo ${tag}-$((20+1))-BEGIN; printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 4 10.0.2.2 ${port} 2>&1 | head -c 200; echo; echo ${tag}-$((40+2))-END\n`);
  const m = await con.waitFor(new RegExp(`${tag}-21-BEGIN\\r?\\n([\\s\\S]*?)${tag}-42-END`), 30_000);
  return m[1] ?? '';
}

describe.runIf(passtPath() && !namespacesWork())('network isolation (where network-modes.test.ts cannot make a namespace)', () => {
  let home: string;
  let hostService: http.Server;
  let servicePort: number;
  const { kernel, initrd } = guestPaths();

  beforeAll(async () => {
    home = await tempHome();
    hostService = http.createServer((_req, res) => res.end('host-loopback-secret'));
    await new Promise<void>((r) => hostService.listen(0, '127.0.0.1', r));
    servicePort = (hostService.address() as AddressInfo).port;
  });

  afterAll(async () => {
    for (const vm of ['iso', 'open']) await vmdesk(home, ['kill', vm]).catch(() => {});
    await stopDaemon(home);
    hostService.close();
    await rm(home, { recursive: true, force: true });
  });

  it('nat: forwards reach the guest, but the guest reaches no host loopback service and no forward', async () => {
    const fwd = await freePort();
    await vmdeskJson(home, ['create', 'iso', '--memory', '256', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0 quiet', '--forward', `tcp:${fwd}:${GUEST_HTTP_PORT}`]);
    const start = await vmdesk(home, ['start', 'iso']);
    expect(start.code, start.stderr).toBe(0);
    expect(start.stderr).not.toMatch(/passt is not installed/);
    const con = new ConsoleSession(home, 'iso');
    try {
      await con.waitFor(new RegExp(GUEST_READY_MARKER), 90_000);
      expect(await retry(() => httpGet(fwd), 30_000)).toContain(GUEST_HTTP_TEXT);
      const toHost = await fetchFromGuest(con, servicePort, 'HOST');
      expect(toHost).not.toContain('host-loopback-secret');
      const toForward = await fetchFromGuest(con, fwd, 'FWD');
      expect(toForward).not.toContain(GUEST_HTTP_TEXT);
    } finally {
      await con.close();
      await vmdesk(home, ['kill', 'iso']);
    }
  });

  it('nat-host: the host loopback is at 10.0.2.2, as in VirtualBox', async () => {
    await vmdeskJson(home, ['create', 'open', '--memory', '256', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0 quiet', '--net', 'nat-host']);
    expect((await vmdesk(home, ['start', 'open'])).code).toBe(0);
    const con = new ConsoleSession(home, 'open');
    try {
      await con.waitFor(new RegExp(GUEST_READY_MARKER), 90_000);
      expect(await fetchFromGuest(con, servicePort, 'OPEN')).toContain('host-loopback-secret');
    } finally {
      await con.close();
      await vmdesk(home, ['kill', 'open']);
    }
  });

  it('a forward whose host port is taken is refused before anything starts, in plain words', async () => {
    const r = await vmdesk(home, ['create', 'clash', '--memory', '128', '--kernel', kernel, '--initrd', initrd, '--forward', `tcp:${servicePort}:22`]);
    expect(r.code, r.stderr).toBe(0);
    const start = await vmdesk(home, ['start', 'clash']);
    expect(start.code).toBe(5);
    expect(start.stderr).toMatch(new RegExp(`host port ${servicePort} \\(forwarded to guest port 22\\) is already in use`));
    expect((await vmdeskJson(home, ['info', 'clash'])).state).toBe('stopped');
  });
});
