// `vmdesk serve` listens on loopback unless told otherwise: any other --host needs --unsafe-listen-all, which warns that the token travels in clear text.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cliIo as io } from '../helpers/cli-io.js';
import { main } from '../../main/cli/main.js';

let home: string;
beforeAll(() => {
  home = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-serve-'));
});
afterAll(async () => {
  // serve started the library's daemon (as its own process); none may linger after the tests.
  const { out, io: cliIo } = io();
  expect(await main(['--home', home, 'daemon', 'stop'], cliIo), out.stderr).toBe(0);
  rmSync(home, { recursive: true, force: true });
});

/**
 * Runs `vmdesk serve ...` until it prints its URL, then stops it the way Ctrl-C would. Only the listener
 * serve added is called: the test runner may have its own.
 */
async function serveUntilListening(args: string[]) {
  const { out, io: cliIo } = io();
  const before = new Set(process.listeners('SIGINT'));
  const done = main(['--home', home, 'serve', ...args], cliIo);
  await vi.waitFor(() => expect(out.stdout).toMatch(/serving at http:\/\/\S+/), { timeout: 10_000 });
  const url = /serving at (\S+)/.exec(out.stdout)![1]!;
  for (const l of process.listeners('SIGINT')) if (!before.has(l)) (l as (s: string) => void)('SIGINT');
  return { code: await done, url, ...out };
}

describe('vmdesk serve --host', () => {
  it('refuses a non-loopback host without --unsafe-listen-all, saying how (EINVAL, exit 2)', async () => {
    for (const host of ['0.0.0.0', '::', '192.168.1.10', 'example.com']) {
      const { out, io: cliIo } = io();
      const code = await main(['--home', home, 'serve', '--host', host], cliIo);
      expect(code, host).toBe(2);
      expect(out.stderr).toContain('--unsafe-listen-all');
      expect(out.stderr).toMatch(/clear text/);
      expect(out.stdout).not.toMatch(/token=/);
    }
  });

  it('needs no flag for loopback and prints no warning', async () => {
    for (const host of ['127.0.0.1', 'localhost']) {
      const r = await serveUntilListening(['--host', host]);
      expect(r.code, host).toBe(0);
      expect(r.stderr, host).toBe('');
      expect(r.url).toMatch(/token=/);
    }
    const r = await serveUntilListening([]);
    expect(r.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=/);
  });

  it('listens on every interface with --unsafe-listen-all, warning that the token travels in clear text', async () => {
    const r = await serveUntilListening(['--host', '0.0.0.0', '--unsafe-listen-all']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/WARNING/);
    expect(r.stderr).toMatch(/plain HTTP/);
    expect(r.stderr).toMatch(/clear text/);
  });

  it('lists the flag in the usage', async () => {
    const { out, io: cliIo } = io();
    expect(await main(['--help'], cliIo)).toBe(0);
    expect(out.stdout).toMatch(/serve .*\n\s+\[--unsafe-listen-all\]/);
  });
});
