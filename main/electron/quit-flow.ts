// What to do with running VMs when the app quits: ask once, then keep them running or shut them down.
import type { VmInfo } from '../api/schema.js';

export const QUIT_BUTTONS = ['Keep running in the background', 'Shut them down', 'Cancel'] as const;
export type QuitChoice = 'keep' | 'shutdown' | 'cancel';

export function choiceFromButton(index: number): QuitChoice {
  return index === 0 ? 'keep' : index === 1 ? 'shutdown' : 'cancel';
}

export function runningVms(list: VmInfo[]): VmInfo[] {
  return list.filter((v) => v.state === 'running' || v.state === 'paused' || v.state === 'starting');
}

export function quitQuestion(running: VmInfo[]): { message: string; detail: string } {
  const names = running.map((v) => `“${v.name}”`);
  const shown = names.length > 5 ? [...names.slice(0, 5), `and ${names.length - 5} more`] : names;
  return {
    message: running.length === 1 ? `${names[0]} is still running.` : `${running.length} virtual machines are still running.`,
    detail: `${shown.join(', ')}. They can keep running without VMDesk (reopen VMDesk or use \`vmdesk\` to reach them), or be shut down now.`,
  };
}
