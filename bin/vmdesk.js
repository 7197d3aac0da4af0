#!/usr/bin/env node
// The `vmdesk` command: runs the compiled CLI (npm run build:main produces dist/).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/main/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('vmdesk: not built yet; run "npm run build" in the VMDesk directory\n');
  process.exit(1);
}
const { main } = await import(entry.href);
const code = await main(process.argv.slice(2));
// Open handles (a lingering socket) must not keep a finished command alive.
process.exitCode = code;
setImmediate(() => process.exit(code));
