// `vmdesk VERB --help`, `vmdesk VERB ... -h` and `vmdesk help VERB` show that verb's usage (its entries of the
// global usage, or the verb's own sub-command list) without starting a daemon or touching the library.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliIo as io } from '../helpers/cli-io.js';
import { main, usageOf } from '../../main/cli/main.js';

let home: string;
beforeAll(() => {
  home = mkdtempSync(path.join(os.tmpdir(), 'vmdesk-help-'));
});
afterAll(() => rmSync(home, { recursive: true, force: true }));

describe('vmdesk VERB --help', () => {
  // Every verb the CLI dispatches (read from its switch, so a new verb cannot go without help).
  const source = readFileSync(fileURLToPath(new URL('../../main/cli/main.ts', import.meta.url)), 'utf8');
  const start = source.indexOf('async function runVerb(');
  const verbs = [...new Set([...source.slice(start, source.indexOf('\n}\n', start)).matchAll(/case '([a-z-]+)':/g)].map((m) => m[1]!))];

  it('shows each verb its own usage on stdout and exits 0, without touching the library', async () => {
    expect(verbs.length).toBeGreaterThan(30);
    for (const verb of verbs) {
      for (const argv of [[verb, '--help'], [verb, 'NAME', '-h'], ['help', verb]]) {
        const { out, io: cliIo } = io();
        // A library that does not exist yet: starting a daemon (or anything else) would create it.
        const lib = path.join(home, 'untouched', verb);
        expect(await main(['--home', lib, ...argv], cliIo), `${argv.join(' ')}: ${out.stderr}`).toBe(0);
        expect(out.stdout, argv.join(' ')).toMatch(new RegExp(`\\b${verb}\\b`));
        expect(out.stderr).toBe('');
        expect(existsSync(lib), argv.join(' ')).toBe(false);
      }
    }
  });

  it('leaves a --help after "--" alone, and says so of a verb it does not know', async () => {
    expect(usageOf('kill')).toMatch(/kill \| pause \| resume \| reset NAME/);
    expect(usageOf('pause')).toMatch(/^usage: vmdesk \[--home DIR\] pause ...\n\n  kill \| pause \| resume \| reset NAME\n/);
    expect(usageOf('create')).toMatch(/--image ID/);
    expect(usageOf('create')).toMatch(/--tpm on\|off/);
    expect(usageOf('nonsense')).toBeUndefined();
    const lib = path.join(home, 'untouched', 'x');
    const bad = io();
    expect(await main(['--home', lib, 'nonsense', '--help'], bad.io)).toBe(2);
    expect(bad.out.stderr).toMatch(/unknown verb "nonsense"/);
    // After "--" a word is an argument: list takes none, and says so instead of showing its usage.
    const after = io();
    expect(await main(['--home', lib, 'list', '--', '--help'], after.io)).toBe(2);
    expect(after.out.stdout).toBe('');
    expect(existsSync(lib)).toBe(false);
  });
});
