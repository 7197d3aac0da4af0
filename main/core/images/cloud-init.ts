// cloud-init's NoCloud data source for VMs made from cloud images: a per-VM SSH key pair (ssh-keygen), the
// meta-data and user-data documents, and the seed ISO (volume label "cidata") built by cloud-localds,
// genisoimage or xorriso, whichever the host has. Values are validated by the contract; every string that
// enters YAML is written as a JSON string (valid YAML), so no value can add keys of its own.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { OsPreset } from '../../api/images.js';
import { findOnPath } from '../../platform/host-tools.js';

export const SEED_LABEL = 'cidata';
/** The SSH key pair's files inside a VM's bundle. */
export const SSH_KEY_FILE = 'ssh/id_ed25519';
export const SSH_KNOWN_HOSTS = 'ssh/known_hosts';

function run(bin: string, args: string[], what: string, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-16384)));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-16384)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new VmdeskError(ErrorCode.host, `cannot run ${path.basename(bin)} (${what}): ${e.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new VmdeskError(ErrorCode.host, `${path.basename(bin)} failed (${what}): ${err.trim().split('\n').at(-1) ?? `exit code ${code}`}`, err.trim().split('\n').slice(-8)));
    });
  });
}

/** Makes the VM's own key pair; the private key is 0600 in the bundle. Returns the public key line. */
export async function makeSshKey(bundleDir: string, comment: string): Promise<string> {
  const keygen = findOnPath('ssh-keygen');
  if (!keygen) throw new VmdeskError(ErrorCode.host, 'ssh-keygen is not installed (Debian package openssh-client): VMDesk cannot make the VM\'s SSH key');
  const file = path.join(bundleDir, SSH_KEY_FILE);
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await run(keygen, ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], 'SSH key');
  await fs.chmod(file, 0o600);
  await fs.chmod(`${file}.pub`, 0o600);
  return (await fs.readFile(`${file}.pub`, 'utf8')).trim();
}

export interface SeedOptions {
  instanceId: string;
  hostname: string;
  user: string;
  publicKey: string;
  preset: OsPreset;
  packages?: string[];
  /** The user's own user-data, merged after VMDesk's (cloud-init multipart). */
  userData?: string;
}

const y = (s: string) => JSON.stringify(s);

export function metaData(o: SeedOptions): string {
  return `instance-id: ${y(o.instanceId)}\nlocal-hostname: ${y(o.hostname)}\n`;
}

/** VMDesk's #cloud-config: the user with the VM's key and passwordless sudo, the host name, packages. */
export function vmdeskCloudConfig(o: SeedOptions): string {
  const shell = o.preset === 'alpine' ? '/bin/ash' : o.preset === 'linux' || o.preset === 'other' ? '/bin/sh' : '/bin/bash';
  const lines = [
    '#cloud-config',
    `hostname: ${y(o.hostname)}`,
    'manage_etc_hosts: true',
    'users:',
    `  - name: ${y(o.user)}`,
    `    sudo: ${y('ALL=(ALL) NOPASSWD:ALL')}`,
    `    shell: ${y(shell)}`,
    '    lock_passwd: true',
    '    ssh_authorized_keys:',
    `      - ${y(o.publicKey)}`,
    'ssh_pwauth: false',
    'disable_root: true',
  ];
  if (o.packages?.length) {
    lines.push('package_update: true', 'packages:');
    for (const p of o.packages) lines.push(`  - ${y(p)}`);
  }
  return lines.join('\n') + '\n';
}

const USER_DATA_KINDS: [RegExp, string][] = [
  [/^#cloud-config\s*\n/, 'text/cloud-config'],
  [/^#!/, 'text/x-shellscript'],
  [/^#cloud-boothook\s*\n/, 'text/cloud-boothook'],
  [/^#include\s*\n/, 'text/x-include-url'],
];

/**
 * The user-data document: VMDesk's #cloud-config alone, or a multipart message with the user's part after it
 * (its lists appended to VMDesk's, its keys not replacing VMDesk's), so the VM's key and user always exist.
 */
export function userData(o: SeedOptions): string {
  const ours = vmdeskCloudConfig(o);
  if (o.userData === undefined) return ours;
  const theirs = o.userData.replace(/\r\n/g, '\n');
  if (/[\u0000]/.test(theirs)) throw new VmdeskError(ErrorCode.invalid, 'user-data must be text (it contains NUL bytes)');
  const kind = USER_DATA_KINDS.find(([re]) => re.test(theirs))?.[1];
  if (!kind) throw new VmdeskError(ErrorCode.invalid, 'user-data must start with #cloud-config, #!, #cloud-boothook or #include (a multipart document is not accepted: give its parts as one of those)');
  let boundary: string;
  do boundary = `==VMDESK-${randomBytes(12).toString('hex')}==`;
  while (theirs.includes(boundary));
  const part = (type: string, name: string, body: string, extra: string[] = []) =>
    [`--${boundary}`, `Content-Type: ${type}; charset="utf-8"`, 'MIME-Version: 1.0', 'Content-Transfer-Encoding: 8bit', ...extra, `Content-Disposition: attachment; filename="${name}"`, '', body.endsWith('\n') ? body : body + '\n'].join('\n');
  return [
    `Content-Type: multipart/mixed; boundary="${boundary}"`,
    'MIME-Version: 1.0',
    '',
    part('text/cloud-config', 'vmdesk.cfg', ours),
    part(kind, 'user-data', theirs, kind === 'text/cloud-config' ? ['Merge-Type: list(append)+dict(no_replace,recurse_list)+str()'] : []),
    `--${boundary}--`,
    '',
  ].join('\n');
}

/** The ISO 9660 tool this host has, best first. */
export function seedIsoTool(): { bin: string; kind: 'cloud-localds' | 'genisoimage' | 'xorriso' | 'mkisofs' } | undefined {
  for (const kind of ['cloud-localds', 'genisoimage', 'xorriso', 'mkisofs'] as const) {
    const bin = findOnPath(kind);
    if (bin) return { bin, kind };
  }
  return undefined;
}

/** Writes the NoCloud seed ISO (label cidata, files meta-data and user-data) to `out`. */
export async function buildSeedIso(out: string, o: SeedOptions): Promise<{ tool: string }> {
  const tool = seedIsoTool();
  if (!tool) throw new VmdeskError(ErrorCode.host, 'no ISO 9660 tool to build the cloud-init seed: install xorriso or genisoimage (sudo apt install xorriso)');
  const dir = await fs.mkdtemp(path.join(path.dirname(out), '.seed-'));
  try {
    const ud = path.join(dir, 'user-data');
    const md = path.join(dir, 'meta-data');
    await fs.writeFile(ud, userData(o), { mode: 0o600 });
    await fs.writeFile(md, metaData(o), { mode: 0o600 });
    await fs.rm(out, { force: true });
    switch (tool.kind) {
      case 'cloud-localds':
        await run(tool.bin, [out, ud, md], 'cloud-init seed');
        break;
      case 'xorriso':
        await run(tool.bin, ['-as', 'mkisofs', '-quiet', '-output', out, '-volid', SEED_LABEL, '-joliet', '-rock', dir], 'cloud-init seed');
        break;
      default:
        await run(tool.bin, ['-quiet', '-output', out, '-volid', SEED_LABEL, '-joliet', '-rock', dir], 'cloud-init seed');
    }
    await fs.chmod(out, 0o600);
    return { tool: tool.kind };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** A host name from a VM name: lower case, runs of other characters as "-", at most 63. */
export function hostnameFor(vmName: string): string {
  const h = vmName
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return h || 'vm';
}
