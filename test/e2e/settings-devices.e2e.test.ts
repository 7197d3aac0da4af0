// Settings for issues 11 and 12 in real Chromium against a real daemon: two network cards (NAT with a forward and
// an internal network), a shared folder, the clipboard and a TPM, saved and read back through the RPC; the
// dialog's every tab scanned with axe; a running VM keeps its cards locked but takes a new forward live.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { guestPaths } from '../guest/guest.js';
import { useHarness } from './harness.js';
import { axeScan } from './axe.js';
import { MainWindowPage } from './pages/MainWindowPage.js';
import { SettingsPage, type SettingsTab } from './pages/SettingsPage.js';
import { WizardPage } from './pages/WizardPage.js';

const e2e = useHarness();
const shared = mkdtempSync(path.join(os.tmpdir(), 'vmd-share-'));
afterAll(() => rmSync(shared, { recursive: true, force: true }));

describe('settings: networks, shared folders, devices', () => {
  it('edits two cards, a share, the clipboard and a TPM, and the daemon keeps exactly that', { timeout: 180_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const page = e2e.h.page;
    const main = new MainWindowPage(page);
    await main.open(e2e.h.server.url);
    await main.emptyState.waitFor();
    // Another VM on internal:lab, so the name field offers it.
    await e2e.h.call('vm.create', { name: 'peer', memoryMiB: 128, directKernel: { kernel, initrd, cmdline: 'console=ttyS0' }, network: [{ mode: 'internal', network: 'lab', forwards: [] }] });
    await e2e.h.call('vm.create', { name: 'box', memoryMiB: 128, directKernel: { kernel, initrd, cmdline: 'console=ttyS0' } });
    await main.waitForState('box', 'stopped');
    await main.select('box');
    await main.toolbar('settings').click();
    const s = new SettingsPage(page);
    await s.root.waitFor();

    await s.tab('network');
    const mac0 = await s.field('net-0-mac').inputValue();
    expect(mac0).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    await s.field('add-forward').click();
    await s.field('forward-0-host').fill('40022');
    await s.addCard();
    await s.card(1, 'internal:lab', { model: 'e1000e' });
    // The name field suggests the networks other VMs use.
    expect(await s.root.locator('datalist option').evaluateAll((o) => o.map((x) => (x as HTMLOptionElement).value))).toEqual(['lab']);
    const mac1 = await s.field('net-1-mac').inputValue();
    expect(mac1).toMatch(/^52:54:00:/);
    expect(mac1).not.toBe(mac0);
    // A bad network name is refused inline and blocks OK.
    await s.field('net-1-network').fill('lab,evil');
    await s.root.getByTestId('error-net.1.network').waitFor();
    expect(await s.field('settings-save').isDisabled()).toBe(true);
    await s.field('net-1-network').fill('lab');
    await e2e.h.shot('40-settings-network-cards');

    await s.tab('guest');
    await s.addShare(shared, 'work', true);
    expect(await s.field('share-work-mount').textContent()).toMatch(/^mount -t (virtiofs -o ro|9p -o .*,ro) work \/mnt\/work$/);
    await s.field('field-clipboard').check();
    await s.tab('devices');
    await s.field('field-tpm').check();
    // Secure Boot waits for UEFI.
    expect(await s.field('field-secure-boot').isDisabled()).toBe(true);

    // Every tab of the dialog, light and dark, wide and narrow: no critical or serious axe finding.
    for (const [scheme, width, height] of [['light', 1280, 820], ['dark', 900, 600]] as const) {
      await page.emulateMedia({ colorScheme: scheme });
      await page.setViewportSize({ width, height });
      for (const t of ['general', 'system', 'media', 'network', 'resources', 'guest', 'devices'] as SettingsTab[]) {
        await s.tab(t);
        const findings = await axeScan(page);
        expect(findings, `${t} (${scheme}, ${width}x${height}): ${JSON.stringify(findings, null, 1)}`).toEqual([]);
      }
    }
    await e2e.h.shot('43-settings-guest-dark-900x600');
    await page.emulateMedia({ colorScheme: 'light' });
    await page.setViewportSize({ width: 1280, height: 820 });
    await s.tab('devices');
    await e2e.h.shot('41-settings-devices');
    await s.save();

    const { config } = await e2e.h.call('vm.get', { id: 'box' });
    expect(config?.network).toEqual([
      { mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 40022, guestPort: 22 }], mac: mac0 },
      { mode: 'internal', network: 'lab', forwards: [], mac: mac1, model: 'e1000e' },
    ]);
    expect(config?.shares).toEqual([expect.objectContaining({ tag: 'work', hostPath: shared, readOnly: true })]);
    expect(config?.clipboard).toBe(true);
    expect(config?.tpm).toBe(true);

    // Opened again, the dialog shows what was saved; eth1 moved up and the forward follows the NAT card.
    await main.toolbar('settings').click();
    await s.tab('network');
    expect(await s.field('net-1-network').inputValue()).toBe('lab');
    await s.field('net-1-up').click();
    expect(await s.field('net-0-mode').inputValue()).toBe('internal');
    await s.tab('guest');
    expect(await s.field('field-clipboard').isChecked()).toBe(true);
    await s.field('share-work-remove').click();
    await s.save();
    const after = (await e2e.h.call('vm.get', { id: 'box' })).config;
    expect(after?.network.map((n) => [n.mode, n.mac, n.forwards.length])).toEqual([
      ['internal', mac1, 0],
      ['nat', mac0, 1],
    ]);
    expect(after?.shares ?? []).toEqual([]);
    expect(e2e.h.pageErrors).toEqual([]);
  });

  it('a running VM keeps its cards and devices locked, says why, and takes a new forward live', { timeout: 180_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const page = e2e.h.page;
    const main = new MainWindowPage(page);
    await e2e.h.call('vm.create', { name: 'live', memoryMiB: 128, accel: 'tcg', directKernel: { kernel, initrd, cmdline: 'console=ttyS0' }, network: [{ mode: 'nat', forwards: [] }] });
    await e2e.h.call('vm.start', { id: 'live' });
    await main.waitForState('live', 'running');
    await main.select('live');
    await main.toolbar('settings').click();
    const s = new SettingsPage(page);
    await s.tab('network');
    expect(await s.field('settings-locked').textContent()).toMatch(/network cards are fixed until it is shut down\. Port forwards change while it runs/);
    expect(await s.field('net-0-mode').isDisabled()).toBe(true);
    expect(await s.field('add-adapter').isDisabled()).toBe(true);
    await s.field('add-forward').click();
    await s.field('forward-0-host').fill('40023');
    await s.tab('devices');
    expect(await s.field('settings-locked').textContent()).toMatch(/shut the VM down.*USB devices can be plugged in and out/);
    expect(await s.field('field-tpm').isDisabled()).toBe(true);
    expect(await s.field('field-audio').isDisabled()).toBe(true);
    const findings = await axeScan(page);
    expect(findings, JSON.stringify(findings, null, 1)).toEqual([]);
    await e2e.h.shot('42-settings-running-devices');
    await s.save();
    const info = await e2e.h.call('vm.get', { id: 'live' });
    expect(info.state).toBe('running');
    expect(info.config?.network[0]?.forwards).toEqual([{ protocol: 'tcp', hostPort: 40023, guestPort: 22 }]);
    expect(e2e.h.pageErrors).toEqual([]);
  });

  it('the wizard offers the same: limits, devices, two cards; Windows gets SATA and e1000e', { timeout: 180_000 }, async () => {
    const { kernel, initrd } = guestPaths();
    const page = e2e.h.page;
    const main = new MainWindowPage(page);
    // A fresh page: the wizard is a lazily loaded chunk, and dist/renderer may have been rebuilt since the page loaded.
    await main.open(e2e.h.server.url);
    await main.toolbar('new').click();
    const wizard = new WizardPage(page);
    await wizard.waitForStep('name');
    await wizard.setName('wiz');
    await page.getByTestId('field-os').selectOption('windows');
    await wizard.next();
    await wizard.waitForStep('media');
    await wizard.directKernel(kernel, initrd, 'console=ttyS0');
    await wizard.next();
    await wizard.waitForStep('hardware');
    await wizard.hardware({ cpus: 1, memoryMiB: 256, accel: 'tcg' });
    await page.getByTestId('limit-cpu-cap').fill('50');
    await page.getByTestId('limit-disk-iops').fill('5');
    await wizard.next();
    // A bad limit keeps the wizard on its page.
    await wizard.error('limits.diskIops').waitFor();
    await page.getByTestId('limit-disk-iops').fill('500');
    expect(await axeScan(page)).toEqual([]);
    await wizard.next();
    await wizard.waitForStep('disk');
    await wizard.diskGiB(1);
    // The Windows preset: a SATA disk; TPM stays the user's choice for Windows 10.
    expect(await page.getByTestId('field-disk-bus').inputValue()).toBe('sata');
    await page.getByTestId('field-tpm').check();
    await page.getByTestId('field-audio').selectOption('none');
    expect(await axeScan(page)).toEqual([]);
    await wizard.next();
    await wizard.waitForStep('network');
    expect(await page.getByTestId('net-0-model').inputValue()).toBe('e1000e');
    expect(await page.getByTestId('net-0-mac').inputValue()).toBe('');
    await page.getByTestId('add-adapter').click();
    await page.getByTestId('net-1-network').fill('lab');
    await page.getByTestId('field-display').selectOption('vga');
    expect(await axeScan(page)).toEqual([]);
    await wizard.next();
    await wizard.waitForStep('summary');
    expect(await page.getByTestId('wizard-summary-devices').textContent()).toBe('TPM 2.0, SATA disk, silent sound card, VGA, CPU cap 50%, 500 disk IOPS');
    await e2e.h.shot('44-wizard-summary-devices');
    await wizard.create();
    await main.waitForState('wiz', 'stopped');
    const { config } = await e2e.h.call('vm.get', { id: 'wiz' });
    expect(config).toMatchObject({ osType: 'windows', tpm: true, audio: 'none', display: 'vga', limits: { cpuCapPercent: 50, diskIops: 500 } });
    expect(config?.secureBoot).toBeFalsy();
    expect(config?.disks.map((d) => d.bus)).toEqual(['sata']);
    expect(config?.network.map((n) => [n.mode, n.network, n.model, /^52:54:00/.test(n.mac ?? '')])).toEqual([
      ['nat', undefined, 'e1000e', true],
      ['internal', 'lab', undefined, true],
    ]);
    expect(e2e.h.pageErrors).toEqual([]);
  });
});
