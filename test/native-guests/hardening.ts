// Helpers for the KVM-free hardening tests (test/unit/native-hardening*.test.ts): loads the addon, rebuilding
// a build that predates its test hooks, types the `__test` export, and reads and rewrites snapshot files so
// tests can build corrupt and hostile ones from a structurally valid start.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, rmdirSync, statSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { addonFile as builtAddon, ensureAddonBuilt, repoRoot } from './harness.js';

/** The addon under test: VMDESK_NATIVE_ADDON (as for the app's loader) or native/build's, built on demand. */
const override = process.env.VMDESK_NATIVE_ADDON;
export const addonFile = override ?? builtAddon;

export interface TestVirtioBlk {
  writeMem(gpa: number, data: Buffer): void;
  readMem(gpa: number, len: number): Buffer;
  /** A 32-bit register write at `offset` in the device's MMIO window, as a vCPU's MMIO exit delivers it. */
  mmioWrite(offset: number, value: number): void;
  mmioRead(offset: number): number;
  saveState(): Buffer;
  loadState(state: Buffer): void;
  irqCount(): number;
}

export interface TestHooks {
  VirtioBlk: new (o: { memBytes: number; disk: string; readOnly?: boolean }) => TestVirtioBlk;
  /** The snapshot writer's decision for one 4 KiB page: written (true) or left a hole. */
  pageHasData(page: Buffer, pagemapEntry: bigint, anonymous: boolean): boolean;
  /** Fresh anonymous guest memory with these writes (optionally paged out), saved by the real snapshot writer. */
  snapshotMemory(path: string, o: { memBytes: number; writes: { gpa: number; data: Buffer }[]; pageOut?: boolean }): { bytes: number; swappedPages: number };
  writeSyntheticSnapshot(path: string, o: { cpus: number; memBytes: number; disks?: { path: string; readOnly?: boolean }[] }): void;
  /** Everything a restore checks before it needs KVM (devices loaded too); returns what it would create. */
  checkSnapshot(path: string, disks?: { path: string; readOnly?: boolean }[]): { cpus: number; memBytes: number; disks: { path: string; readOnly: boolean }[] };
}

export interface NativeWithHooks {
  __test: TestHooks;
  flockFile(fd: number, exclusive: boolean, wait: boolean): boolean;
  funlockFile(fd: number): void;
}

function addonHasHooks(): boolean {
  const probe = `const a = require(${JSON.stringify(addonFile)}); process.exit(a.__test && a.__test.checkSnapshot && a.flockFile ? 0 : 3)`;
  return spawnSync(process.execPath, ['-e', probe]).status === 0;
}

/** Why these tests cannot run here (not Linux, addon does not build), or undefined. Needs no /dev/kvm. */
export function hooksSkipReason(): string | undefined {
  if (process.platform !== 'linux') return `the addon's test hooks exist on Linux only (this is ${process.platform})`;
  if (override) return addonHasHooks() ? undefined : `${override} has no __test hooks`;
  const built = ensureAddonBuilt();
  if (built) return built;
  if (addonHasHooks()) return undefined;
  // A build from before the hooks: rebuild once, under the same lock harness.ensureAddonBuilt() uses.
  const lock = join(repoRoot, 'native', '.build-lock');
  for (let i = 0; i < 600; i++) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      try { if (Date.now() - statSync(lock).mtimeMs > 300_000) rmdirSync(lock); } catch { /* gone */ }
      spawnSync('sleep', ['0.5']);
    }
  }
  try {
    if (!addonHasHooks()) {
      const r = spawnSync(process.execPath, [join(repoRoot, 'native', 'build.mjs'), '--quiet'], { encoding: 'utf8', env: { ...process.env, VMDESK_NATIVE_BUILD_LOCKED: '1' } });
      if (r.status !== 0) return `native addon build failed: ${(r.stderr || r.stdout).slice(-2000)}`;
    }
  } finally {
    try { rmdirSync(lock); } catch { /* ignore */ }
  }
  return addonHasHooks() ? undefined : 'the native addon has no __test hooks even after a rebuild';
}

export function nativeWithHooks(): NativeWithHooks {
  return createRequire(import.meta.url)(addonFile) as NativeWithHooks;
}

export { repoRoot };

// ---- snapshot files (format in native/README.md and native/src/snapshot/snapshot.h) ----

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32(b: Buffer): number {
  let c = 0xffffffff;
  for (const x of b) c = TABLE[(c ^ x) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** SnapshotHeader field offsets; sizeof(SnapshotHeader) is 56. */
export const HDR = { version: 8, headerBytes: 12, memBytes: 16, memOffset: 24, stateBytes: 32, stateCrc: 40, headerCrc: 44, size: 56 } as const;

export interface SnapshotParts {
  header: Buffer;
  records: Map<string, Buffer>;
  memBytes: bigint;
}

export function readSnapshot(path: string): SnapshotParts {
  const f = readFileSync(path);
  const header = Buffer.from(f.subarray(0, HDR.size));
  const stateBytes = Number(header.readBigUInt64LE(HDR.stateBytes));
  const state = f.subarray(4096, 4096 + stateBytes);
  const records = new Map<string, Buffer>();
  for (let pos = 0; pos < state.length; ) {
    const kl = state.readUInt32LE(pos);
    const key = state.subarray(pos + 4, pos + 4 + kl).toString('latin1');
    const vl = Number(state.readBigUInt64LE(pos + 4 + kl));
    records.set(key, Buffer.from(state.subarray(pos + 12 + kl, pos + 12 + kl + vl)));
    pos += 12 + kl + vl;
  }
  return { header, records, memBytes: header.readBigUInt64LE(HDR.memBytes) };
}

export function serializeRecords(records: Map<string, Buffer>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of [...records].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const kb = Buffer.from(k, 'latin1');
    const head = Buffer.alloc(4 + kb.length + 8);
    head.writeUInt32LE(kb.length, 0);
    kb.copy(head, 4);
    head.writeBigUInt64LE(BigInt(v.length), 4 + kb.length);
    parts.push(head, v);
  }
  return Buffer.concat(parts);
}

export interface RewriteOptions {
  /** Raw state bytes instead of serialized records (for framing attacks). */
  state?: Buffer;
  /** Header fields set before the checksums are computed. */
  header?: Partial<Record<'version' | 'headerBytes' | 'memBytes' | 'memOffset' | 'stateBytes', bigint>>;
  /** Bytes written into guest memory (at memOffset + gpa). */
  mem?: { gpa: number; data: Buffer }[];
  /** Applied to the finished header + state bytes, after the checksums (to break them). */
  after?: (headAndState: Buffer) => void;
  /** The file's final size (default: memOffset + memBytes, sparse). */
  size?: number;
}

/** Writes a snapshot from parts: records serialized, memOffset and both checksums recomputed, memory sparse. */
export function writeSnapshotFile(path: string, parts: SnapshotParts, o: RewriteOptions = {}): void {
  const state = o.state ?? serializeRecords(parts.records);
  const h = Buffer.from(parts.header);
  const memOffset = BigInt(Math.ceil((4096 + state.length) / 4096) * 4096);
  h.writeBigUInt64LE(BigInt(state.length), HDR.stateBytes);
  h.writeBigUInt64LE(memOffset, HDR.memOffset);
  h.writeBigUInt64LE(parts.memBytes, HDR.memBytes);
  for (const [k, v] of Object.entries(o.header ?? {})) {
    if (k === 'version' || k === 'headerBytes') h.writeUInt32LE(Number(v), HDR[k]);
    else h.writeBigUInt64LE(v, HDR[k as 'memBytes' | 'memOffset' | 'stateBytes']);
  }
  h.writeUInt32LE(crc32(state), HDR.stateCrc);
  h.writeUInt32LE(0, HDR.headerCrc);
  h.writeUInt32LE(crc32(h), HDR.headerCrc);
  const out = Buffer.alloc(4096 + state.length);
  h.copy(out, 0);
  state.copy(out, 4096);
  o.after?.(out);
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, out, 0, out.length, 0);
    for (const w of o.mem ?? []) writeSync(fd, w.data, 0, w.data.length, Number(memOffset) + w.gpa);
    ftruncateSync(fd, o.size ?? Number(memOffset + parts.memBytes));
  } finally {
    closeSync(fd);
  }
}

export const exists = existsSync;
