// The one list of engines. Built-in modules load on first use (the micro-VM engine pulls in the native
// addon); tests and future engines add theirs with registerEngine, touching nothing else.
import { ErrorCode, VmdeskError } from '../api/errors.js';
import type { EngineModule } from './engine.js';

type Loader = () => Promise<EngineModule>;

const loaders = new Map<string, Loader>([
  ['qemu', async () => (await import('./qemu/module.js')).qemuEngine],
  ['microvm', async () => (await import('./microvm/module.js')).microvmEngine],
  ['libvirt', async () => (await import('./libvirt/module.js')).libvirtEngine],
]);
const loaded = new Map<string, EngineModule>();

/** Adds (or replaces) an engine. */
export function registerEngine(module: EngineModule): void {
  loaded.set(module.kind, module);
  loaders.set(module.kind, async () => module);
}

/** Removes an engine added by registerEngine (tests). Built-in engines come back on next use. */
export function unregisterEngine(kind: string): void {
  loaded.delete(kind);
  if (kind === 'qemu' || kind === 'microvm' || kind === 'libvirt') return;
  loaders.delete(kind);
}

export function engineKinds(): string[] {
  return [...loaders.keys()];
}

export function hasEngine(kind: string): boolean {
  return loaders.has(kind);
}

/** The engine module for a kind; EINVAL naming the known kinds when there is none. */
export async function engine(kind: string): Promise<EngineModule> {
  const have = loaded.get(kind);
  if (have) return have;
  const load = loaders.get(kind);
  if (!load) throw new VmdeskError(ErrorCode.invalid, `unknown engine "${kind}" (engines: ${engineKinds().join(', ')})`);
  const m = await load();
  loaded.set(kind, m);
  return m;
}
