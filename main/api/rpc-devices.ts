// Issue 12 part B in the contract: save state (vm.suspend, vm.discardState), host USB passthrough (usb.*) and
// the presets a new VM may start from. Device settings themselves (tpm, secureBoot, usbTablet, audio,
// virtioDrivers) are fields of vm.create and vm.update. Part of the one contract: rpc.ts spreads
// DeviceRpcMethods into AllRpcMethods.
import { z } from 'zod';
import { UsbId, UsbPassthrough, VmInfo, VmState } from './schema.js';

const VmRef = z.string().min(1, 'a VM name or id is required').max(128);

/** A host USB device as the picker lists it (sysfs, names from the USB ID database). */
export const HostUsbDeviceSchema = z.object({
  bus: z.number(),
  addr: z.number(),
  vendorId: z.string(),
  productId: z.string(),
  vendorName: z.string().optional(),
  productName: z.string().optional(),
  manufacturer: z.string().optional(),
  product: z.string().optional(),
  speed: z.string().optional(),
  port: z.string(),
  devNode: z.string(),
  /** The daemon's user may open it (QEMU needs that); otherwise `problem` says why and gives the udev rule. */
  usable: z.boolean(),
  problem: z.string().optional(),
});

export const HostUsbListingSchema = z.object({ devices: z.array(HostUsbDeviceSchema), idsDatabase: z.string().nullable(), notes: z.array(z.string()) });

export const VmUsbListingSchema = z.object({
  id: z.string(),
  name: z.string(),
  state: VmState,
  devices: z.array(UsbPassthrough.and(z.object({ key: z.string(), present: z.boolean(), usable: z.boolean(), problem: z.string().optional() }))),
  notes: z.array(z.string()),
});

/** Which passed-through device to take out: by vendor:product or by bus and address, as it was added. */
export const UsbSelector = z.union([z.object({ vendorId: UsbId, productId: UsbId }).strict(), z.object({ bus: z.number().int().min(1).max(255), addr: z.number().int().min(1).max(127) }).strict()]);

export const DeviceRpcMethods = {
  /** Saves a running VM's memory and device state into its bundle and ends the guest: state 'saved'; vm.start resumes it. */
  'vm.suspend': { params: z.object({ id: VmRef }).strict(), result: VmInfo },
  /** Throws a saved state away; the next start boots afresh. */
  'vm.discardState': { params: z.object({ id: VmRef }).strict(), result: VmInfo },
  /** The host's USB devices (hubs left out), with whether VMDesk may open each and how to allow it. */
  'usb.host': { params: z.object({}).strict(), result: HostUsbListingSchema },
  /** A VM's passed-through devices, each with whether it is plugged into the host now and usable. */
  'usb.list': { params: z.object({ id: VmRef }).strict(), result: VmUsbListingSchema },
  /** Passes a host device through (kept in vm.json; plugged into a running guest at once). */
  'usb.add': { params: z.object({ id: VmRef, device: UsbPassthrough }).strict(), result: VmInfo },
  /** Takes a passed-through device out (of a running guest too). */
  'usb.remove': { params: z.object({ id: VmRef, device: UsbSelector }).strict(), result: VmInfo },
  /** Presets vm.create takes (`preset`): name, a summary, and the fields each fills in. */
  'presets.list': { params: z.object({}).strict(), result: z.array(z.object({ name: z.string(), summary: z.string(), fields: z.record(z.string(), z.unknown()) })) },
} as const;

export type DeviceRpcMethod = keyof typeof DeviceRpcMethods;

/** Long calls: progress is reported under the call's opId. */
export const DEVICE_LONG_METHODS = ['vm.suspend'] as const;
