// A stand-in for the WebSocket client in component and store tests: scripted answers, recorded calls, pushable events.
import type { VmEvent } from '../../../main/api/events';
import type { VmInfo } from '../../../main/api/schema';
import { RpcCallError, setRpcClient, type RpcClient, type ConnectionState } from '../api/client';

type Handler = (params: any) => unknown;

export class FakeRpc {
  state: ConnectionState = 'open';
  calls: { method: string; params: any }[] = [];
  private handlers = new Map<string, Handler>();
  private events = new Set<(ev: VmEvent) => void>();
  private states = new Set<(s: ConnectionState) => void>();

  on(method: string, fn: Handler): this {
    this.handlers.set(method, fn);
    return this;
  }

  async call(method: string, params: unknown): Promise<unknown> {
    this.calls.push({ method, params });
    const h = this.handlers.get(method);
    if (!h) throw new RpcCallError({ code: 'EINVAL', message: `unknown method "${method}"`, details: [] });
    return h(params);
  }

  callsOf(method: string) {
    return this.calls.filter((c) => c.method === method).map((c) => c.params);
  }

  onEvent(fn: (ev: VmEvent) => void) {
    this.events.add(fn);
    return () => this.events.delete(fn);
  }

  onState(fn: (s: ConnectionState) => void) {
    this.states.add(fn);
    return () => this.states.delete(fn);
  }

  push(ev: VmEvent): void {
    for (const fn of this.events) fn(ev);
  }

  setState(s: ConnectionState): void {
    this.state = s;
    for (const fn of this.states) fn(s);
  }

  openSerial() {
    return { write() {}, close() {} };
  }

  install(): this {
    setRpcClient(this as unknown as RpcClient);
    return this;
  }
}

export const HOST = {
  platform: 'linux',
  arch: 'x64',
  cpus: 4,
  memoryMiB: 8192,
  freeMemoryMiB: 2048,
  qemu: { found: true, path: '/usr/bin/qemu-system-x86_64', version: '7.2.0' },
  accelerators: {
    kvm: { available: false, reason: 'no /dev/kvm' },
    hvf: { available: false, reason: 'not macOS' },
    tcg: { available: true, reason: 'always' },
  },
  defaultAccel: { requested: 'auto', used: 'tcg', reason: 'KVM unavailable' },
} as const;

export function vmInfo(name: string, state: VmInfo['state'] = 'stopped', over: Partial<NonNullable<VmInfo['config']>> = {}): VmInfo {
  // A stable, distinct UUID per name.
  let h = 0;
  for (const ch of name) h = (Math.imul(h, 31) + ch.charCodeAt(0)) >>> 0;
  const id = `00000000-0000-4000-8000-${h.toString(16).padStart(12, '0')}`;
  const now = new Date(0).toISOString();
  return {
    id,
    name,
    bundle: `/home/me/vmdesk/vms/${id}`,
    state,
    config: {
      schemaVersion: 1,
      id,
      name,
      osType: 'linux',
      engine: 'qemu',
      accel: 'auto',
      firmware: 'bios',
      cpus: 1,
      memoryMiB: 512,
      disks: [],
      network: [{ mode: 'nat', forwards: [] }],
      createdAt: now,
      modifiedAt: now,
      ...over,
    },
    warnings: [],
  };
}
