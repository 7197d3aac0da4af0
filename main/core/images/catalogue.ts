// The gallery: VMDesk's versioned catalogue of well-known images (gallery.json beside this file, checked
// against its schema when loaded) and the sources a user adds (<home>/images/sources.json).
import { promises as fs } from 'node:fs';
import path from 'node:path';
import gallery from './gallery.json' with { type: 'json' };
import { Catalogue, GalleryEntry, ImageDefaults, UserSourceInput, type OsPreset } from '../../api/images.js';
import type { VmConfig } from '../../api/schema.js';
type OsType = VmConfig['osType'];
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { writeJsonAtomic } from '../../platform/atomic.js';
import { z } from 'zod';

let parsed: Catalogue | undefined;

/** The built-in catalogue; a malformed one is a bug in this build and says where. */
export function builtinCatalogue(): Catalogue {
  if (parsed) return parsed;
  const r = Catalogue.safeParse(gallery);
  if (!r.success) throw new VmdeskError(ErrorCode.internal, `the image gallery of this build is malformed: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return (parsed = r.data);
}

const SourcesFile = z.object({ version: z.literal(1), sources: z.array(GalleryEntry).max(200) }).strict();
const SOURCES_MAX_BYTES = 1024 * 1024;

export function presetOsType(p: OsPreset): OsType {
  return p === 'windows11' ? 'windows' : p === 'other' ? 'other' : 'linux';
}

const USER_DEFAULTS: Record<'cloud' | 'installer', ImageDefaults> = {
  cloud: { cpus: 2, memoryMiB: 2048, diskBytes: 20 * 1024 ** 3, firmware: 'bios', preset: 'linux' },
  installer: { cpus: 2, memoryMiB: 2048, diskBytes: 20 * 1024 ** 3, firmware: 'bios', preset: 'linux' },
};

/** The user's sources, kept in the image cache's folder. */
export class ImageSources {
  constructor(private readonly dir: string) {}

  get file(): string {
    return path.join(this.dir, 'sources.json');
  }

  async list(): Promise<GalleryEntry[]> {
    let text: string;
    try {
      const st = await fs.stat(this.file);
      if (st.size > SOURCES_MAX_BYTES) throw new VmdeskError(ErrorCode.invalid, `${this.file} is larger than ${SOURCES_MAX_BYTES} bytes`);
      text = await fs.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new VmdeskError(ErrorCode.invalid, `${this.file} is not JSON; fix or remove it`);
    }
    const r = SourcesFile.safeParse(json);
    if (!r.success) throw new VmdeskError(ErrorCode.invalid, `${this.file} is malformed (${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message}); fix or remove it`);
    return r.data.sources;
  }

  async add(input: unknown): Promise<GalleryEntry> {
    const r = UserSourceInput.safeParse(input);
    if (!r.success) throw new VmdeskError(ErrorCode.invalid, `invalid image source: ${r.error.issues.map((i) => `${i.path.join('.') || 'source'}: ${i.message}`).join('; ')}`);
    const s = r.data;
    if (builtinCatalogue().images.some((i) => i.id === s.id)) throw new VmdeskError(ErrorCode.exists, `"${s.id}" is an image of the gallery; choose another id`);
    const entry = GalleryEntry.parse({
      id: s.id,
      name: s.name ?? s.id,
      kind: s.kind,
      format: s.format,
      url: s.url,
      maxBytes: s.maxBytes ?? 16 * 1024 ** 3,
      verify: s.verify,
      defaults: { ...USER_DEFAULTS[s.kind], ...(s.defaults ?? {}) },
    });
    const all = await this.list();
    if (all.some((x) => x.id === entry.id)) throw new VmdeskError(ErrorCode.exists, `an image source "${entry.id}" already exists (remove it first: vmdesk images forget ${entry.id})`);
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeJsonAtomic(this.file, { version: 1, sources: [...all, entry] });
    return entry;
  }

  async remove(id: string): Promise<boolean> {
    const all = await this.list();
    const rest = all.filter((x) => x.id !== id);
    if (rest.length === all.length) return false;
    await writeJsonAtomic(this.file, { version: 1, sources: rest });
    return true;
  }
}

/** Every image VMDesk knows: the gallery's, then the user's. */
export async function allEntries(sources: ImageSources): Promise<{ entry: GalleryEntry; source: 'gallery' | 'user' }[]> {
  return [...builtinCatalogue().images.map((entry) => ({ entry, source: 'gallery' as const })), ...(await sources.list()).map((entry) => ({ entry, source: 'user' as const }))];
}

export async function findEntry(sources: ImageSources, id: string): Promise<{ entry: GalleryEntry; source: 'gallery' | 'user' }> {
  const all = await allEntries(sources);
  const hit = all.find((x) => x.entry.id === id);
  if (!hit) throw new VmdeskError(ErrorCode.notFound, `no image "${id}" in the gallery or your sources (vmdesk images list)`);
  return hit;
}
