// Which actions make sense in which VM state, their words, icons and confirmations: one table for the toolbar,
// the context menu, the console header and the bulk actions.
import type { Component } from 'vue';
import { ArrowRightLeft, Copy, Eraser, FileDown, HardDriveDownload, Monitor, Pause, Play, Power, RotateCcw, Settings, Square, Trash2 } from 'lucide-vue-next';
import type { VmInfo } from '../../../main/api/schema';

export type VmAction = 'settings' | 'start' | 'pause' | 'resume' | 'reset' | 'stop' | 'kill' | 'delete' | 'console' | 'clone' | 'export';

/** The VM lives on a libvirt host (issue 15), not in this computer's library. */
export function onHost(vm: VmInfo): boolean {
  const h = vm.host ?? vm.config?.host;
  return !!h && h !== 'local';
}

export function actionEnabled(action: VmAction, vm: VmInfo | null | undefined): boolean {
  if (!vm) return false;
  const s = vm.state;
  const usable = !!vm.config;
  const busy = !!vm.job;
  switch (action) {
    case 'settings':
      return usable;
    case 'start':
      // A saved VM starts where it was saved (its memory and devices come back from disk).
      return usable && !busy && (s === 'stopped' || s === 'crashed' || s === 'saved');
    case 'pause':
      return s === 'running' && !busy;
    case 'resume':
      return s === 'paused' && !busy;
    case 'reset':
    case 'stop':
      return (s === 'running' || s === 'paused') && !busy;
    case 'kill':
      return s === 'running' || s === 'paused' || s === 'starting' || s === 'stopping';
    case 'delete':
      return !busy && (s === 'stopped' || s === 'crashed' || s === 'saved');
    case 'console':
      return s === 'running' || s === 'paused';
    // Both copy disk files on this machine: a VM on a libvirt host has volumes there instead (moved back first).
    case 'clone':
      return usable && !busy && !onHost(vm) && s !== 'starting' && s !== 'stopping';
    case 'export':
      return usable && !busy && !onHost(vm) && (s === 'stopped' || s === 'crashed');
  }
}

export interface ActionInfo {
  label: string;
  icon: Component;
  /** Tooltip: what it does, in a sentence. */
  title: string;
  /** Red: data or work may be lost. */
  destructive?: boolean;
}

export const ACTIONS: Record<VmAction, ActionInfo> = {
  settings: { label: 'Settings', icon: Settings, title: 'Change the name, hardware, boot media and network' },
  start: { label: 'Start', icon: Play, title: 'Start the virtual machine (a saved one resumes where it was saved)' },
  pause: { label: 'Pause', icon: Pause, title: 'Freeze the guest where it is' },
  resume: { label: 'Resume', icon: Play, title: 'Let the paused guest run again' },
  reset: { label: 'Reset', icon: RotateCcw, title: 'Hard reset, like the reset button: unsaved guest data is lost', destructive: true },
  stop: { label: 'Shut down', icon: Square, title: 'Ask the guest to power off (ACPI power button)' },
  kill: { label: 'Power off', icon: Power, title: 'Pull the plug: unsaved guest data is lost', destructive: true },
  delete: { label: 'Delete', icon: Trash2, title: 'Delete the virtual machine and its files', destructive: true },
  console: { label: 'Console', icon: Monitor, title: 'Open the screen and serial console' },
  clone: { label: 'Clone…', icon: Copy, title: 'Make a copy of this virtual machine' },
  export: { label: 'Export…', icon: FileDown, title: 'Save the virtual machine to a .vmdesk archive or an OVA appliance' },
};

/** The confirmation a destructive power action asks for, for one VM or several. */
export function confirmation(action: 'kill' | 'reset', names: string[]): { title: string; body: string; ok: string } {
  const who = names.length === 1 ? `“${names[0]}”` : `${names.length} virtual machines`;
  if (action === 'kill') {
    return {
      title: `Power off ${who}?`,
      body: 'Like pulling the plug: the guest gets no chance to save its work, and anything unsaved in it is lost. “Shut down” asks the guest to power off cleanly instead.',
      ok: 'Power off',
    };
  }
  return {
    title: `Reset ${who}?`,
    body: 'Like pressing the reset button: the guest restarts at once, and anything unsaved in it is lost.',
    ok: 'Reset',
  };
}

// ---- issue 12/15 verbs: save state, discard it, move to another host ----------------------------------------
// Kept apart from VmAction: the main window dispatches those; the toolbar and the details pane run these
// themselves (each needs its own dialog: a confirmation, the move dialog).

export type VmExtraAction = 'suspend' | 'discard-state' | 'migrate';

/** Mirrors main/api/states.ts: suspend from running/paused, discard from saved, move when stopped or running. */
export function extraEnabled(action: VmExtraAction, vm: VmInfo | null | undefined): boolean {
  if (!vm || !vm.config || vm.job) return false;
  const s = vm.state;
  switch (action) {
    case 'suspend':
      return (s === 'running' || s === 'paused') && vm.config.engine === 'qemu' && !vm.config.host;
    case 'discard-state':
      return s === 'saved';
    case 'migrate':
      return s === 'stopped' || s === 'crashed' || s === 'running' || s === 'paused';
  }
}

export const EXTRA_ACTIONS: Record<VmExtraAction, ActionInfo> = {
  suspend: { label: 'Save state', icon: HardDriveDownload, title: 'Save the machine state: memory and devices go to disk and the VM stops; Start resumes it there' },
  'discard-state': { label: 'Discard saved state…', icon: Eraser, title: 'Forget the saved memory: the next start boots afresh, like after a power cut', destructive: true },
  migrate: { label: 'Move to host…', icon: ArrowRightLeft, title: 'Move the virtual machine to another host (libvirt), or back to this computer' },
};

/** The confirmation before a saved state is thrown away. */
export function discardConfirmation(name: string): { title: string; body: string; ok: string } {
  return {
    title: `Discard the saved state of “${name}”?`,
    body: 'The memory and device state saved on disk are deleted: the next start boots the guest afresh, and anything it had not written to its disks is lost, as after a power cut.',
    ok: 'Discard saved state',
  };
}
