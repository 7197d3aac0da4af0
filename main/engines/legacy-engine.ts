// Legacy engine interface (per-VM supervisor processes); replaced by engine.ts while the daemon lands.
import type { Duplex } from 'node:stream';
import type { AccelChoice, ExitRecord, VmConfig, VmState } from '../api/schema.js';

export interface EngineContext {
  config: VmConfig;
  /** Absolute path of the VM bundle (vm.json, disks, logs/). */
  bundleDir: string;
  /** Per-VM runtime directory (0700, short enough for unix socket paths): sockets and pid files. */
  runtimeDir: string;
}

export interface StartResult {
  handle: VmHandle;
  accel: AccelChoice;
  /** What the user should know about how the guest runs (e.g. NAT without host isolation). */
  warnings?: string[];
}

/** Progress of a long operation (0..1 when known). */
export type ProgressFn = (p: { phase: string; fraction?: number }) => void;

export interface Engine {
  readonly kind: 'qemu' | 'microvm';
  /** Throws VmdeskError(EHOST/EINVAL) when this engine cannot run the config here; changes nothing. */
  check(ctx: EngineContext): Promise<AccelChoice>;
  /**
   * Launches the guest in its own supervisor process, detached from the caller: the guest keeps running
   * when the calling process (CLI, app) exits. Resolves when the guest is running (or paused if asked).
   */
  start(ctx: EngineContext, opts?: { paused?: boolean }): Promise<StartResult>;
  /** Reattaches to a guest started earlier by any process; null when none runs for this VM. */
  attach(ctx: EngineContext): Promise<VmHandle | null>;
}

/** A connection to a running guest's supervisor. Closing it leaves the guest running. */
export interface VmHandle {
  readonly pid: number;
  readonly accel: AccelChoice;
  state(): Promise<VmState>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  reset(): Promise<void>;
  /** ACPI power button, then force off after timeoutMs; resolves with the exit record. */
  shutdown(timeoutMs: number): Promise<ExitRecord>;
  /** Force off at once. */
  kill(): Promise<ExitRecord>;
  /** Resolves when the guest's process has exited, with the record the supervisor wrote. */
  exited(): Promise<ExitRecord>;
  /** A bidirectional byte stream to the guest's serial console (several may be open at once). */
  openSerial(): Promise<Duplex>;
  /** Path of the VNC unix socket, when the engine has a display. */
  readonly vncSocket: string | undefined;
  /** Raw QMP-style command (QEMU engine) for features built on top, such as snapshots. */
  command(execute: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown>;
  /** Subscribe to engine events (QMP events or micro-VM events): name + data. */
  onEvent(fn: (name: string, data: unknown) => void): () => void;
  close(): void;
}

export type { Duplex };
