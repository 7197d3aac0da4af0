// The desktop habits' decisions, without Electron: which files a launch opens (and with which flow), the tray's
// menu, which jobs end in a notification, and the About window's versions.
import { describe, expect, it } from 'vitest';
import { openRequestFor, openRequestsFromArgv, MAX_OPEN_FILES } from '../../main/electron/open-files.js';
import { trayMenuTemplate, trayTooltip, wantTray, TRAY_MAX_VMS } from '../../main/electron/tray-menu.js';
import { JobWatcher } from '../../main/electron/notifications.js';
import { aboutPanelOptions } from '../../main/electron/about.js';

const exists = (files: string[]) => (p: string) => files.includes(p);

describe('files opened with VMDesk', () => {
  it('imports appliances and archives, creates from an ISO, ignores the rest', () => {
    const have = exists(['/d/a.ova', '/d/b.OVF', '/w/c.vmdesk', '/d/e.iso', '/d/f.txt', '/d/g.qcow2']);
    const argv = ['/opt/VMDesk/vmdesk', '--no-sandbox', '/d/a.ova', '/d/b.OVF', 'c.vmdesk', '/d/e.iso', '/d/f.txt', '/d/g.qcow2', '/d/missing.iso', '--enable-features=x'];
    expect(openRequestsFromArgv(argv, '/w', have)).toEqual([
      { action: 'import', path: '/d/a.ova' },
      { action: 'import', path: '/d/b.OVF' },
      { action: 'import', path: '/w/c.vmdesk' },
      { action: 'create', path: '/d/e.iso' },
    ]);
  });

  it('takes file:// URLs (some file managers pass them), drops duplicates, bounds the count', () => {
    expect(openRequestFor('file:///d/my%20disk.iso', '/', exists(['/d/my disk.iso']))).toEqual({ action: 'create', path: '/d/my disk.iso' });
    const many = Array.from({ length: 30 }, (_, i) => `/d/${i % 20}.iso`);
    const got = openRequestsFromArgv(['exe', ...many], '/', () => true);
    expect(got).toHaveLength(MAX_OPEN_FILES);
    expect(new Set(got.map((g) => g.path)).size).toBe(got.length);
    expect(openRequestFor('/d/x\0.iso', '/', () => true)).toBeUndefined();
    expect(openRequestFor('a'.repeat(5000) + '.iso', '/', () => true)).toBeUndefined();
  });
});

describe('tray', () => {
  const vm = (name: string, state: string) => ({ id: `id-${name}`, name, state }) as never;

  it('lists running VMs first with a way to stop them, stopped ones with a way to start them', () => {
    const calls: string[] = [];
    const act = { start: (id: string) => calls.push(`start ${id}`), stop: (id: string) => calls.push(`stop ${id}`), console: (id: string) => calls.push(`console ${id}`), show: () => calls.push('show'), quit: () => calls.push('quit') };
    const t = trayMenuTemplate([vm('b', 'stopped'), vm('a & co', 'running'), vm('c', 'saving')], act);
    expect(t.map((i) => i.label ?? i.type)).toEqual(['a && co — running', 'b — stopped', 'c — saving', 'separator', 'Open VMDesk', 'Quit VMDesk']);
    t[0]!.submenu![0]!.click!();
    t[0]!.submenu![1]!.click!();
    t[1]!.submenu![0]!.click!();
    expect(t[2]!.submenu![0]).toMatchObject({ label: 'Start', enabled: false });
    expect(t[1]!.submenu![1]).toMatchObject({ enabled: false });
    t.at(-1)!.click!();
    expect(calls).toEqual(['stop id-a & co', 'console id-a & co', 'start id-b', 'quit']);
    expect(trayTooltip([vm('a', 'running'), vm('b', 'paused')])).toBe('VMDesk: 2 VMs running');
    const lots = trayMenuTemplate(Array.from({ length: 40 }, (_, i) => vm(`v${i}`, 'stopped')), act);
    expect(lots.filter((i) => i.type === 'submenu')).toHaveLength(TRAY_MAX_VMS);
    expect(lots.some((i) => i.label === `${40 - TRAY_MAX_VMS} more in VMDesk…`)).toBe(true);
  });

  it('is optional on Linux desktops without a tray', () => {
    expect(wantTray('linux', { XDG_CURRENT_DESKTOP: 'KDE' })).toBe(true);
    expect(wantTray('linux', { XDG_CURRENT_DESKTOP: 'GNOME' })).toBe(false);
    expect(wantTray('linux', { XDG_CURRENT_DESKTOP: 'ubuntu:GNOME' })).toBe(true);
    expect(wantTray('linux', { XDG_CURRENT_DESKTOP: 'GNOME', VMDESK_TRAY: '1' })).toBe(true);
    expect(wantTray('darwin', { VMDESK_TRAY: '0' })).toBe(false);
    expect(wantTray('darwin', {})).toBe(true);
  });
});

describe('notifications', () => {
  it('tells the end of long jobs only, with the VM\'s name and any error', () => {
    let now = 0;
    const w = new JobWatcher(() => now, 10_000);
    const names = (id: string) => (id === 'v1' ? 'web' : undefined);
    expect(w.onEvent({ type: 'progress', opId: 'quick', id: 'v1', phase: 'taking snapshot' }, names)).toBeUndefined();
    expect(w.onEvent({ type: 'progress', opId: 'long', id: 'v1', phase: 'exporting' }, names)).toBeUndefined();
    now = 2_000;
    expect(w.onEvent({ type: 'progress', opId: 'quick', phase: 'taking snapshot', done: true }, names)).toBeUndefined();
    now = 60_000;
    expect(w.onEvent({ type: 'progress', opId: 'long', phase: 'exporting', done: true }, names)).toEqual({ title: 'VMDesk: job finished', body: '“web”: exporting finished' });
    expect(w.onEvent({ type: 'progress', opId: 'bad', phase: 'importing' }, names)).toBeUndefined();
    now = 120_000;
    expect(w.onEvent({ type: 'progress', opId: 'bad', phase: 'importing', done: true, error: 'disk full' }, names)).toEqual({ title: 'VMDesk: a job failed', body: 'importing failed: disk full' });
    // An end never seen begin (the app started meanwhile) is not notified.
    expect(w.onEvent({ type: 'progress', opId: 'unknown', phase: 'x', done: true }, names)).toBeUndefined();
    expect(w.onEvent({ type: 'vm-deleted', id: 'v1' }, names)).toBeUndefined();
  });
});

describe('about', () => {
  it('shows VMDesk\'s build, the daemon\'s and the versions underneath', () => {
    const o = aboutPanelOptions({ version: '1.2.3', build: 'abc', versions: { electron: '39.0.0', chrome: '142.0', node: '22.1.0', v8: '14.2' }, daemon: { app: '1.2.3', build: 'abc', pid: 42, version: 2 } });
    expect(o).toMatchObject({ applicationName: 'VMDesk', applicationVersion: '1.2.3', version: 'build abc' });
    expect(o.credits).toContain('Electron 39.0.0');
    expect(o.credits).toContain('Chromium 142.0');
    expect(o.credits).toContain('Node 22.1.0');
    expect(o.credits).toContain('pid 42');
    expect(aboutPanelOptions({ version: '1', build: 'b', versions: {} }).credits).toContain('Daemon: not connected');
  });
});
