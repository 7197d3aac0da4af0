// "Move to host…" in a real browser against a private libvirt daemon on this machine (test/helpers/libvirtd.ts):
// the host added from the dialog (checked before it is kept), a stopped VM of the local library moved there
// with its boot files, and the list then grouped by host with the local library first. Skipped, with the reason,
// where a private libvirtd cannot run (not root, no libvirt installed).
import { describe, expect, it } from 'vitest';
import { guestPaths } from '../guest/guest.js';
import { libvirtdMissing, startLibvirtd, type PrivateLibvirtd } from '../helpers/libvirtd.js';
import { axeScan } from './axe.js';
import { useHarness } from './harness.js';
import { MainWindowPage } from './pages/MainWindowPage.js';
import { VmSurfacePage } from './pages/VmSurfacePage.js';

const missing = libvirtdMissing();
const e2e = useHarness();

describe.skipIf(!!missing)(`Move to host${missing ? ` (skipped: ${missing})` : ''}`, () => {
  it('adds a libvirt host in the dialog, moves a stopped VM there, and lists it under that host', { timeout: 300_000 }, async () => {
    let lab: PrivateLibvirtd | undefined;
    try {
      lab = await startLibvirtd();
      const { kernel, initrd } = guestPaths();
      const page = e2e.h.page;
      const main = new MainWindowPage(page);
      const surf = new VmSurfacePage(page);
      // The libvirt engine offers nat-host and none (not the isolated nat): the VM to move has what it can take.
      await e2e.h.call('vm.create', { name: 'mover', accel: 'tcg', cpus: 1, memoryMiB: 256, network: [{ mode: 'nat-host', forwards: [] }], directKernel: { kernel, initrd, cmdline: 'console=ttyS0' } });
      await e2e.h.call('vm.create', { name: 'stayer', accel: 'tcg', cpus: 1, memoryMiB: 256, directKernel: { kernel, initrd, cmdline: 'console=ttyS0' } });

      await main.open(e2e.h.server.url);
      await main.select('mover');
      // One library, no heading yet.
      expect(await page.getByTestId('vm-host-head').count()).toBe(0);

      await surf.toolbar('migrate').click();
      const move = page.getByTestId('move-dialog');
      await move.waitFor();
      await move.getByTestId('move-no-hosts').waitFor();
      await move.getByTestId('host-name').fill('lab');
      await move.getByTestId('host-uri').fill(lab.uri);
      await move.getByTestId('host-add').click();
      await move.getByTestId('move-to-lab').waitFor({ timeout: 60_000 });
      expect(await move.getByTestId('move-to-lab').locator('input').isChecked()).toBe(true);
      await move.getByTestId('move-to-lab').getByText(/reachable/).waitFor({ timeout: 30_000 });
      await move.getByTestId('move-start').uncheck();
      await move.getByTestId('move-ok').click();
      // Done: the dialog closes (with warnings it stays and lists them; an error stays in it too).
      await Promise.race([
        move.waitFor({ state: 'detached', timeout: 180_000 }),
        move.getByTestId('move-warnings').waitFor({ timeout: 180_000 }),
        move.getByTestId('error').waitFor({ timeout: 180_000 }),
      ]);
      if (await move.isVisible()) {
        await e2e.h.shot('move-00-dialog-left-open');
        expect(await move.getByTestId('error').count(), await move.innerText()).toBe(0);
        await move.getByTestId('move-cancel').click();
      }

      // The list: this computer first, then the host, with the moved VM under it.
      await page.locator('[data-testid="vm-host-head"]', { hasText: 'Host lab' }).waitFor({ timeout: 30_000 });
      const order = await page.locator('.canvas > *').evaluateAll((els) => els.map((e) => (e.getAttribute('role') === 'option' ? e.getAttribute('data-vm-name') : `[${e.textContent?.replace(/\s+\d+\s*$/, '').trim()}]`)));
      expect(order).toEqual(['[This computer]', 'stayer', '[Host lab]', 'mover']);
      const info = await e2e.h.call('vm.get', { id: 'mover' });
      expect(info.config?.host ?? info.host).toBe('lab');
      expect(info.state).toBe('stopped');
      expect(lab.virsh('list', '--all', '--name')).toContain(info.config?.name ?? 'mover');
      await main.select('mover');
      expect(await page.getByTestId('details-host').textContent()).toBe('lab');
      await e2e.h.shot('move-01-grouped-by-host');
      for (const scheme of ['dark', 'light'] as const) {
        await page.emulateMedia({ colorScheme: scheme });
        expect(await axeScan(page), scheme).toEqual([]);
      }
      expect(e2e.h.pageErrors.filter((e) => !/favicon/.test(e))).toEqual([]);
    } finally {
      await e2e.h.call('vm.delete', { id: 'mover' }).catch(() => {});
      await lab?.stop();
    }
  });
});
