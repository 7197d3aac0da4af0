// The host's USB devices as Linux shows them in sysfs (/sys/bus/usb/devices), with what the daemon's user
// may do with each: QEMU's usb-host opens /dev/bus/usb/BUS/DEV read-write, which distributions allow only
// to root or the seat's user unless a udev rule says otherwise. Every sysfs value is read with a bound.
import { accessSync, closeSync, constants, openSync, readdirSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import { cleanName, parseUsbIds, readUsbIds } from './usb-ids.js';

export interface HostUsbDevice {
  bus: number;
  addr: number;
  vendorId: string;
  productId: string;
  /** From the USB ID database (absent without it, or for ids it does not list). */
  vendorName?: string;
  productName?: string;
  /** The device's own strings. */
  manufacturer?: string;
  product?: string;
  /** Mbit/s as the kernel reports it (1.5, 12, 480, 5000...). */
  speed?: string;
  /** The sysfs name (port path, e.g. 1-1.2). */
  port: string;
  /** The device node QEMU opens. */
  devNode: string;
  /** Whether the daemon's user can open devNode for reading and writing. */
  usable: boolean;
  /** Why not, and how to allow it. */
  problem?: string;
}

export interface UsbListing {
  devices: HostUsbDevice[];
  /** The USB ID database used for names, or null when the host has none. */
  idsDatabase: string | null;
  notes: string[];
}

const MAX_DEVICES = 256;
const MAX_ATTR = 256;

function attr(dir: string, name: string): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path.join(dir, name), 'r');
    const buf = Buffer.alloc(MAX_ATTR);
    const n = readSync(fd, buf, 0, MAX_ATTR, 0);
    return buf.subarray(0, n).toString('utf8').trim();
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

const HEX4 = /^[0-9a-f]{4}$/;

function groupName(gid: number, groupFile = '/etc/group'): string {
  const text = attrFile(groupFile, 1024 * 1024);
  const line = text?.split('\n').find((l) => l.split(':')[2] === String(gid));
  return line?.split(':')[0] || String(gid);
}

function attrFile(file: string, max: number): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const buf = Buffer.alloc(max);
    const n = readSync(fd, buf, 0, max, 0);
    return buf.subarray(0, n).toString('utf8');
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The udev rule that lets the logged-in user (and so VMDesk) open one device. */
export function udevRuleFor(vendorId: string, productId: string): string {
  return `SUBSYSTEM=="usb", ATTR{idVendor}=="${vendorId}", ATTR{idProduct}=="${productId}", MODE="0660", TAG+="uaccess"`;
}

/** Why the daemon's user cannot open a device node, with the fix; undefined when it can. */
export function devNodeProblem(devNode: string, vendorId: string, productId: string, opts: { groupFile?: string } = {}): string | undefined {
  try {
    accessSync(devNode, constants.R_OK | constants.W_OK);
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `${devNode} does not exist (the device was unplugged, or /dev/bus/usb is not available here)`;
    let owner = '';
    try {
      const st = statSync(devNode);
      owner = ` (owner uid ${st.uid}, group ${groupName(st.gid, opts.groupFile)}, mode ${(st.mode & 0o777).toString(8).padStart(4, '0')})`;
    } catch {
      /* only the words change */
    }
    const who = typeof process.getuid === 'function' ? `uid ${process.getuid()}` : 'this user';
    return (
      `VMDesk (${who}) may not open ${devNode}${owner}, which passing the device through needs. ` +
      `Allow it with a udev rule in /etc/udev/rules.d/70-vmdesk-usb.rules: ${udevRuleFor(vendorId, productId)} ` +
      `then run: sudo udevadm control --reload && sudo udevadm trigger, and plug the device in again`
    );
  }
}

/**
 * USB devices of the host, hubs left out (passing a hub through is never what is meant). `sysfs` and `dev`
 * are parameters so tests can list a fixture tree.
 */
export function listUsbDevices(opts: { sysfs?: string; dev?: string; idsPaths?: string[]; groupFile?: string } = {}): UsbListing {
  const sysfs = opts.sysfs ?? '/sys/bus/usb/devices';
  const dev = opts.dev ?? '/dev/bus/usb';
  const notes: string[] = [];
  let names: string[];
  try {
    names = readdirSync(sysfs);
  } catch {
    return { devices: [], idsDatabase: null, notes: [`${sysfs} cannot be read: this host shows no USB devices (not Linux, or no USB controller)`] };
  }
  const devices: HostUsbDevice[] = [];
  // Devices are named by port path (1-1, 1-1.2) and root hubs usbN; interfaces carry a colon.
  for (const name of names.filter((n) => /^(\d+-[\d.]+|usb\d+)$/.test(n)).sort()) {
    if (devices.length >= MAX_DEVICES) {
      notes.push(`more than ${MAX_DEVICES} USB devices; the rest are not listed`);
      break;
    }
    const dir = path.join(sysfs, name);
    const vendorId = attr(dir, 'idVendor')?.toLowerCase();
    const productId = attr(dir, 'idProduct')?.toLowerCase();
    const bus = Number(attr(dir, 'busnum'));
    const addr = Number(attr(dir, 'devnum'));
    if (!vendorId || !productId || !HEX4.test(vendorId) || !HEX4.test(productId)) continue;
    if (!Number.isInteger(bus) || bus < 1 || bus > 255 || !Number.isInteger(addr) || addr < 1 || addr > 127) continue;
    if (attr(dir, 'bDeviceClass') === '09') continue; // hubs, root hubs included
    const devNode = path.join(dev, String(bus).padStart(3, '0'), String(addr).padStart(3, '0'));
    const problem = devNodeProblem(devNode, vendorId, productId, opts);
    const manufacturer = cleanName(attr(dir, 'manufacturer') ?? '');
    const product = cleanName(attr(dir, 'product') ?? '');
    const speed = attr(dir, 'speed');
    devices.push({
      bus,
      addr,
      vendorId,
      productId,
      ...(manufacturer ? { manufacturer } : {}),
      ...(product ? { product } : {}),
      ...(speed && /^[\d.]+$/.test(speed) ? { speed } : {}),
      port: name,
      devNode,
      usable: !problem,
      ...(problem ? { problem } : {}),
    });
  }
  const ids = readUsbIds(opts.idsPaths);
  if (ids) {
    const found = parseUsbIds(ids.text, devices);
    for (const d of devices) {
      const n = found.get(`${d.vendorId}:${d.productId}`);
      if (n?.vendor) d.vendorName = n.vendor;
      if (n?.product) d.productName = n.product;
    }
  } else {
    notes.push('no USB ID database on this host (install usbutils or hwdata for vendor and product names); devices are shown by their ids and their own strings');
  }
  return { devices, idsDatabase: ids?.file ?? null, notes };
}

/** One line for a device: "046d:c52b Logitech, Inc. Unifying Receiver (bus 1, address 4)". */
export function usbDeviceLabel(d: Pick<HostUsbDevice, 'vendorId' | 'productId' | 'vendorName' | 'productName' | 'manufacturer' | 'product'>): string {
  const vendor = d.vendorName ?? d.manufacturer;
  const product = d.productName ?? d.product;
  return [vendor, product].filter(Boolean).join(' ') || `${d.vendorId}:${d.productId}`;
}
