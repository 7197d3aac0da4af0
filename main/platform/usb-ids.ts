// Names for USB vendor and product ids from the USB ID database (usb.ids, from the usbutils or hwdata
// package) when the host has it. The file is read with bounds (size, line length, entries) and only the
// vendor section is parsed; without it devices are shown by their ids and their own strings.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

export const USB_IDS_PATHS = ['/usr/share/misc/usb.ids', '/usr/share/hwdata/usb.ids', '/usr/share/usb.ids', '/var/lib/usbutils/usb.ids'];
/** usb.ids is under 1 MiB; anything past this is not it. */
const MAX_FILE_BYTES = 8 * 1024 * 1024;
const MAX_LINE = 512;
const MAX_NAME = 128;

export interface UsbNames {
  vendor?: string;
  product?: string;
}

/** A name as shown: printable, trimmed, bounded. */
export function cleanName(s: string): string | undefined {
  const t = s.replace(/[\u0000-\u001f\u007f]/g, ' ').trim().slice(0, MAX_NAME);
  return t || undefined;
}

/**
 * Looks up the names of the given vendor:product pairs (lower-case hex). Lines are `vvvv  Vendor`,
 * `\tpppp  Product` and `\t\t...` (interfaces, skipped); the vendor list ends where the class section
 * (`C 00 ...`) or another keyed section starts.
 */
export function parseUsbIds(text: string, wanted: readonly { vendorId: string; productId: string }[]): Map<string, UsbNames> {
  const vendors = new Set(wanted.map((w) => w.vendorId));
  const out = new Map<string, UsbNames>();
  let vendor: string | undefined;
  let vendorName: string | undefined;
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const line = text.slice(start, Math.min(end, start + MAX_LINE));
    start = end + 1;
    if (!line || line.startsWith('#')) continue;
    const v = /^([0-9a-fA-F]{4}) {2}(.*)$/.exec(line);
    if (v) {
      vendor = v[1]!.toLowerCase();
      vendorName = vendors.has(vendor) ? cleanName(v[2]!) : undefined;
      if (vendorName) for (const w of wanted) if (w.vendorId === vendor) out.set(`${w.vendorId}:${w.productId}`, { ...out.get(`${w.vendorId}:${w.productId}`), vendor: vendorName });
      continue;
    }
    const p = /^\t([0-9a-fA-F]{4}) {2}(.*)$/.exec(line);
    if (p) {
      if (!vendor || !vendorName) continue;
      const key = `${vendor}:${p[1]!.toLowerCase()}`;
      const entry = out.get(key);
      if (entry) entry.product = cleanName(p[2]!);
      continue;
    }
    if (line.startsWith('\t')) continue;
    // "C 00  ...", "AT ...", "HID ...": the vendor list is over.
    if (/^[A-Z]+ /.test(line)) break;
  }
  return out;
}

/** The database's text, or undefined when the host has none (or it is not a plausible usb.ids). */
export function readUsbIds(paths: readonly string[] = process.env.VMDESK_USB_IDS ? [process.env.VMDESK_USB_IDS] : USB_IDS_PATHS): { file: string; text: string } | undefined {
  for (const file of paths) {
    let fd: number | undefined;
    try {
      fd = openSync(file, 'r');
      const st = fstatSync(fd);
      if (!st.isFile() || st.size > MAX_FILE_BYTES) continue;
      const buf = Buffer.alloc(st.size);
      let got = 0;
      while (got < buf.length) {
        const n = readSync(fd, buf, got, buf.length - got, got);
        if (n === 0) break;
        got += n;
      }
      // The file is Latin-1 or UTF-8 by its history; names are shown, not trusted, so decode loosely.
      return { file, text: buf.subarray(0, got).toString('utf8') };
    } catch {
      continue;
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }
  return undefined;
}
