// From nothing to a shell through the GUI (issue 13): the wizard's gallery with an image added by URL and
// checksum file (a local HTTP server serves the test guest made into a bootable disk, standing in for a cloud
// image), its download watched, paused and resumed, cloud-init filled in, the VM created and started, and the
// console's Terminal tab logged in over SSH with the VM's own key (typed input echoed, the window size
// followed). A VM without SSH gets its serial console in the same tab, said plainly. The Display tab shares the
// clipboard with a guest whose clipboard is on (the test guest's vdagent-test). Files opened with the desktop
// app reach the wizard or the import dialog. axe scans of the gallery page and the Terminal tab.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestPaths } from '../guest/guest.js';
import { connectDaemon } from '../../main/client/daemon-client.js';
import { startImageServer, type ImageServer } from '../helpers/image-server.js';
import { axeScan } from './axe.js';
import { useHarness } from './harness.js';
import { ConsolePage } from './pages/ConsolePage.js';
import { GalleryPage } from './pages/GalleryPage.js';
import { MainWindowPage } from './pages/MainWindowPage.js';
import { WizardPage } from './pages/WizardPage.js';

const e2e = useHarness();
const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
let server: ImageServer;
let disk: Buffer;

beforeAll(async () => {
  const r = spawnSync('bash', [path.join(repo, 'test/guest/build-disk.sh')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`test/guest/build-disk.sh failed: ${r.stderr}`);
  disk = readFileSync(path.join(repo, '.cache/guest/disk.qcow2'));
  const sha = createHash('sha256').update(disk).digest('hex');
  server = await startImageServer({ '/guest/disk.qcow2': disk, '/guest/SHA256SUMS': Buffer.from(`${sha}  disk.qcow2\n`) });
}, 300_000);

afterAll(async () => {
  await server?.close();
});

async function vmId(name: string): Promise<string> {
  const vm = (await e2e.h.call('vm.list', {})).find((v) => v.name === name);
  if (!vm) throw new Error(`no VM ${name}`);
  return vm.id;
}

describe('gallery and terminal', () => {
  it('picks an image in the gallery, watches its download, creates the VM and opens a shell in the Terminal tab', { timeout: 420_000 }, async () => {
    const page = e2e.h.page;
    const main = new MainWindowPage(page);
    const wizard = new WizardPage(page);
    const gallery = new GalleryPage(page);
    const cons = new ConsolePage(page);

    await main.open(e2e.h.server.url);
    await main.toolbar('new').click();
    await wizard.waitForStep('name');
    await wizard.setName('g1');
    await wizard.next();
    await wizard.waitForStep('media');
    // The gallery is the first choice and is chosen already; the catalogue lists what it offers.
    expect(await page.getByTestId('media-gallery').isChecked()).toBe(true);
    await gallery.entry('debian-12').waitFor();
    expect(await gallery.status('debian-12').textContent()).toMatch(/^download, up to 2\.0 GiB$/);
    expect(await gallery.status('windows-11').textContent()).toBe('download from the vendor');
    // Next with nothing chosen stays and says why.
    await wizard.next();
    expect(await wizard.error('image').textContent()).toBe('choose an image');

    await gallery.addSource({ name: 'VMDesk test guest', url: `${server.url}/guest/disk.qcow2`, check: `${server.url}/guest/SHA256SUMS` });
    expect(await gallery.entry('vmdesk-test-guest').isChecked()).toBe(true);
    await gallery.cloudInit({ user: 'alice', hostname: 'guest-one' });
    expect(await axeScan(page)).toEqual([]);
    await e2e.h.shot('40-wizard-gallery');
    await page.emulateMedia({ colorScheme: 'dark' });
    expect(await axeScan(page)).toEqual([]);
    await page.emulateMedia({ colorScheme: 'light' });

    // The download, slow enough to watch: bytes, speed and time left, then paused and resumed with a Range request.
    server.throttle = 3 * 1024 * 1024;
    await page.getByTestId('gallery-download').click();
    await page.locator('[data-testid="download-status"][data-state="running"]').waitFor({ timeout: 30_000 });
    await page.waitForFunction(() => /MiB of .* · .*\/s · \d+ s left/.test(document.querySelector('[data-testid="download-line"]')?.textContent ?? ''), undefined, { timeout: 30_000 });
    const bar = Number(await page.getByTestId('download-bar').getAttribute('value'));
    expect(bar).toBeGreaterThan(0);
    expect(bar).toBeLessThan(1);
    await e2e.h.shot('41-wizard-gallery-download');
    await page.getByTestId('download-pause').click();
    await page.locator('[data-testid="download-status"][data-state="paused"]').waitFor({ timeout: 15_000 });
    expect(await gallery.downloadLine()).toMatch(/^paused at [\d.]+ MiB of 21 MiB$/);
    const before = server.requests.filter((r) => r.path === '/guest/disk.qcow2').length;
    server.throttle = 0;
    await page.getByTestId('download-resume').click();
    await page.getByTestId('gallery-cached').waitFor({ timeout: 60_000 });
    expect(await page.getByTestId('gallery-cached').textContent()).toMatch(/sha256 checked against SHA256SUMS/);
    const resumed = server.requests.filter((r) => r.path === '/guest/disk.qcow2').slice(before);
    expect(resumed.length).toBe(1);
    expect(resumed[0]!.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(await gallery.status('vmdesk-test-guest').textContent()).toMatch(/^cached, 21 MiB$/);

    await wizard.next();
    await wizard.waitForStep('hardware');
    await wizard.hardware({ cpus: 1, memoryMiB: 256 });
    await wizard.next();
    await wizard.waitForStep('disk');
    await wizard.diskGiB(1);
    await wizard.next();
    await wizard.waitForStep('network');
    expect(await page.getByTestId('gallery-network-note').textContent()).toMatch(/SSH port is forwarded from a free port on 127\.0\.0\.1/);
    await wizard.next();
    await wizard.waitForStep('summary');
    expect(await page.getByTestId('summary-media').textContent()).toBe('VMDesk test guest (cloud image, cached)');
    expect(await page.getByTestId('summary-cloud-init').textContent()).toBe('user alice, host name guest-one');
    await wizard.create();
    await main.waitForState('g1', 'stopped');
    const info = await e2e.h.call('vm.get', { id: await vmId('g1') });
    expect(info.config?.cpus).toBe(1);
    expect(info.config?.memoryMiB).toBe(256);
    expect(info.config?.network[0]?.forwards.map((f) => f.guestPort)).toEqual([22]);

    // Start it and open its console at the Terminal tab: ssh as alice with the VM's key.
    await main.select('g1');
    await main.toolbar('start').click();
    await main.waitForState('g1', 'running', 60_000);
    await page.goto(`${e2e.h.server.url}#/console/${encodeURIComponent(await vmId('g1'))}?tab=terminal`);
    await cons.waitOpen();
    await page.getByTestId('terminal-screen').locator('.xterm-screen').waitFor();
    await page.locator('[data-testid="terminal-note"]', { hasText: /^SSH session as alice@127\.0\.0\.1:\d+/ }).waitFor({ timeout: 240_000 });
    await cons.waitForTerminal(/[$#] $/m, 30_000);
    await cons.typeTerminal('hostname; echo "typed-$((6 * 7))"\n');
    const text = await cons.waitForTerminal(/typed-42/);
    expect(text).toContain('guest-one');
    expect(await page.getByTestId('terminal-status').textContent()).toBe('ssh');
    expect(await axeScan(page)).toEqual([]);
    await page.emulateMedia({ colorScheme: 'dark' });
    expect(await axeScan(page)).toEqual([]);
    await page.emulateMedia({ colorScheme: 'light' });
    await e2e.h.shot('42-console-terminal');

    // The guest's terminal follows the tab's size (once the page has fitted xterm to it: waited for, not slept).
    const termSize = () =>
      page.evaluate(() => {
        const t = (document.querySelector('[data-testid="terminal-screen"]') as HTMLElement & { vmdeskTerminal?: { cols: number; rows: number } }).vmdeskTerminal!;
        return `${t.rows} ${t.cols}`;
      });
    const sizeBefore = await termSize();
    await page.setViewportSize({ width: 900, height: 600 });
    await expect.poll(termSize, { timeout: 10_000 }).not.toBe(sizeBefore);
    const size = await termSize();
    await cons.typeTerminal('stty size\n');
    await cons.waitForTerminal(new RegExp(`^${size}$`, 'm'));
    await page.setViewportSize({ width: 1280, height: 820 });

    // exit ends the session, said in words, and a new one can be opened.
    await cons.typeTerminal('exit\n');
    await page.locator('[data-testid="terminal-note"]', { hasText: 'The session ended.' }).waitFor({ timeout: 30_000 });
    await page.getByTestId('terminal-reconnect').waitFor();
  });

  it('gives a VM without SSH its serial console in the Terminal tab, and shares its clipboard both ways on the Display tab', { timeout: 300_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    // No SSH (not made from a cloud image), the clipboard on: the test guest's vdagent-test behind qemu-vdagent.
    const vm = await e2e.h.call('vm.create', { name: 'clip', cpus: 1, memoryMiB: 256, accel: 'tcg', directKernel: { kernel, initrd, cmdline: 'console=ttyS0 quiet' }, clipboard: true, network: [{ mode: 'none', forwards: [] }] });
    expect(vm.config).toMatchObject({ clipboard: true, display: 'virtio' });
    await e2e.h.call('vm.start', { id: vm.id });
    const ctx = await e2e.browser.newContext({ viewport: { width: 1280, height: 820 } });
    await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(e2e.h.server.url).origin });
    const page = await ctx.newPage();
    const cons = new ConsolePage(page);

    // The Terminal tab: the serial console instead of SSH, said plainly, and it takes typed input.
    await page.goto(`${e2e.h.server.url}#/console/${encodeURIComponent(vm.id)}?tab=terminal`);
    await cons.waitOpen();
    await page.locator('[data-testid="terminal-note"]', { hasText: /has no SSH access .* serial console/ }).waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('terminal-status').textContent()).toBe('serial console');
    await cons.waitForTerminal(/vmdesk-clip: ready/, 120_000);
    await page.waitForTimeout(1000);
    await cons.typeTerminal('echo "fallback-$((2 * 21))"\n');
    await cons.waitForTerminal(/fallback-42/);

    // The guest's console read and typed from here (not through the page), so only the clipboard goes through the page.
    const client = await connectDaemon(e2e.h.home);
    let guestOut = '';
    const serial = client.openSerial(vm.id, { onData: (b64) => (guestOut += Buffer.from(b64, 'base64').toString('latin1')), onClose: () => {} });
    const guestSays = async (re: RegExp, timeout = 60_000) => {
      const end = Date.now() + timeout;
      while (!re.test(guestOut)) {
        if (Date.now() > end) throw new Error(`the guest never printed ${re}; last:\n${guestOut.slice(-800)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    try {
      // The Display tab connects and brings this computer's clipboard to the guest.
      await page.evaluate(() => navigator.clipboard.writeText('vmdesk host text 4711'));
      await cons.displayTab();
      await page.locator('[data-testid="display-status"]', { hasText: /^connected$/ }).waitFor({ timeout: 30_000 });
      expect(await page.getByTestId('display-clipboard-on').textContent()).toBe('Clipboard shared');
      await guestSays(/vmdesk-clip: from host: vmdesk host text 4711/);
      // The guest copies: the browser's clipboard gets it.
      serial.write(Buffer.from('echo "guest says 0815" > /tmp/clip-to-host\n').toString('base64'));
      await guestSays(/guest says 0815/);
      const end = Date.now() + 30_000;
      let pasted = '';
      while (!(pasted = await page.evaluate(() => navigator.clipboard.readText())).includes('guest says 0815')) {
        if (Date.now() > end) throw new Error(`the browser's clipboard never got the guest's text; it holds ${JSON.stringify(pasted)}`);
        await page.waitForTimeout(250);
      }
      // Copied again on the host: sent when the window gets the focus back.
      await page.evaluate(() => {
        void navigator.clipboard.writeText('second 0042').then(() => window.dispatchEvent(new Event('focus')));
      });
      await guestSays(/vmdesk-clip: from host: second 0042/);
      // And by the button.
      await page.evaluate(() => navigator.clipboard.writeText('third 0099'));
      await page.getByTestId('display-send-clipboard').click();
      await guestSays(/vmdesk-clip: from host: third 0099/);
    } finally {
      serial.close();
      client.close();
    }
    await ctx.close();
    await e2e.h.call('vm.kill', { id: vm.id });
  });

  it('opens the wizard with an ISO and the import dialog with an appliance opened with the desktop app', { timeout: 60_000 }, async () => {
    const { port, token } = e2e.h.server;
    const ctx = await e2e.browser.newContext();
    // The preload as main/electron/preload/index.ts exposes it; its channel relayed over the test server's WebSocket.
    await ctx.addInitScript(`(() => {
      const Native = window.WebSocket;
      window.vmdesk = Object.freeze({
        openChannel(kind, vm, h) {
          const ws = new Native(${JSON.stringify(`ws://127.0.0.1:${port}/ws?token=${encodeURIComponent(token)}`)});
          ws.onopen = () => h.onOpen();
          ws.onmessage = (m) => h.onMessage(m.data);
          ws.onclose = () => h.onClose('closed');
          return { send: (d) => ws.readyState === 1 && ws.send(d), close: () => ws.close() };
        },
        openFile: async () => null,
        revealInFolder: async () => {},
        openConsole: async () => {},
        onMenuCommand: () => {},
        onOpenPath: (fn) => { window.__openPath = fn; },
      });
    })()`);
    const page = await ctx.newPage();
    await page.goto(e2e.h.server.url);
    await page.getByTestId('main-window').waitFor({ timeout: 60_000 });
    await page.waitForFunction(() => typeof (window as unknown as { __openPath?: unknown }).__openPath === 'function');
    const openPath = (cmd: { action: string; path: string }) => page.evaluate((c) => (window as unknown as { __openPath: (c: unknown) => void }).__openPath(c), cmd);

    await openPath({ action: 'create', path: '/srv/isos/debian-13.iso' });
    await page.getByTestId('wizard').waitFor();
    await page.getByTestId('field-name').fill('from-iso');
    await page.getByTestId('wizard-next').click();
    await page.getByTestId('wizard-step-media').waitFor();
    expect(await page.getByTestId('media-iso').isChecked()).toBe(true);
    expect(await page.getByTestId('field-iso').inputValue()).toBe('/srv/isos/debian-13.iso');

    // An appliance opened while the wizard is up: the wizard gives way to the import dialog.
    await openPath({ action: 'import', path: '/srv/appliances/web.ova' });
    await page.getByTestId('wizard').waitFor({ state: 'detached' });
    const dialog = page.getByTestId('import-dialog');
    await dialog.waitFor();
    expect(await page.getByTestId('import-path').inputValue()).toBe('/srv/appliances/web.ova');
    await ctx.close();
  });
});
