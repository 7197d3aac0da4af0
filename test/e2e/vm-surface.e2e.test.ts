// The details pane and toolbar on a real booted test guest (issues 11, 12, 13, 15): live usage figures for the
// running guest, its addresses, a port forward added and removed while it runs (checked with real TCP
// connections to 127.0.0.1 that the guest's HTTP service answers), the network cable pulled and plugged in
// again, the image cache and Move to host dialogs, an axe scan of each, and Save state → "saved" → Start.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { guestPaths, GUEST_HTTP_PORT, GUEST_HTTP_TEXT, GUEST_READY_MARKER } from '../guest/guest.js';
import { freePort } from '../helpers/cli.js';
import { startImageServer } from '../helpers/image-server.js';
import { axeScan } from './axe.js';
import { useHarness } from './harness.js';
import { MainWindowPage } from './pages/MainWindowPage.js';
import { VmSurfacePage } from './pages/VmSurfacePage.js';
import { ConsolePage } from './pages/ConsolePage.js';

const e2e = useHarness();
const VM = 'surface guest';

/** GET / on 127.0.0.1:port: the body, or the error (refused, reset, timed out). */
function httpGet(port: number, timeoutMs = 4000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

async function answers(port: number, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const body = await httpGet(port);
      if (body.includes(GUEST_HTTP_TEXT)) return body;
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
    if (Date.now() > deadline) throw new Error(`nothing answered on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The forward no longer reaches the guest: a few attempts, each refused, reset or timed out. */
async function silent(port: number): Promise<boolean> {
  for (let i = 0; i < 3; i++) {
    const got = await httpGet(port, 3000).catch(() => '');
    if (got.includes(GUEST_HTTP_TEXT)) return false;
  }
  return true;
}

/** axe in the light and the dark scheme: no critical or serious finding in either. */
async function expectNoAxeFindings(label: string): Promise<void> {
  for (const scheme of ['dark', 'light'] as const) {
    await e2e.h.page.emulateMedia({ colorScheme: scheme });
    const findings = await axeScan(e2e.h.page);
    expect(findings, `${label} (${scheme}): ${JSON.stringify(findings, null, 1)}`).toEqual([]);
  }
}

describe('the VM surface on a running guest', () => {
  it('shows usage and addresses, adds and removes a forward live, pulls the cable, and scans clean', { timeout: 360_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const page = e2e.h.page;
    const main = new MainWindowPage(page);
    const surf = new VmSurfacePage(page);
    await e2e.h.call('vm.create', { name: VM, accel: 'tcg', cpus: 1, memoryMiB: 256, directKernel: { kernel, initrd, cmdline: 'console=ttyS0' } });

    await main.open(e2e.h.server.url);
    await main.select(VM);
    await main.toolbar('start').click();
    await main.waitForState(VM, 'running', 60_000);

    // ---- live usage: the daemon's 1 Hz feed fills the figures and charts ----
    await expect.poll(async () => (await surf.usageValue('cpu').textContent())?.trim(), { timeout: 30_000, interval: 500 }).toMatch(/^\d+(\.\d)? %$/);
    await expect.poll(async () => (await surf.usageValue('memory').textContent())?.trim(), { timeout: 30_000, interval: 500 }).toMatch(/^\d+(\.\d)? (KiB|MiB|GiB)$/);
    expect(await surf.usageValue('disk').textContent()).toMatch(/read .*\/s, write .*\/s/);
    // Several samples: the chart has more than one point.
    await expect.poll(() => page.locator('[data-testid="usage-cpu"] polyline').getAttribute('points'), { timeout: 30_000, interval: 1000 }).toMatch(/ .* /);

    // ---- the guest's address (NAT: what its DHCP hands out, or what the agent reports) ----
    await expect.poll(() => surf.guestAddresses.textContent(), { timeout: 90_000, interval: 1000 }).toContain('10.0.2.15');

    // ---- a forward added while it runs reaches the guest's HTTP service at once ----
    const port = await freePort();
    await surf.addForward(port, GUEST_HTTP_PORT);
    expect(await answers(port, 120_000)).toContain(GUEST_HTTP_TEXT);
    expect((await e2e.h.call('vm.get', { id: VM })).config?.network[0]?.forwards).toEqual([{ protocol: 'tcp', hostPort: port, guestPort: GUEST_HTTP_PORT }]);
    await e2e.h.shot('surface-01-running');

    // ---- cable pulled: the forward no longer reaches the guest; plugged in: it does again ----
    await surf.link(0).uncheck();
    await surf.linkDownChip(0).waitFor();
    expect((await e2e.h.call('vm.get', { id: VM })).linkDown).toEqual([0]);
    expect(await silent(port)).toBe(true);
    await surf.link(0).check();
    await surf.linkDownChip(0).waitFor({ state: 'detached' });
    expect(await answers(port, 30_000)).toContain(GUEST_HTTP_TEXT);

    // ---- a bad port is refused in the form, nothing sent ----
    await page.getByTestId('forward-host').fill('70000');
    await page.getByTestId('forward-guest').fill('80');
    expect(await page.getByTestId('forward-add').isDisabled()).toBe(true);
    await page.getByText('The host port is a whole number from 1 to 65535.').waitFor();
    await page.getByTestId('forward-host').fill('');
    await page.getByTestId('forward-guest').fill('');
    await page.getByText('The host port is a whole number from 1 to 65535.').waitFor({ state: 'detached' });

    // ---- the forward removed while it runs: nothing listens there any more ----
    await surf.removeForward(port);
    await expect.poll(() => httpGet(port, 2000).then(() => 'answered', (e: NodeJS.ErrnoException) => e.code ?? e.message), { timeout: 15_000, interval: 500 }).toBe('ECONNREFUSED');
    expect((await e2e.h.call('vm.get', { id: VM })).config?.network[0]?.forwards).toEqual([]);

    // ---- keyboard: the new controls are reachable with Tab and named ----
    await surf.link(0).focus();
    expect(await page.evaluate(() => document.activeElement?.closest('label')?.textContent?.trim())).toBe('Cable connected');

    // ---- axe: the details pane with live figures, the image cache and the move dialog ----
    await expectNoAxeFindings('details of a running VM');
    await surf.toolbar('images').click();
    const cache = page.getByTestId('image-cache-dialog');
    await cache.waitFor();
    await cache.getByTestId('image-cache-empty').waitFor();
    expect(await cache.getByTestId('image-cache-total').textContent()).toMatch(/0 B in 0 images/);
    expect(await cache.getByTestId('image-cache-remove-all').isDisabled()).toBe(true);
    await e2e.h.shot('surface-02-image-cache');
    await expectNoAxeFindings('image cache dialog');
    await page.keyboard.press('Escape');
    await cache.waitFor({ state: 'detached' });

    await surf.toolbar('migrate').click();
    const move = page.getByTestId('move-dialog');
    await move.waitFor();
    await move.getByTestId('move-no-hosts').waitFor();
    expect(await move.getByTestId('move-ok').isDisabled()).toBe(true);
    // A host that cannot be reached is refused with the reason, and nothing is added.
    await move.getByTestId('host-name').fill('nowhere');
    await move.getByTestId('host-uri').fill('qemu+unix:///system?socket=/nonexistent/libvirt-sock');
    await move.getByTestId('host-add').click();
    await move.getByTestId('error').waitFor({ timeout: 30_000 });
    expect(await e2e.h.call('hosts.list', {})).toEqual([]);
    await e2e.h.shot('surface-03-move');
    await expectNoAxeFindings('move to host dialog');
    await move.getByTestId('move-cancel').click();
    await move.waitFor({ state: 'detached' });

    expect(e2e.h.pageErrors.filter((e) => !/favicon/.test(e))).toEqual([]);
  });

  it('saves the state, shows "saved", Start resumes the guest with its RAM intact; a discarded state boots afresh', { timeout: 300_000 }, async () => {
    const page = e2e.h.page;
    const main = new MainWindowPage(page);
    const surf = new VmSurfacePage(page);
    const cons = new ConsolePage(page);
    await main.waitForState(VM, 'running');

    // A marker in the guest's RAM (its root is an initramfs: nothing reaches a disk).
    await main.toolbar('console').click();
    await cons.waitOpen();
    await cons.serialTab();
    // The shell is up once the marker is out and the kernel has gone quiet (it may print after the prompt).
    await cons.waitForSerial(new RegExp(GUEST_READY_MARKER), 120_000);
    await cons.waitForQuiet(2500);
    await cons.typeSerial('echo surf-$((6*7))-ram > /tmp/ram-marker\n');
    await cons.waitForQuiet();
    await page.getByTestId('console-back').click();
    await main.waitForState(VM, 'running');

    await surf.toolbar('suspend').click();
    await main.waitForState(VM, 'saved', 120_000);
    expect(await main.item(VM).getByTestId('vm-state').textContent()).toBe('saved');
    await page.getByTestId('saved-state').waitFor();
    expect(await surf.toolbar('discard-state').isEnabled()).toBe(true);
    expect((await e2e.h.call('vm.get', { id: VM })).savedState?.bytes).toBeGreaterThan(0);
    await e2e.h.shot('surface-04-saved');
    await expectNoAxeFindings('a saved VM');

    await main.toolbar('start').click();
    await main.waitForState(VM, 'running', 120_000);
    expect((await e2e.h.call('vm.get', { id: VM })).savedState).toBeUndefined();
    await main.toolbar('console').click();
    await cons.waitOpen();
    await cons.serialTab();
    await cons.waitForQuiet();
    await cons.typeSerial('cat /tmp/ram-marker\n');
    await cons.waitForSerial(/^surf-42-ram\s*$/m, 60_000);
    await page.getByTestId('console-back').click();
    await main.waitForState(VM, 'running');

    // Saved again, then discarded from the details pane (it asks first): the VM is plainly stopped.
    await surf.toolbar('suspend').click();
    await main.waitForState(VM, 'saved', 120_000);
    await page.getByTestId('details-discard-state').click();
    const ask = page.getByTestId('confirm-discard-state');
    await ask.waitFor();
    await ask.getByTestId('confirm-cancel').click();
    await ask.waitFor({ state: 'detached' });
    expect(await main.stateOf(VM)).toBe('saved');
    await page.getByTestId('details-discard-state').click();
    await ask.getByTestId('confirm-ok').click();
    await main.waitForState(VM, 'stopped', 30_000);
    expect((await e2e.h.call('vm.get', { id: VM })).savedState).toBeUndefined();
    await page.getByTestId('saved-state').waitFor({ state: 'detached' });
  });

  it('the image cache dialog shows a downloaded image with its size and removes it after confirming', { timeout: 120_000 }, async () => {
    const page = e2e.h.page;
    const surf = new VmSurfacePage(page);
    // A real download into the cache: the test guest's disk (made by test/global-setup.ts) from a local server, checked against its SHA256SUMS.
    const disk = readFileSync(path.resolve('.cache/guest/disk.qcow2'));
    const sha = createHash('sha256').update(disk).digest('hex');
    const server = await startImageServer({ '/g/disk.qcow2': disk, '/g/SHA256SUMS': Buffer.from(`${sha}  disk.qcow2\n`) });
    try {
      await e2e.h.call('image.addSource', { id: 'testguest', name: 'VMDesk test guest', format: 'qcow2', url: `${server.url}/g/disk.qcow2`, verify: { sums: `${server.url}/g/SHA256SUMS`, algorithm: 'sha256' } });
      const cached = await e2e.h.call('image.pull', { image: 'testguest' });
      expect(existsSync(cached.file)).toBe(true);
      await new MainWindowPage(page).open(e2e.h.server.url);

      await surf.toolbar('images').click();
      const cache = page.getByTestId('image-cache-dialog');
      await cache.waitFor();
      const row = cache.getByTestId('cached-testguest');
      await row.waitFor();
      const mib = Math.round(disk.length / 1024 / 1024);
      expect(await cache.getByTestId('cached-size-testguest').textContent()).toBe(`${mib} MiB`);
      expect(await cache.getByTestId('image-cache-total').textContent()).toMatch(new RegExp(`^\\s*${mib} MiB in 1 image`));
      expect(await row.textContent()).toMatch(/sha256/i);
      await expectNoAxeFindings('image cache with an image');
      await e2e.h.shot('surface-05-image-cache');

      // Keyboard: choose it with Space, then remove; the confirmation is asked first and Cancel keeps it.
      await cache.getByTestId('cached-choose-testguest').focus();
      await page.keyboard.press('Space');
      await cache.getByTestId('image-cache-remove').click();
      const ask = page.getByTestId('confirm-image-remove');
      await ask.waitFor();
      expect(await ask.textContent()).toMatch(new RegExp(`${mib} MiB will be freed`));
      await page.keyboard.press('Escape');
      await ask.waitFor({ state: 'detached' });
      expect(existsSync(cached.file)).toBe(true);
      await cache.getByTestId('image-cache-remove').click();
      await ask.getByTestId('confirm-ok').click();
      await cache.getByTestId('image-cache-empty').waitFor({ timeout: 15_000 });
      expect(existsSync(cached.file)).toBe(false);
      expect((await e2e.h.call('image.list', {})).cacheBytes).toBe(0);
      await page.keyboard.press('Escape');
      await cache.waitFor({ state: 'detached' });
    } finally {
      await server.close();
    }
  });
});
