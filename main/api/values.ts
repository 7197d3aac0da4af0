// Plain values of the contract that front doors need without loading zod (the CLI starts faster without it):
// the enumerations the schemas are built from, the protocol version, size parsing.

/** The wire protocol's version: a client speaking another one gets an idle daemon restarted or is told. */
export const PROTOCOL_VERSION = 2;

/** Image formats a disk may have; `vpc` is VHD (QEMU's name). Every one is opened with its format stated. */
export const DISK_FORMATS = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx', 'vpc'] as const;
/** How the guest sees a disk: virtio (fast, needs drivers on Windows), SATA (AHCI), IDE or SCSI (virtio-scsi). */
export const DISK_BUSES = ['virtio', 'sata', 'ide', 'scsi'] as const;
/** The guest's network card: virtio-net, or models that installers and appliances find without drivers. */
export const NIC_MODELS = ['virtio-net', 'e1000e', 'e1000', 'rtl8139'] as const;

/** Sizes as users type them: 512M, 8G, 1T, or bare bytes. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$/i.exec(text);
  if (!m) throw new Error(`invalid size "${text}" (use e.g. 512M, 8G)`);
  const unit = (m[2] ?? 'B').toUpperCase()[0] as 'B' | 'K' | 'M' | 'G' | 'T';
  const mult = { B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[unit];
  const bytes = Math.round(Number(m[1]) * mult);
  if (!Number.isSafeInteger(bytes)) throw new Error(`invalid size "${text}"`);
  return bytes;
}

/** A CPU list as taskset and cgroups write it ("0-3,6"), to sorted unique numbers; bounded so hostile input stays cheap. */
export function parseCpuList(text: string, max = 4095): number[] {
  const t = text.trim();
  if (!t || t.length > 1024 || !/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(t)) throw new Error(`invalid CPU list "${text.slice(0, 64)}" (use e.g. 0,2-3)`);
  const out = new Set<number>();
  for (const part of t.split(',')) {
    const [a, b] = part.split('-').map(Number) as [number, number | undefined];
    const hi = b ?? a;
    if (a > max || hi > max) throw new Error(`CPU ${Math.max(a, hi)} is past the largest CPU number VMDesk accepts (${max})`);
    if (hi < a) throw new Error(`invalid CPU range "${part}" (the first number must be the smaller)`);
    for (let c = a; c <= hi; c++) out.add(c);
  }
  return [...out].sort((x, y) => x - y);
}

/** The shortest CPU list text for numbers: [0,1,2,5] -> "0-2,5". */
export function formatCpuList(cpus: readonly number[]): string {
  const s = [...new Set(cpus)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    parts.push(j > i ? `${s[i]}-${s[j]}` : String(s[i]));
    i = j + 1;
  }
  return parts.join(',');
}
