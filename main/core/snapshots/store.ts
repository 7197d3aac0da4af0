// Reads and writes a VM's snapshots/ directory: tree.json (atomic), thumbnails, state files and bases.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import { writeFileAtomic, writeJsonAtomic } from '../../platform/atomic.js';
import { SnapshotTree, emptyTree, normalizeTree } from './tree.js';

export const SNAPSHOT_DIR = 'snapshots';
export const TREE_FILE = 'tree.json';

export function snapshotDir(bundleDir: string): string {
  return path.join(bundleDir, SNAPSHOT_DIR);
}

export function thumbnailPath(bundleDir: string, id: string): string {
  return path.join(snapshotDir(bundleDir), `${id}.png`);
}

/** The state file of a micro-VM snapshot (memory, vCPU and device state; no disk contents). */
export function stateFilePath(bundleDir: string, id: string): string {
  return path.join(snapshotDir(bundleDir), `${id}.vmstate`);
}

/** Base images of linked clones made from a snapshot live here, in the source VM's bundle. */
export function basesDir(bundleDir: string): string {
  return path.join(snapshotDir(bundleDir), 'bases');
}

export function newSnapshotId(): string {
  // 10 base-36 characters from 8 random bytes: short enough for tags and CLI prefixes, ample against clashes.
  return BigInt('0x' + randomBytes(8).toString('hex')).toString(36).padStart(10, '0').slice(-10);
}

export function tagFor(id: string): string {
  return `vmdesk-${id}`;
}

/** The id inside one of our tags, or undefined for a tag made by someone else (qemu-img by hand). */
export function idFromTag(tag: string): string | undefined {
  const m = /^vmdesk-([a-z0-9]{4,32})$/.exec(tag);
  return m?.[1];
}

export async function readTree(bundleDir: string): Promise<SnapshotTree> {
  let text: string;
  try {
    text = await fs.readFile(path.join(snapshotDir(bundleDir), TREE_FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyTree();
    throw e;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new VmdeskError(ErrorCode.broken, `snapshot metadata ${path.join(snapshotDir(bundleDir), TREE_FILE)} is not valid JSON (${(e as Error).message})`);
  }
  const parsed = SnapshotTree.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new VmdeskError(ErrorCode.broken, `snapshot metadata is invalid: ${first ? `${first.path.join('.')}: ${first.message}` : 'unknown error'}`);
  }
  return normalizeTree(parsed.data);
}

export async function writeTree(bundleDir: string, tree: SnapshotTree): Promise<void> {
  await fs.mkdir(snapshotDir(bundleDir), { recursive: true });
  await writeJsonAtomic(path.join(snapshotDir(bundleDir), TREE_FILE), SnapshotTree.parse(tree));
}

export async function writeThumbnail(bundleDir: string, id: string, png: Buffer): Promise<void> {
  await fs.mkdir(snapshotDir(bundleDir), { recursive: true });
  await writeFileAtomic(thumbnailPath(bundleDir, id), png);
}

export async function readThumbnail(bundleDir: string, id: string): Promise<Buffer | null> {
  return fs.readFile(thumbnailPath(bundleDir, id)).catch(() => null);
}

export async function removeThumbnail(bundleDir: string, id: string): Promise<void> {
  await fs.rm(thumbnailPath(bundleDir, id), { force: true });
}
