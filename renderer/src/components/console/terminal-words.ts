// What the terminal tab says about its stream: how it reached the guest, and why it ended.
import type { RpcError } from '../../../../main/api/rpc';

export function terminalOpenedText(via: 'ssh' | 'serial', detail?: string): string {
  if (via === 'ssh') return `SSH session${detail ? ` as ${detail}` : ''} with the key VMDesk made for this VM.`;
  return 'This VM has no SSH access (only VMs made from a cloud image get a key and a forward): this is its serial console instead. Press Enter if nothing shows.';
}

export function terminalEndText(end: { exitCode?: number | null; signal?: number | null; error?: RpcError }): string {
  if (end.error) return end.error.code === 'ECANCELED' ? 'The terminal was closed.' : `The terminal could not open or ended: ${end.error.message}`;
  if (end.signal) return `The session ended (signal ${end.signal}).`;
  if (end.exitCode !== undefined && end.exitCode !== null) return end.exitCode === 0 ? 'The session ended.' : `The session ended with exit status ${end.exitCode}.`;
  return 'The session ended.';
}

/**
 * xterm.js answers a program's terminal queries by itself (cursor position, device attributes, sizes). Two
 * views of one serial port (the Serial tab and the Terminal tab's serial fallback) would both answer, and the
 * second answer reaches the guest as typed garbage: only the view on screen answers.
 */
export function isTerminalReport(data: string): boolean {
  return /^(\x1b\[\??[\d;]*[Rcn]|\x1b\[>[\d;]*c|\x1b\[[\d;]*t|\x1b\][\d;]*[^\x07\x1b]*(\x07|\x1b\\)|\x1bP[^\x1b]*\x1b\\|\x1b\[I|\x1b\[O)+$/.test(data);
}
