// What VMDesk knows of a guest's network: its addresses and how to reach its SSH server.
//
// Addresses: a NAT guest (passt or QEMU's user network) is handed 10.0.2.15/24 by the NAT's own DHCP
// server, the only client on its private network, so that is the address its DHCP lease has. It is reported
// as such (source "nat-dhcp"): VMDesk has not asked the guest. Where the guest's QEMU guest agent answers,
// its own addresses (loopback left out) and host name are reported instead (source "guest-agent").
import path from 'node:path';
import type { GuestInfo } from '../../api/images.js';
import type { Core } from '../core.js';
import { readImageRecord } from './create.js';

const ALIVE = new Set(['starting', 'running', 'paused', 'stopping']);

export interface SshTarget {
  host: string;
  port: number;
  user: string;
  keyFile: string;
  knownHosts: string;
}

/** How to reach a VM's SSH server: a VM made from a cloud image with its key, and a TCP forward to port 22. */
export async function sshTarget(core: Core, ref: string): Promise<SshTarget | undefined> {
  const e = await core.usable(ref);
  const rec = await readImageRecord(e.dir);
  const fwd = e.config.network.filter((n) => n.mode !== 'none').flatMap((n) => n.forwards).find((f) => f.protocol === 'tcp' && f.guestPort === 22);
  if (!rec?.ssh || !fwd) return undefined;
  return { host: '127.0.0.1', port: fwd.hostPort, user: rec.ssh.user, keyFile: path.join(e.dir, rec.ssh.keyFile), knownHosts: path.join(e.dir, 'ssh', 'known_hosts') };
}

export async function guestInfo(core: Core, ref: string): Promise<GuestInfo> {
  const info = await core.get(ref);
  const notes: string[] = [];
  const addresses: GuestInfo['addresses'] = [];
  const running = ALIVE.has(info.state);
  const nat = info.config?.network.some((n) => n.mode === 'nat' || n.mode === 'nat-host') ?? false;
  const agent = running ? await core.guestAgent(info.id).catch((e: Error) => ({ ok: false as const, reason: e.message, interfaces: [] })) : undefined;
  const fromAgent = agent?.ok ? agent.interfaces.filter((i) => i.name !== 'lo').flatMap((i) => i.addresses.filter((a) => !a.address.startsWith('127.') && a.address !== '::1').map((a) => ({ ...a, interface: i.name, source: 'guest-agent' as const }))) : [];
  let hostname: string | undefined;
  if (agent?.ok) {
    hostname = agent.hostname;
    addresses.push(...fromAgent);
    if (!fromAgent.length) notes.push('the guest agent reports no address but loopback');
  } else if (running && nat) {
    addresses.push({ address: '10.0.2.15', prefix: 24, family: 'ipv4', interface: 'NAT adapter 0', source: 'nat-dhcp' });
    notes.push(`10.0.2.15 is what the NAT's DHCP server hands the guest (the only client on its private network); VMDesk has not asked the guest (${agent?.reason ?? 'no guest agent'})`);
  } else if (!running) notes.push('the VM is not running');
  else notes.push('the VM has no NAT network adapter');
  const ssh = await sshTarget(core, info.id).catch(() => undefined);
  if (!ssh && info.config) notes.push('no SSH key or forward: vmdesk shell uses the serial console');
  return { addresses, ...(hostname ? { hostname } : {}), ...(ssh ? { ssh: { host: ssh.host, port: ssh.port, user: ssh.user, keyFile: ssh.keyFile } } : {}), notes };
}
