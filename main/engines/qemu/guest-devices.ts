// The guest integration devices on QEMU's command line (issue 12): the display adapter, and one virtio-serial
// controller carrying the guest agent's port (org.qemu.guest_agent.0, a unix socket the daemon talks to) and
// the clipboard's (com.redhat.spice.0, QEMU's own qemu-vdagent, which the VNC server's clipboard extension
// reaches). Sockets live in the VM's private runtime dir.
import { join } from 'node:path';
import type { VmConfig } from '../../api/schema.js';
import { optValue } from './args.js';

/** The guest agent's chardev socket (QEMU listens; the daemon connects per request). */
export function agentSocket(runtimeDir: string): string {
  return join(runtimeDir, 'qga.sock');
}

/** The chardev id of the agent's channel (query-chardev tells whether the guest has the port open). */
export const AGENT_CHARDEV = 'qga0';

export function displayDevice(config: VmConfig): string {
  // virtio-vga keeps a VGA-compatible mode for firmware and guests without its driver; with the driver, the
  // guest follows the size the console asks for (VNC SetDesktopSize).
  return config.display === 'virtio' ? 'virtio-vga,id=video0' : 'VGA,id=video0';
}

export function guestChannelArgs(config: VmConfig, runtimeDir: string): string[] {
  if (!config.guestAgent && !config.clipboard) return [];
  const args = ['-device', 'virtio-serial-pci,id=vser0'];
  if (config.guestAgent) {
    args.push('-chardev', `socket,id=${AGENT_CHARDEV},path=${optValue('guest agent socket path', agentSocket(runtimeDir))},server=on,wait=off`);
    args.push('-device', `virtserialport,bus=vser0.0,nr=1,chardev=${AGENT_CHARDEV},name=org.qemu.guest_agent.0,id=qga-port`);
  }
  if (config.clipboard) {
    // mouse=off: the USB tablet stays the pointer; the agent carries the clipboard only.
    args.push('-chardev', 'qemu-vdagent,id=vdagent0,name=vdagent,clipboard=on,mouse=off');
    args.push('-device', 'virtserialport,bus=vser0.0,nr=2,chardev=vdagent0,name=com.redhat.spice.0,id=vdagent-port');
  }
  return args;
}
