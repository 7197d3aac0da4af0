// Guest integration settings in the core (issue 12): what a new VM gets, what a settings patch changes, what an
// engine's capabilities refuse (never its name), and the guest agent's report for clients.
import type { CreateVmRequest, VmConfig, VmSettingsPatch } from '../api/schema.js';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import type { GuestAgentReport } from '../api/rpc-guest.js';
import type { EngineModule, VmRuntime } from '../engines/engine.js';

/**
 * New VMs get a guest agent channel where the engine has one (harmless: the host only asks), virtio-vga for
 * Linux guests where the engine can resize the display (it falls back to VGA modes without a driver), and no
 * clipboard unless asked for: the guest is untrusted.
 */
export function guestDefaults(req: Pick<CreateVmRequest, 'clipboard' | 'guestAgent' | 'display' | 'osType'>, eng: EngineModule): Partial<VmConfig> {
  const g = eng.capabilities.guest;
  const out: Partial<VmConfig> = {};
  const agent = req.guestAgent ?? !!g?.agent;
  if (agent) out.guestAgent = true;
  if (req.clipboard) out.clipboard = true;
  const display = req.display ?? (g?.resize && (req.osType ?? 'linux') === 'linux' ? 'virtio' : undefined);
  if (display) out.display = display;
  return out;
}

/** The guest fields of a settings patch, applied to `next` (false and vga are kept as absent: the default). */
export function applyGuestPatch(next: VmConfig, patch: VmSettingsPatch): void {
  if (patch.clipboard !== undefined) {
    if (patch.clipboard) next.clipboard = true;
    else delete next.clipboard;
  }
  if (patch.guestAgent !== undefined) {
    if (patch.guestAgent) next.guestAgent = true;
    else delete next.guestAgent;
  }
  if (patch.display !== undefined) {
    if (patch.display === 'virtio') next.display = 'virtio';
    else delete next.display;
  }
}

/** Why guest devices wait for the guest to be shut down. */
export const GUEST_STOPPED_ONLY: Record<string, string> = {
  clipboard: 'the clipboard channel is a device the guest finds at boot',
  guestAgent: 'the guest agent channel is a device the guest finds at boot',
  display: 'the display adapter is fixed at boot',
};

export function checkGuestCapabilities(config: VmConfig, eng: EngineModule): void {
  const g = eng.capabilities.guest;
  const lacks = (what: string) => new VmdeskError(ErrorCode.invalid, `the ${eng.kind} engine has no ${what}`);
  if (config.clipboard && !g?.clipboard) throw lacks('shared clipboard (it has no graphical console)');
  if (config.display === 'virtio' && !g?.resize) throw lacks('resizable display (virtio-vga)');
  if (config.guestAgent && !g?.agent) throw lacks('guest agent channel');
  for (const s of config.shares ?? []) {
    if (!g?.shares.length) throw lacks('shared folders');
    if (s.driver && !g.shares.includes(s.driver)) throw lacks(`${s.driver} shared folders here (shared folder ${s.tag})`);
  }
}

/** What the guest agent of a running VM reports, in the contract's words. */
export async function guestAgentReport(name: string, rt: VmRuntime | undefined): Promise<GuestAgentReport> {
  if (!rt) return { ok: false, reason: `"${name}" is not running`, interfaces: [] };
  if (!rt.guestAgent) return { ok: false, reason: `"${name}" runs on an engine without a guest agent channel`, interfaces: [] };
  const a = await rt.guestAgent();
  return a.ok ? { ok: true, interfaces: a.interfaces, ...(a.hostname ? { hostname: a.hostname } : {}), ...(a.os ? { os: a.os } : {}) } : { ok: false, reason: a.reason, interfaces: [] };
}
