// From nothing to a shell, through the vmdesk binary and its daemon: a source served by a local HTTP server
// (the test guest made into a bootable disk stands in for a cloud image), pulled with progress and checked
// against its SHA256SUMS, a VM created from it (copied, grown, a cloud-init seed with the VM's own key),
// started, and `vmdesk shell` running commands in it over SSH through node-pty; the seed's content checked
// with isoinfo; the terminal stream's window size and resize through the daemon's own frames.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectDaemon } from '../../main/client/daemon-client.js';
import { startImageServer, type ImageServer } from '../helpers/image-server.js';
import { stopDaemon, tempHome, vmdesk, vmdeskJson } from '../helpers/cli.js';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
let server: ImageServer;
let home: string;
let disk: Buffer;

beforeAll(async () => {
  const r = spawnSync('bash', [path.join(repo, 'test/guest/build-disk.sh')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`test/guest/build-disk.sh failed: ${r.stderr}`);
  disk = readFileSync(path.join(repo, '.cache/guest/disk.qcow2'));
  const sha = createHash('sha256').update(disk).digest('hex');
  server = await startImageServer({ '/guest/disk.qcow2': disk, '/guest/SHA256SUMS': Buffer.from(`${sha}  disk.qcow2\n`) });
  home = await tempHome('vmdesk-images-cli-');
}, 300_000);

afterAll(async () => {
  if (home) {
    for (const vm of ['g1', 'g2']) await vmdesk(home, ['kill', vm]).catch(() => {});
    await stopDaemon(home).catch(() => {});
  }
  await server?.close();
});

const diskRequests = () => server.requests.filter((r) => r.path === '/guest/disk.qcow2').length;

function isoFile(iso: string, name: string): string {
  return execFileSync('isoinfo', ['-i', iso, '-J', '-x', `/${name}`], { encoding: 'utf8' });
}

describe('vmdesk images, create --image and shell', () => {
  it('adds a source, pulls it with progress and says what was verified', async () => {
    const add = await vmdesk(home, ['images', 'add', 'testguest', '--url', `${server.url}/guest/disk.qcow2`, '--sums', `${server.url}/guest/SHA256SUMS`, '--name', 'VMDesk test guest']);
    expect(add.stderr).toBe('');
    expect(add.code).toBe(0);
    const pull = await vmdesk(home, ['images', 'pull', 'testguest']);
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.stderr).toMatch(/testguest: (done|verifying|\d)/);
    expect(pull.stdout).toMatch(/verified: sha256 checked against SHA256SUMS \(fetched over plain HTTP\); upstream does not sign its checksum file/);
    const list = await vmdeskJson(home, ['images', 'list']);
    const mine = list.images.find((i: { entry: { id: string } }) => i.entry.id === 'testguest');
    expect(mine.source).toBe('user');
    expect(mine.cached.bytes).toBe(disk.length);
    expect(list.images.some((i: { entry: { id: string } }) => i.entry.id === 'debian-12')).toBe(true);
    const text = await vmdesk(home, ['images', 'list']);
    expect(text.stdout).toMatch(/testguest \*\s+cloud\s+qcow2\s+cached/);
    expect(text.stdout).toMatch(/windows-11\s+vendor-page\s+iso\s+vendor page/);
    expect(text.stdout).toMatch(/^cache: .*images\/cache \(\d/m);
  });

  it('creates a VM from it: a grown copy, a cidata seed with the VM\'s own key, an SSH forward', async () => {
    const r = await vmdesk(home, ['create', 'g1', '--image', 'testguest', '--user', 'alice', '--hostname', 'guest-one', '--cpus', '1', '--memory', '256', '--disk', '96M']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/created "g1" .* from testguest; then: vmdesk start g1; vmdesk shell g1 \(or ssh alice@127\.0\.0\.1 -p \d+\)/);
    const info = await vmdeskJson(home, ['info', 'g1']);
    expect(info.config.disks.map((d: { id: string; format: string; readOnly: boolean }) => [d.id, d.format, d.readOnly])).toEqual([
      ['disk0', 'qcow2', false],
      ['seed', 'raw', true],
    ]);
    expect(info.config.network[0].forwards).toEqual([{ protocol: 'tcp', hostPort: info.guest.ssh.port, guestPort: 22 }]);
    expect(info.guest.ssh).toMatchObject({ host: '127.0.0.1', user: 'alice', keyFile: path.join(info.bundle, 'ssh/id_ed25519') });
    expect((await vmdesk(home, ['info', 'g1'])).stdout).toMatch(/\nssh: +alice@127\.0\.0\.1 -p \d+ -i \S+id_ed25519 \(or: vmdesk shell g1\)\n/);
    // The private key is the user's alone; the copy was grown, the cache was not.
    expect(statSync(info.guest.ssh.keyFile).mode & 0o777).toBe(0o600);
    const grown = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-f', 'qcow2', path.join(info.bundle, 'disks/disk0.qcow2')], { encoding: 'utf8' }));
    expect(grown['virtual-size']).toBe(96 * 1024 * 1024);
    const list = await vmdeskJson(home, ['images', 'list']);
    const cached = list.images.find((i: { entry: { id: string } }) => i.entry.id === 'testguest').cached;
    expect(createHash('sha256').update(readFileSync(cached.file)).digest('hex')).toBe(createHash('sha256').update(disk).digest('hex'));
    // The seed, read back with isoinfo (genisoimage's): label cidata, meta-data and user-data as cloud-init wants them.
    const seed = path.join(info.bundle, 'cloud-init/seed.iso');
    expect(execFileSync('isoinfo', ['-d', '-i', seed], { encoding: 'utf8' })).toMatch(/^Volume id: cidata$/m);
    const meta = isoFile(seed, 'meta-data');
    expect(meta).toBe(`instance-id: "vmdesk-${info.id}"\nlocal-hostname: "guest-one"\n`);
    const userData = isoFile(seed, 'user-data');
    const pub = readFileSync(`${info.guest.ssh.keyFile}.pub`, 'utf8').trim();
    expect(userData.startsWith('#cloud-config\n')).toBe(true);
    expect(userData).toContain('  - name: "alice"\n');
    expect(userData).toContain(`      - ${JSON.stringify(pub)}\n`);
    expect(userData).toMatch(/^ssh_pwauth: false$/m);
  });

  it('starts it and runs commands in it with vmdesk shell (ssh through node-pty)', async () => {
    const start = await vmdesk(home, ['start', 'g1']);
    expect(start.code, start.stderr).toBe(0);
    const host = await vmdesk(home, ['shell', 'g1', '--', 'hostname'], { timeoutMs: 180_000 });
    expect(host.code, host.stderr).toBe(0);
    // A pty: the remote output comes with CR LF.
    expect(host.stdout).toBe('guest-one\r\n');
    const id = await vmdesk(home, ['shell', 'g1', '--', 'id', '-un']);
    expect(id.stdout.trim()).toBe('alice');
    // The exit status is the command's.
    expect((await vmdesk(home, ['shell', 'g1', '--', 'exit', '7'])).code).toBe(7);
    // Piped input goes to the login shell; end of input ends it.
    const piped = await vmdesk(home, ['shell', 'g1'], { input: 'echo "piped:$(( 6 * 7 ))"\n' });
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stdout).toContain('piped:42');
    const info = await vmdesk(home, ['info', 'g1']);
    expect(info.stdout).toMatch(/^address:   10\.0\.2\.15\/24 \(the NAT's DHCP lease, NAT adapter 0\)$/m);
    expect(info.stdout).toMatch(/^ssh:       alice@127\.0\.0\.1 -p \d+ -i .*id_ed25519/m);
  }, 300_000);

  it('carries the window size and its changes through term.* frames', async () => {
    const client = await connectDaemon(home);
    try {
      let out = '';
      let opened: string | undefined;
      const closed = new Promise<{ exitCode?: number | null }>((resolve) => {
        const term = client.openTerminal('g1', { cols: 100, rows: 30 }, {
          onOpened: (via, detail) => (opened = `${via} ${detail}`),
          onData: (b64) => (out += Buffer.from(b64, 'base64').toString('utf8')),
          onClose: resolve,
        });
        void (async () => {
          await until(() => out.includes('$ ') || out.includes('# '));
          term.write(Buffer.from('stty size\n').toString('base64'));
          await until(() => out.includes('30 100'));
          term.resize(132, 43);
          term.write(Buffer.from('stty size; exit 3\n').toString('base64'));
        })();
      });
      const end = await closed;
      expect(opened).toMatch(/^ssh alice@127\.0\.0\.1:\d+$/);
      expect(out).toContain('30 100');
      expect(out).toContain('43 132');
      expect(end.exitCode).toBe(3);
      // A VM without SSH access is refused for a command, and opens its serial console otherwise.
      const refused = await new Promise<{ error?: { code: string; message: string } }>((resolve) => client.openTerminal('g1', { via: 'serial', command: ['ls'] }, { onData: () => {}, onClose: resolve }));
      expect(refused.error?.message).toMatch(/command cannot be run through the serial console/);
    } finally {
      client.close();
    }
  }, 120_000);

  it('reuses the cache for the next VM and removes cached images on request', async () => {
    const before = diskRequests();
    // The cards and accelerator asked for: the SSH forward goes to the first nat card (eth1 here).
    const r = await vmdesk(home, ['create', 'g2', '--image', 'testguest', '--memory', '256', '--cpus', '1', '--accel', 'tcg', '--net', 'internal:lab', '--net', 'nat', '--forward', 'tcp:0:80']);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/port/);
    const ok = await vmdesk(home, ['create', 'g2', '--image', 'testguest', '--memory', '256', '--cpus', '1', '--accel', 'tcg', '--net', 'internal:lab', '--net', 'nat']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(diskRequests()).toBe(before);
    const cfg = (await vmdeskJson(home, ['info', 'g2'])).config;
    expect(cfg.accel).toBe('tcg');
    expect(cfg.network.map((n: { mode: string }) => n.mode)).toEqual(['internal', 'nat']);
    expect(cfg.network[0].forwards).toEqual([]);
    expect(cfg.network[1].forwards).toMatchObject([{ protocol: 'tcp', guestPort: 22 }]);
    // No nat card: no SSH forward, and the user is told how the terminal reaches the guest.
    const none = await vmdesk(home, ['create', 'g3', '--image', 'testguest', '--memory', '256', '--net', 'none']);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stderr).toMatch(/no nat or nat-host network card: .*serial console/);
    expect((await vmdeskJson(home, ['info', 'g3'])).config.network).toEqual([{ mode: 'none', forwards: [] }]);
    const rm = await vmdesk(home, ['images', 'rm', 'testguest']);
    expect(rm.code, rm.stderr).toBe(0);
    expect(rm.stdout).toMatch(/removed testguest \(\d+(\.\d)? MiB freed\)/);
    const list = await vmdeskJson(home, ['images', 'list']);
    expect(list.images.find((i: { entry: { id: string } }) => i.entry.id === 'testguest').cached).toBeUndefined();
    // The VMs have their own copies.
    const g2 = await vmdeskJson(home, ['info', 'g2']);
    expect(existsSync(path.join(g2.bundle, 'disks/disk0.qcow2'))).toBe(true);
    // A vendor page cannot be pulled, and says where to go.
    const win = await vmdesk(home, ['images', 'pull', 'windows-11']);
    expect(win.code).toBe(2);
    expect(win.stderr).toMatch(/cannot be downloaded by VMDesk: Microsoft hands out the ISO only through its own page/);
    expect((await vmdesk(home, ['stop', 'g1', '--timeout', '20'])).code).toBe(0);
  });
});

async function until(cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
