// RPC handlers for DeviceRpcMethods (main/api/rpc-devices.ts): save state and USB passthrough run as the VM's
// one job; the host's USB listing and the presets are queries.
import type { z } from 'zod';
import type { Core } from '../core/core.js';
import type { DeviceRpcMethods, DeviceRpcMethod } from '../api/rpc-devices.js';
import { PRESETS } from '../api/presets.js';
import { addUsb, hostUsb, listVmUsb, removeUsb } from '../core/devices.js';

type Parsed<M extends DeviceRpcMethod> = z.output<(typeof DeviceRpcMethods)[M]['params']>;
type Result<M extends DeviceRpcMethod> = z.input<(typeof DeviceRpcMethods)[M]['result']>;
export type DeviceHandlers = { [M in DeviceRpcMethod]: (core: Core, p: Parsed<M>, ctx: { progress: (phase: string, fraction?: number) => void }) => Promise<Result<M>> };

export const deviceHandlers: DeviceHandlers = {
  'vm.suspend': (core, p, { progress }) =>
    core.job(p.id, 'suspend', 'vm.suspend', () => {
      progress('saving the guest\'s state');
      return core.suspend(p.id, progress);
    }),
  'vm.discardState': (core, p) => core.job(p.id, 'discard-state', 'vm.discardState', () => core.discardState(p.id)),
  'usb.host': async () => hostUsb(),
  'usb.list': (core, p) => listVmUsb(core, p.id),
  'usb.add': (core, p) => core.job(p.id, 'usb', 'usb.add', () => addUsb(core, p.id, p.device)),
  'usb.remove': (core, p) => core.job(p.id, 'usb', 'usb.remove', () => removeUsb(core, p.id, p.device)),
  'presets.list': async () => Object.entries(PRESETS).map(([name, p]) => ({ name, summary: p.summary, fields: p.fields })),
};
