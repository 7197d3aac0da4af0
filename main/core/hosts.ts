// The hosts a library reaches beyond this machine (`vmdesk hosts`): names and libvirt URIs in <home>/hosts.json,
// written atomically (write, fsync, rename, fsync the directory). No credentials are ever stored: ssh keys or an
// agent authenticate, and the URI rules (main/api/host-uri.ts) refuse passwords and verification switches.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { hostNameProblem, parseHostUri } from '../api/host-uri.js';
import type { HostEntry } from '../api/rpc-hosts.js';
import { writeJsonAtomic } from '../platform/atomic.js';

export const HOSTS_FILE = 'hosts.json';
export const HOSTS_MAX = 256;
/** libvirt's usual pool (virt-manager and GNOME Boxes make it), unless the host was added with another. */
export const DEFAULT_POOL = 'default';

interface HostsFile {
  version: 1;
  hosts: HostEntry[];
}

/** Checks one stored entry as strictly as a new one; a bad entry makes the file unusable, said plainly. */
function checkEntry(e: unknown, i: number): HostEntry {
  const bad = (why: string) => new VmdeskError(ErrorCode.broken, `${HOSTS_FILE}: host ${i + 1} ${why}`);
  if (!e || typeof e !== 'object') throw bad('is not an object');
  const { name, uri, pool, addedAt } = e as Record<string, unknown>;
  if (typeof name !== 'string' || hostNameProblem(name)) throw bad(`has an invalid name (${typeof name === 'string' ? hostNameProblem(name) : 'missing'})`);
  if (typeof uri !== 'string') throw bad('has no URI');
  try {
    parseHostUri(uri);
  } catch (err) {
    throw bad((err as Error).message);
  }
  if (typeof pool !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(pool)) throw bad('has an invalid storage pool name');
  if (typeof addedAt !== 'string') throw bad('has no date');
  return { name, uri, pool, addedAt };
}

export class HostRegistry {
  readonly file: string;
  private hosts: HostEntry[] | undefined;
  private loadError: VmdeskError | undefined;
  private writing: Promise<unknown> = Promise.resolve();

  constructor(home: string) {
    this.file = path.join(home, HOSTS_FILE);
  }

  /** Reads hosts.json (once; the daemon is its only writer). A missing file is no hosts. */
  private load(): HostEntry[] {
    if (this.hosts) return this.hosts;
    if (this.loadError) throw this.loadError;
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return (this.hosts = []);
      throw e;
    }
    try {
      if (text.length > 1024 * 1024) throw new VmdeskError(ErrorCode.broken, `${HOSTS_FILE} is larger than 1 MiB`);
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch (e) {
        throw new VmdeskError(ErrorCode.broken, `${HOSTS_FILE} is not valid JSON (${(e as Error).message})`);
      }
      const f = raw as Partial<HostsFile>;
      if (f?.version !== 1 || !Array.isArray(f.hosts)) throw new VmdeskError(ErrorCode.broken, `${HOSTS_FILE} is not a hosts file VMDesk understands (version ${String(f?.version)})`);
      if (f.hosts.length > HOSTS_MAX) throw new VmdeskError(ErrorCode.broken, `${HOSTS_FILE} lists more than ${HOSTS_MAX} hosts`);
      this.hosts = f.hosts.map(checkEntry);
      return this.hosts;
    } catch (e) {
      this.loadError = e as VmdeskError;
      throw e;
    }
  }

  list(): HostEntry[] {
    return [...this.load()];
  }

  /** The host of this name (case-insensitive), or undefined; never throws (a broken file knows no hosts). */
  peek(name: string): HostEntry | undefined {
    try {
      const lower = name.toLowerCase();
      return this.load().find((h) => h.name.toLowerCase() === lower);
    } catch {
      return undefined;
    }
  }

  /** The host of this name, or ENOTFOUND naming the hosts there are. */
  get(name: string): HostEntry {
    const h = this.peek(name);
    if (h) return h;
    const names = this.list().map((x) => x.name);
    throw new VmdeskError(ErrorCode.notFound, `no host named "${name}" (${names.length ? `hosts: ${names.join(', ')}` : 'none added yet: vmdesk hosts add NAME URI'})`);
  }

  private save(next: HostEntry[]): Promise<void> {
    const run = this.writing.then(async () => {
      await writeJsonAtomic(this.file, { version: 1, hosts: next } satisfies HostsFile);
      this.hosts = next;
    });
    this.writing = run.catch(() => undefined);
    return run;
  }

  /** Adds a host; EEXIST for a name or URI already there, EINVAL for a bad name or URI. Nothing changes on error. */
  async add(entry: { name: string; uri: string; pool?: string }): Promise<HostEntry> {
    const why = hostNameProblem(entry.name);
    if (why) throw new VmdeskError(ErrorCode.invalid, why);
    try {
      parseHostUri(entry.uri);
    } catch (e) {
      throw new VmdeskError(ErrorCode.invalid, (e as Error).message);
    }
    const hosts = this.list();
    if (hosts.length >= HOSTS_MAX) throw new VmdeskError(ErrorCode.invalid, `a library has at most ${HOSTS_MAX} hosts`);
    const lower = entry.name.toLowerCase();
    const byName = hosts.find((h) => h.name.toLowerCase() === lower);
    if (byName) throw new VmdeskError(ErrorCode.exists, `a host named "${byName.name}" already exists (${byName.uri})`);
    const byUri = hosts.find((h) => h.uri === entry.uri);
    if (byUri) throw new VmdeskError(ErrorCode.exists, `${entry.uri} is already added as host "${byUri.name}"`);
    const added: HostEntry = { name: entry.name, uri: entry.uri, pool: entry.pool ?? DEFAULT_POOL, addedAt: new Date().toISOString() };
    await this.save([...hosts, added]);
    return added;
  }

  async remove(name: string): Promise<HostEntry> {
    const h = this.get(name);
    await this.save(this.list().filter((x) => x !== h && x.name !== h.name));
    return h;
  }
}
