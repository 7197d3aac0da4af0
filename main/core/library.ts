// The VM library on disk: one bundle directory per VM holding vm.json, disks and logs; atomic and locked.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { VmConfig, VM_SCHEMA_VERSION } from '../api/schema.js';
import { VmdeskError, ErrorCode } from '../api/errors.js';
import { fsyncDir, fsyncTree, writeJsonAtomic, sweepTempFiles } from '../platform/atomic.js';
import { processStartTime, withLock } from '../platform/lock.js';
import { pidAlive } from '../platform/process.js';
import { ensurePrivateDir, runtimeRoot } from '../platform/paths.js';

export interface BundleEntry {
  id: string;
  dir: string;
  config: VmConfig | null;
  /** Why the bundle could not be loaded (corrupt or future-version vm.json). */
  broken?: string;
}

const CREATING = '.creating-';
const DELETING = '.deleting-';

export class VmLibrary {
  readonly vmsDir: string;
  readonly runtimeRoot: string;

  constructor(readonly home: string) {
    this.vmsDir = path.join(home, 'vms');
    this.runtimeRoot = runtimeRoot(home);
  }

  /**
   * Creates the directories and finishes what a crash interrupted: half-made bundles and deletions whose
   * process is gone. A staging dir whose owner still runs (an import in the GUI while `vmdesk list` starts)
   * is left alone.
   */
  async init(): Promise<void> {
    await fs.mkdir(this.vmsDir, { recursive: true, mode: 0o700 });
    await fs.chmod(this.vmsDir, 0o700);
    for (const name of await fs.readdir(this.vmsDir)) {
      if (!name.startsWith(CREATING) && !name.startsWith(DELETING)) continue;
      const dir = path.join(this.vmsDir, name);
      if (await ownerRuns(dir)) continue;
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  bundleDir(id: string): string {
    return path.join(this.vmsDir, id);
  }

  /** Where a VM's sockets live; created (0700) only when the VM starts, so listing VMs writes nothing. */
  runtimeDir(id: string): string {
    return path.join(this.runtimeRoot, id.slice(0, 13));
  }

  ensureRuntimeDir(id: string): string {
    ensurePrivateDir(path.dirname(this.runtimeRoot));
    ensurePrivateDir(this.runtimeRoot);
    return ensurePrivateDir(this.runtimeDir(id));
  }

  async list(): Promise<BundleEntry[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.vmsDir);
    } catch {
      return [];
    }
    const ids = names.filter((n) => !n.startsWith('.'));
    return Promise.all(ids.map((id) => this.load(id)));
  }

  async load(id: string): Promise<BundleEntry> {
    const dir = this.bundleDir(id);
    let text: string;
    try {
      text = await fs.readFile(path.join(dir, 'vm.json'), 'utf8');
    } catch (e) {
      return { id, dir, config: null, broken: `vm.json cannot be read: ${(e as Error).message}` };
    }
    return { id, dir, ...parseConfig(text) };
  }

  /** Library-wide lock: held while names are checked and bundles appear or disappear. */
  withLibraryLock<T>(fn: () => Promise<T>): Promise<T> {
    return withLock(this.vmsDir, 'the VM library', fn, 10_000);
  }

  withVmLock<T>(id: string, name: string, fn: () => Promise<T>): Promise<T> {
    return withLock(this.bundleDir(id), `VM "${name}"`, fn);
  }

  /**
   * Makes a bundle: `fill` populates a staging directory (disks, vm.json); the bundle appears only by the
   * final rename, so a crash leaves either nothing or a complete VM.
   */
  async createBundle(fill: (stagingDir: string, id: string) => Promise<VmConfig>): Promise<BundleEntry> {
    const id = randomUUID();
    const staging = path.join(this.vmsDir, CREATING + id);
    await fs.mkdir(path.join(staging, 'logs'), { recursive: true, mode: 0o700 });
    try {
      await writeOwner(staging);
      const config = await fill(staging, id);
      await writeJsonAtomic(path.join(staging, 'vm.json'), VmConfig.parse(config));
      await fs.rm(path.join(staging, OWNER_FILE), { force: true });
      // Disks and all are on the disk before the bundle appears, and the bundle's name after.
      await fsyncTree(staging);
      await fs.rename(staging, this.bundleDir(id));
      await fsyncDir(this.vmsDir);
      return { id, dir: this.bundleDir(id), config };
    } catch (e) {
      await fs.rm(staging, { recursive: true, force: true });
      throw e;
    }
  }

  async saveConfig(id: string, config: VmConfig): Promise<void> {
    const valid = VmConfig.parse({ ...config, modifiedAt: new Date().toISOString() });
    await writeJsonAtomic(path.join(this.bundleDir(id), 'vm.json'), valid);
    await sweepTempFiles(this.bundleDir(id));
  }

  /** Renames the bundle aside first so that a crash mid-way never leaves a half-deleted VM in the list. */
  async removeBundle(id: string): Promise<void> {
    const aside = path.join(this.vmsDir, DELETING + id);
    await writeOwner(this.bundleDir(id)).catch(() => undefined);
    await fs.rename(this.bundleDir(id), aside);
    await fs.rm(aside, { recursive: true, force: true });
  }
}

/** Who is building (or removing) a staging dir: "pid start", so a reused pid is not mistaken for it. */
const OWNER_FILE = '.owner';
/** A staging dir without an owner record is someone's first instant; after this long it is abandoned. */
const OWNERLESS_GRACE_MS = 60_000;

async function writeOwner(dir: string): Promise<void> {
  await fs.writeFile(path.join(dir, OWNER_FILE), `${process.pid} ${processStartTime(process.pid) ?? ''}\n`, { mode: 0o600 });
}

async function ownerRuns(dir: string): Promise<boolean> {
  const text = await fs.readFile(path.join(dir, OWNER_FILE), 'utf8').catch(() => null);
  const m = text ? /^(\d+) (\S*)/.exec(text) : null;
  if (!m) {
    const st = await fs.stat(dir).catch(() => null);
    return !!st && Date.now() - st.mtimeMs < OWNERLESS_GRACE_MS;
  }
  const pid = Number(m[1]);
  if (!pidAlive(pid)) return false;
  const start = processStartTime(pid);
  return !m[2] || start === undefined || start === m[2];
}

export function parseConfig(text: string): { config: VmConfig | null; broken?: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { config: null, broken: `vm.json is not valid JSON (${(e as Error).message})` };
  }
  const version = (raw as { schemaVersion?: unknown })?.schemaVersion;
  if (typeof version === 'number' && version > VM_SCHEMA_VERSION) {
    return { config: null, broken: `vm.json has schema version ${version}, newer than this VMDesk understands (${VM_SCHEMA_VERSION}); upgrade VMDesk` };
  }
  const parsed = VmConfig.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    return { config: null, broken: `vm.json is invalid: ${first ? `${first.path.join('.') || '(root)'}: ${first.message}` : 'unknown error'}` };
  }
  return { config: parsed.data };
}

export function brokenError(entry: BundleEntry): VmdeskError {
  return new VmdeskError(ErrorCode.broken, `VM bundle ${entry.dir} is broken: ${entry.broken}`);
}
