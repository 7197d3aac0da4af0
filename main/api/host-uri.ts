// Hosts VMDesk reaches through libvirt: their names and connection URIs, checked without zod so the CLI can
// use the same rules. A URI never carries a password (ssh keys or an agent authenticate; ssh verifies host
// keys itself), and parameters that would switch verification off or run a command of someone's choosing
// are refused.

/** The engine that runs VMs on hosts: a host is a libvirt daemon reached by URI. */
export const HOST_ENGINE_KIND = 'libvirt';

/** The local library's name in lists and for `--host`: reserved, no added host may take it. */
export const LOCAL_HOST = 'local';

export const HOST_NAME_MAX = 32;
export const HOST_URI_MAX = 1024;

/** A host's name as VMDesk shows it: short, no spaces or path characters. */
export function hostNameProblem(name: string): string | undefined {
  if (!name) return 'a host name must not be empty';
  if (name.length > HOST_NAME_MAX) return `a host name has at most ${HOST_NAME_MAX} characters`;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) return 'a host name may contain letters, digits and . _ - and must start with a letter or digit';
  if (name.toLowerCase() === LOCAL_HOST) return `"${LOCAL_HOST}" is the local library's name; choose another`;
  return undefined;
}

export type HostTransport = 'local' | 'unix' | 'ssh' | 'libssh' | 'libssh2' | 'tls' | 'tcp';

export interface HostUri {
  /** As given (normalised: nothing added). */
  uri: string;
  transport: HostTransport;
  /** qemu:///session or qemu:///system. */
  mode: 'session' | 'system';
  user?: string;
  hostname?: string;
  port?: number;
  params: Map<string, string>;
  /** The host's files (disks, sockets) are on this machine: no host name, a local socket. */
  local: boolean;
}

const TRANSPORTS: Record<string, HostTransport> = {
  qemu: 'local',
  'qemu+unix': 'unix',
  'qemu+ssh': 'ssh',
  'qemu+libssh': 'libssh',
  'qemu+libssh2': 'libssh2',
  'qemu+tls': 'tls',
  'qemu+tcp': 'tcp',
};

const SSH: readonly HostTransport[] = ['ssh', 'libssh', 'libssh2'];

const absPath = (v: string) => (v.startsWith('/') ? undefined : 'must be an absolute path');

/** Query parameters VMDesk passes on, with what each may hold; anything else is refused by name. */
const PARAMS: Record<string, { transports?: readonly HostTransport[]; check: (v: string) => string | undefined }> = {
  socket: { transports: ['local', 'unix'], check: absPath },
  keyfile: { transports: SSH, check: absPath },
  known_hosts: { transports: SSH, check: absPath },
  sshauth: { transports: SSH, check: (v) => (v.split(',').every((m) => m === 'agent' || m === 'privkey') ? undefined : 'may list agent and privkey only (no passwords)') },
  mode: { check: (v) => (['auto', 'legacy', 'direct'].includes(v) ? undefined : 'must be auto, legacy or direct') },
  proxy: { transports: SSH, check: (v) => (['auto', 'netcat', 'native'].includes(v) ? undefined : 'must be auto, netcat or native') },
  no_tty: { transports: SSH, check: (v) => (v === '0' || v === '1' ? undefined : 'must be 0 or 1') },
  pkipath: { transports: ['tls'], check: absPath },
};

const REFUSED: Record<string, string> = {
  no_verify: 'it switches off verification of the host (ssh host keys, TLS certificates)',
  known_hosts_verify: 'ssh itself verifies host keys; VMDesk does not change how',
  command: 'it runs a command VMDesk did not choose on the host',
  netcat: 'it runs a command VMDesk did not choose on the host',
  password: 'VMDesk stores no passwords: use ssh keys or an ssh agent',
  authfile: 'VMDesk stores no credentials',
};

/** Parses and checks a libvirt URI for a host; throws Error with a sentence saying what is wrong. */
export function parseHostUri(text: string): HostUri {
  const fail = (why: string): never => {
    throw new Error(`host URI "${text.length > 120 ? text.slice(0, 117) + '...' : text}": ${why}`);
  };
  if (!text) fail('must not be empty');
  if (text.length > HOST_URI_MAX) fail(`is longer than ${HOST_URI_MAX} characters`);
  if (/[\u0000-\u0020\u007f]/.test(text)) fail('must not contain spaces or control characters');
  const m = /^([a-z0-9+]+):\/\/([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?$/.exec(text);
  if (!m) fail('is not a libvirt URI such as qemu:///session, qemu:///system or qemu+ssh://user@host/system');
  const [, scheme, authority, pathPart, query] = m as unknown as [string, string, string, string | undefined, string | undefined];
  const transport = TRANSPORTS[scheme];
  if (!transport) fail(`scheme "${scheme}" is not one VMDesk speaks (qemu, qemu+ssh, qemu+libssh, qemu+libssh2, qemu+unix, qemu+tls, qemu+tcp)`);
  const mode = pathPart === '/session' ? 'session' : pathPart === '/system' ? 'system' : fail('must end in /session or /system (the QEMU driver of libvirt)');
  const out: HostUri = { uri: text, transport: transport!, mode, params: new Map(), local: false };
  if (authority) {
    if (transport === 'local' || transport === 'unix') fail(`${scheme}:// talks to this machine; give no host name (qemu:///system), or use qemu+ssh://user@host/${mode}`);
    let hostPart = authority;
    const at = authority.lastIndexOf('@');
    if (at >= 0) {
      const user = authority.slice(0, at);
      hostPart = authority.slice(at + 1);
      if (user.includes(':')) fail('contains a password; VMDesk stores no passwords: use ssh keys or an ssh agent');
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(decodeURIComponent(user))) fail('has a user name VMDesk does not accept (letters, digits, . _ -)');
      out.user = decodeURIComponent(user);
    }
    const hp = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(?::(\d{1,5}))?$/.exec(hostPart);
    if (!hp) fail(`has a host name VMDesk does not accept ("${hostPart}")`);
    out.hostname = hp![1]!;
    if (hp![2] !== undefined) {
      const port = Number(hp![2]);
      if (port < 1 || port > 65535) fail('has a port outside 1-65535');
      out.port = port;
    }
  } else if (transport !== 'local' && transport !== 'unix') {
    fail(`${scheme} needs a host: ${scheme}://user@host/${mode}`);
  }
  for (const pair of query ? query.split('&') : []) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    const key = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq));
    let value: string;
    try {
      value = decodeURIComponent(eq < 0 ? '' : pair.slice(eq + 1));
    } catch {
      fail(`parameter "${key}" is not valid percent-encoding`);
    }
    if (/[\u0000-\u001f\u007f]/.test(value!)) fail(`parameter "${key}" contains control characters`);
    const refused = REFUSED[key];
    if (refused) fail(`parameter "${key}" is refused: ${refused}`);
    const rule = PARAMS[key];
    if (!rule) fail(`parameter "${key}" is not one VMDesk passes on (${Object.keys(PARAMS).join(', ')})`);
    if (rule!.transports && !rule!.transports.includes(out.transport)) fail(`parameter "${key}" does not apply to ${scheme}`);
    const why = rule!.check(value!);
    if (why) fail(`parameter "${key}" ${why}`);
    if (out.params.has(key)) fail(`parameter "${key}" is given twice`);
    out.params.set(key, value!);
  }
  out.local = out.transport === 'local' || out.transport === 'unix';
  return out;
}

/**
 * The URI VMDesk connects with: as stored, plus no_tty=1 for ssh transports so ssh fails instead of asking
 * for a password nobody can type (the daemon has no terminal).
 */
export function connectUri(uri: HostUri): string {
  if (!SSH.includes(uri.transport) || uri.params.has('no_tty')) return uri.uri;
  return `${uri.uri}${uri.uri.includes('?') ? '&' : '?'}no_tty=1`;
}

/** Words for `vmdesk hosts list`: where the host is and how it is reached. */
export function describeHostUri(uri: HostUri): string {
  if (uri.local) return `this machine, libvirt ${uri.mode} daemon${uri.params.has('socket') ? ` at ${uri.params.get('socket')}` : ''}`;
  const who = uri.user ? `${uri.user}@` : '';
  const how = uri.transport === 'tcp' ? 'plain TCP (not encrypted)' : uri.transport === 'tls' ? 'TLS' : 'ssh';
  return `${who}${uri.hostname}${uri.port ? `:${uri.port}` : ''} over ${how}, libvirt ${uri.mode} daemon`;
}
