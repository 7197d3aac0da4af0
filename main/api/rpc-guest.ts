// Guest integration in the contract (issue 12): shared folders and the guest agent's report (the clipboard
// travels inside the VNC stream the GUI already has: QEMU's clipboard extension, spoken by noVNC).
// Part of the one contract: rpc.ts spreads GuestRpcMethods into AllRpcMethods.
import { z } from 'zod';
import { ShareDriver, ShareTag, SharedFolder, VmInfo, VmState } from './schema.js';

const VmRef = z.string().min(1, 'a VM name or id is required').max(128);
const AbsPath = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => p.startsWith('/'), 'path must be absolute')
  .refine((p) => !/[\u0000-\u001f\u007f]/.test(p), 'path must not contain newlines or control characters');

/** How a Linux guest mounts a share. */
export function mountCommand(s: { tag: string; driver: 'virtiofs' | '9p'; readOnly: boolean }, mountPoint = `/mnt/${s.tag}`): string {
  return s.driver === 'virtiofs'
    ? `mount -t virtiofs${s.readOnly ? ' -o ro' : ''} ${s.tag} ${mountPoint}`
    : `mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144${s.readOnly ? ',ro' : ''} ${s.tag} ${mountPoint}`;
}

export const ShareListingSchema = z.object({
  id: z.string(),
  name: z.string(),
  state: VmState,
  shares: z.array(SharedFolder.extend({ mount: z.string(), active: z.object({ driver: ShareDriver }).optional() })),
  notes: z.array(z.string()),
});

export const GuestAgentReportSchema = z.object({
  /** The agent answered; otherwise `reason` says why not (no channel, no agent running, no answer). */
  ok: z.boolean(),
  reason: z.string().optional(),
  hostname: z.string().optional(),
  os: z.string().optional(),
  interfaces: z
    .array(z.object({ name: z.string(), mac: z.string().optional(), addresses: z.array(z.object({ address: z.string(), prefix: z.number(), family: z.enum(['ipv4', 'ipv6']) })) }))
    .default([]),
});
export type GuestAgentReport = z.infer<typeof GuestAgentReportSchema>;

export const GuestRpcMethods = {
  /** The VM's shared folders, with the command that mounts each in a Linux guest and the driver a running guest has. */
  'share.list': { params: z.object({ id: VmRef }).strict(), result: ShareListingSchema },
  /** Shares a host folder (checked, kept by its real path); tag defaults to the folder's name. Stopped VMs only. */
  'share.add': {
    params: z.object({ id: VmRef, hostPath: AbsPath, tag: ShareTag.optional(), readOnly: z.boolean().optional(), driver: ShareDriver.optional() }).strict(),
    result: VmInfo,
  },
  'share.remove': { params: z.object({ id: VmRef, tag: ShareTag }).strict(), result: VmInfo },
  /** What the QEMU guest agent reports now: host name, OS, interfaces and addresses. */
  'vm.guestAgent': { params: z.object({ id: VmRef }).strict(), result: GuestAgentReportSchema },
} as const;

export type GuestRpcMethod = keyof typeof GuestRpcMethods;
