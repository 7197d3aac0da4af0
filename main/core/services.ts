// What the snapshot, clone and backup modules may use of the core. Core implements it; the modules never see
// engines by name, only the engine module the core hands them (capabilities, snapshot and disk providers).
import type { VmConfig, VmInfo } from '../api/schema.js';
import type { VmEvent } from '../api/events.js';
import type { EngineContext, EngineModule, VmRuntime } from '../engines/engine.js';
import type { BundleEntry, VmLibrary } from './library.js';

export type UsableEntry = BundleEntry & { config: VmConfig };

export type ProgressFn = (phase: string, fraction?: number) => void;

export interface SnapshotCore {
  readonly library: VmLibrary;
  /** A VM by name, id or unique id prefix, from the in-memory index. */
  resolve(ref: string): Promise<BundleEntry>;
  /** Same, refusing a broken bundle (EBROKEN). */
  usable(ref: string): Promise<UsableEntry>;
  get(ref: string): Promise<VmInfo>;
  /** The engine module of a configuration. */
  engineOf(config: VmConfig): Promise<EngineModule>;
  ctx(entry: UsableEntry): EngineContext;
  /** The running guest, if any. */
  runtime(id: string): VmRuntime | undefined;
  /** Starts/stops inside an operation that already holds the VM (no job checks). */
  start(ref: string, opts?: { paused?: boolean }): Promise<VmInfo>;
  kill(ref: string): Promise<VmInfo>;
  pause(ref: string): Promise<VmInfo>;
  resume(ref: string): Promise<VmInfo>;
  screenshot(ref: string): Promise<Buffer>;
  /** Writes vm.json atomically, updates the index and tells every client. */
  saveConfig(id: string, config: VmConfig): Promise<VmInfo>;
  /** Refuses a name that is invalid or taken (case-insensitive) or being created right now. */
  checkNewVmName(name: unknown): Promise<string>;
  /** A new bundle filled in a staging dir, appearing whole, indexed and announced. */
  createVmBundle(name: string, fill: (staging: string, id: string) => Promise<VmConfig>): Promise<VmInfo>;
  emit(event: 'event', ev: VmEvent): boolean;
}
