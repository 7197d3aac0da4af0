// The tray (status) icon's menu: the library's VMs, running ones first, each with start or stop and its console;
// then the main window and quit. Pure: it returns a template whose clicks call the actions given.
import type { VmInfo } from '../api/schema.js';

export interface TrayActions {
  start(id: string): void;
  stop(id: string): void;
  console(id: string): void;
  show(): void;
  quit(): void;
}

export interface TrayItem {
  label?: string;
  type?: 'normal' | 'separator' | 'submenu';
  enabled?: boolean;
  submenu?: TrayItem[];
  click?: () => void;
}

/** VMs listed at most (the rest are a count); a tray menu is not a VM manager. */
export const TRAY_MAX_VMS = 15;

const LIVE = new Set(['running', 'paused', 'starting']);

/** Menu labels treat & as a mnemonic marker on some platforms: a VM's name is shown as it is. */
function label(s: string): string {
  return s.replace(/&/g, '&&').slice(0, 60);
}

export function trayTooltip(vms: readonly VmInfo[]): string {
  const n = vms.filter((v) => LIVE.has(v.state)).length;
  return n === 0 ? 'VMDesk: no VM running' : `VMDesk: ${n} VM${n === 1 ? '' : 's'} running`;
}

export function trayMenuTemplate(vms: readonly VmInfo[], act: TrayActions): TrayItem[] {
  const sorted = [...vms].sort((a, b) => Number(LIVE.has(b.state)) - Number(LIVE.has(a.state)) || a.name.localeCompare(b.name));
  const items: TrayItem[] = sorted.slice(0, TRAY_MAX_VMS).map((vm) => {
    const live = LIVE.has(vm.state);
    const busy = !live && vm.state !== 'stopped';
    return {
      label: `${label(vm.name)} — ${vm.state}`,
      type: 'submenu',
      submenu: [
        live ? { label: 'Shut down', click: () => act.stop(vm.id) } : { label: 'Start', enabled: !busy, click: () => act.start(vm.id) },
        { label: 'Show console', enabled: live, click: () => act.console(vm.id) },
      ],
    };
  });
  if (!vms.length) items.push({ label: 'No virtual machines', enabled: false });
  if (sorted.length > TRAY_MAX_VMS) items.push({ label: `${sorted.length - TRAY_MAX_VMS} more in VMDesk…`, click: () => act.show() });
  items.push({ type: 'separator' }, { label: 'Open VMDesk', click: () => act.show() }, { label: 'Quit VMDesk', click: () => act.quit() });
  return items;
}

/**
 * Whether to show a tray icon. On Linux it needs a StatusNotifier host (KDE, most desktops; GNOME only with
 * the AppIndicator extension), which Electron cannot detect: VMDESK_TRAY=0 turns it off, VMDESK_TRAY=1 on.
 */
export function wantTray(platform: NodeJS.Platform, env: NodeJS.ProcessEnv): boolean {
  if (env.VMDESK_TRAY === '0') return false;
  if (env.VMDESK_TRAY === '1') return true;
  if (platform !== 'linux') return true;
  // A GNOME session without an indicator extension shows nothing: skip unless asked for.
  return !/gnome/i.test(env.XDG_CURRENT_DESKTOP ?? '') || /ubuntu|unity/i.test(env.XDG_CURRENT_DESKTOP ?? '');
}
