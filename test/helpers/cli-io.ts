// In-memory stdin/stdout/stderr for calling the CLI's main() in-process, with what it wrote collected.
import { PassThrough } from 'node:stream';

export function cliIo() {
  const out = { stdout: '', stderr: '' };
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on('data', (c) => (out.stdout += c));
  stderr.on('data', (c) => (out.stderr += c));
  return { out, io: { stdout, stderr, stdin: new PassThrough() } };
}
