// Presets for new VMs (vmdesk create --preset windows11): what each fills in, applied to a create request
// before its defaults, so fields the request gives win. Pure: the RPC boundary and the core both apply it
// (it is idempotent), and clients may show the summary.
import { ErrorCode, VmdeskError } from './errors.js';

export type VmPresetName = 'windows11';

const GiB = 1024 ** 3;

/** What each preset sets when the request does not say otherwise. */
export const PRESETS: Record<VmPresetName, { summary: string; fields: Record<string, unknown> }> = {
  windows11: {
    summary: 'UEFI with Secure Boot, TPM 2.0, SATA disk, e1000e network card, 2 CPUs, 4 GiB memory, 64 GiB disk',
    fields: {
      osType: 'windows',
      firmware: 'uefi',
      secureBoot: true,
      tpm: true,
      cpus: 2,
      memoryMiB: 4096,
      diskBytes: 64 * GiB,
      diskBus: 'sata',
      usbTablet: true,
      network: [{ mode: 'nat', forwards: [], model: 'e1000e' }],
    },
  },
};

/**
 * Fills in a create request's preset before validation: fields the request gives win, except those that
 * would make the preset pointless (Windows 11 refuses to install without UEFI), which are refused.
 */
export function applyPreset(input: unknown): unknown {
  if (!input || typeof input !== 'object') return input;
  const req = input as Record<string, unknown>;
  const preset = req.preset;
  if (preset === undefined) return input;
  if (typeof preset !== 'string' || !(preset in PRESETS)) throw new VmdeskError(ErrorCode.invalid, `unknown preset "${String(preset)}" (presets: ${Object.keys(PRESETS).join(', ')})`);
  if (req.firmware !== undefined && req.firmware !== 'uefi') throw new VmdeskError(ErrorCode.invalid, `the ${preset} preset needs UEFI firmware (Windows 11 does not install on BIOS); leave out --firmware ${String(req.firmware)}`);
  if (req.directKernel !== undefined && req.directKernel !== null) throw new VmdeskError(ErrorCode.invalid, `the ${preset} preset is for installing from a disc; leave out --kernel`);
  const out: Record<string, unknown> = { ...req };
  for (const [k, v] of Object.entries(PRESETS[preset as VmPresetName].fields)) if (out[k] === undefined) out[k] = v;
  // A disk attached instead of a new one: no empty 64 GiB disk next to it.
  if (req.diskBytes === undefined && Array.isArray(req.attachDisks) && req.attachDisks.length) delete out.diskBytes;
  return out;
}


/**
 * applyPreset for a zod preprocess: a conflict becomes an issue on `preset` (forms show it by the field; a
 * safeParse never throws), and the input goes on unchanged.
 */
export function presetPreprocess(input: unknown, ctx: { addIssue(issue: { code: 'custom'; message: string; path?: PropertyKey[] }): void }): unknown {
  try {
    return applyPreset(input);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message, path: ['preset'] });
    return input;
  }
}
