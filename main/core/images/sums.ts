// Upstream checksum files (SHA256SUMS, SHA512SUMS, Fedora's CHECKSUM, Alpine's .sha256) and their OpenPGP
// signatures. The files come from the internet: they are parsed line by line with fixed patterns, bounded,
// and a signature is checked with gpgv (GnuPG's verify-only tool) against a keyring file named by the
// catalogue, never against the user's own keyring or anything the download supplies.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import type { ChecksumAlgorithm } from '../../api/images.js';
import { findOnPath } from '../../platform/host-tools.js';

/** Checksum files of real distributions are a few KiB; more than this is not one. */
export const SUMS_MAX_BYTES = 1024 * 1024;
export const SIGNATURE_MAX_BYTES = 64 * 1024;
const LINE_MAX = 1024;

const HEX_LEN: Record<ChecksumAlgorithm, number> = { sha256: 64, sha512: 128 };

/**
 * File name → lower-case hex digest, for one algorithm. Understands GNU coreutils lines ("HEX  name",
 * "HEX *name") and BSD/Fedora lines ("SHA256 (name) = HEX"); anything else (comments, other algorithms,
 * PGP armour) is skipped. Names with a directory part are kept as written, "./" removed.
 */
export function parseSums(text: string, algorithm: ChecksumAlgorithm): Map<string, string> {
  const out = new Map<string, string>();
  const n = HEX_LEN[algorithm];
  const gnu = new RegExp(`^([0-9a-fA-F]{${n}}) [ *](.+)$`);
  const bsd = new RegExp(`^${algorithm.toUpperCase()} \\((.+)\\) = ([0-9a-fA-F]{${n}})$`);
  for (const raw of text.split(/\r?\n/)) {
    if (raw.length > LINE_MAX) continue;
    const line = raw.trim();
    let name: string | undefined;
    let hex: string | undefined;
    const g = gnu.exec(line);
    if (g) [hex, name] = [g[1], g[2]];
    const b = bsd.exec(line);
    if (b) [name, hex] = [b[1], b[2]];
    if (!name || !hex) continue;
    name = name.replace(/^\.\//, '');
    if (/[\u0000-\u001f\u007f]/.test(name)) continue;
    // A name listed twice with two digests is ambiguous: refuse it rather than pick one.
    const prev = out.get(name);
    if (prev !== undefined && prev !== hex.toLowerCase()) out.set(name, '');
    else out.set(name, hex.toLowerCase());
  }
  for (const [k, v] of out) if (!v) out.delete(k);
  return out;
}

/** The text a clear-signed message signs (dash-escaping undone), or the text itself when it is not one. */
export function clearsignedBody(text: string): string {
  const lines = text.split(/\r?\n/);
  const start = lines.findIndex((l) => l === '-----BEGIN PGP SIGNED MESSAGE-----');
  if (start < 0) return text;
  let i = start + 1;
  while (i < lines.length && lines[i] !== '') i++; // armor headers ("Hash: SHA256")
  const end = lines.findIndex((l, j) => j > i && l === '-----BEGIN PGP SIGNATURE-----');
  return lines
    .slice(i + 1, end < 0 ? lines.length : end)
    .map((l) => (l.startsWith('- ') ? l.slice(2) : l))
    .join('\n');
}

/** Picks the image's name in a checksum file: the one the URL names, or the newest matching `pattern`. */
export function pickFile(sums: Map<string, string>, pattern: string): string | undefined {
  let re: RegExp;
  try {
    re = new RegExp(pattern);
  } catch {
    throw new VmdeskError(ErrorCode.internal, `the file pattern ${pattern} is not a regular expression`);
  }
  const names = [...sums.keys()].filter((n) => !n.includes('/') && re.test(n));
  names.sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  return names.at(-1);
}

export interface GpgResult {
  /** The signer's fingerprint (VALIDSIG). */
  fingerprint: string;
  /** Clear-signed input: the verified text (only that may be trusted). */
  text?: string;
}

function run(bin: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    const out: Buffer[] = [];
    let outBytes = 0;
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      outBytes += d.length;
      if (outBytes <= SUMS_MAX_BYTES * 2) out.push(d);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-8192)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr });
    });
  });
}

/** gpgv wants a binary keyring: an ASCII-armoured key file is converted (gpg --dearmor) into `tmp`. */
async function binaryKeyring(keyring: string, tmp: string, env: NodeJS.ProcessEnv): Promise<string> {
  const head = Buffer.alloc(64);
  const fh = await fs.open(keyring, 'r');
  try {
    await fh.read(head, 0, 64, 0);
  } finally {
    await fh.close();
  }
  if (!head.toString('latin1').startsWith('-----BEGIN PGP')) return keyring;
  const gpg = findOnPath('gpg');
  if (!gpg) throw new VmdeskError(ErrorCode.host, `${keyring} is an armoured key and gpg (to convert it) is not installed`);
  const out = path.join(tmp, 'keyring.gpg');
  const r = await run(gpg, ['--batch', '--quiet', '--dearmor', '--output', out, keyring], env);
  if (r.code !== 0) throw new VmdeskError(ErrorCode.invalid, `cannot read the keyring ${keyring}: ${r.stderr.trim().split('\n').at(-1) ?? ''}`);
  return out;
}

/**
 * Checks an OpenPGP signature with gpgv against one keyring. `signature` undefined: `data` is clear-signed
 * and the verified text is returned. Throws EINVAL when the signature is bad or by a key not in the keyring.
 */
export async function gpgVerify(opts: { keyring: string; data: Buffer | { file: string }; signature?: Buffer; what: string }): Promise<GpgResult> {
  const gpgv = findOnPath('gpgv');
  if (!gpgv) throw new VmdeskError(ErrorCode.host, 'gpgv is not installed (Debian package gpgv): signatures cannot be checked');
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vmdesk-gpgv-'));
  try {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', GNUPGHOME: tmp, LC_ALL: 'C' };
    const keyring = await binaryKeyring(opts.keyring, tmp, env);
    let dataFile: string;
    if (Buffer.isBuffer(opts.data)) {
      dataFile = path.join(tmp, 'data');
      await fs.writeFile(dataFile, opts.data, { mode: 0o600 });
    } else dataFile = opts.data.file;
    const args = ['--status-fd', '2', '--keyring', keyring];
    let outFile: string | undefined;
    if (opts.signature) {
      const sigFile = path.join(tmp, 'data.sig');
      await fs.writeFile(sigFile, opts.signature, { mode: 0o600 });
      args.push(sigFile, dataFile);
    } else {
      outFile = path.join(tmp, 'verified');
      args.push('--output', outFile, dataFile);
    }
    const r = await run(gpgv, args, env, Buffer.isBuffer(opts.data) ? 30_000 : 600_000);
    const status = r.stderr.split('\n');
    const valid = status.find((l) => l.startsWith('[GNUPG:] VALIDSIG '));
    const good = status.some((l) => l.startsWith('[GNUPG:] GOODSIG '));
    if (r.code !== 0 || !valid || !good) {
      const why = status.some((l) => l.startsWith('[GNUPG:] BADSIG '))
        ? 'the signature does not match (the file was altered)'
        : status.some((l) => l.startsWith('[GNUPG:] NO_PUBKEY ') || l.startsWith('[GNUPG:] ERRSIG '))
          ? `it is signed by a key that is not in ${opts.keyring}`
          : 'gpgv did not accept it';
      throw new VmdeskError(ErrorCode.invalid, `the signature of ${opts.what} is not valid: ${why}`, status.filter((l) => !l.startsWith('[GNUPG:]')).slice(-5));
    }
    const fingerprint = valid.split(' ')[2] ?? '';
    const text = outFile ? await fs.readFile(outFile, 'utf8') : undefined;
    return { fingerprint, ...(text !== undefined ? { text } : {}) };
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}
