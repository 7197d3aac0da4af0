// `npm start`: runs the desktop app under Electron, or serves the GUI to a browser when no Electron binary is installed.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);

/** The electron package exports the binary's path, or throws when its download never happened. */
function electronBinary() {
  try {
    const p = require('electron');
    return typeof p === 'string' && existsSync(p) ? p : null;
  } catch {
    return null;
  }
}

const bin = electronBinary();
const args = bin ? [fileURLToPath(new URL('../dist/main/electron/main.js', import.meta.url))] : [fileURLToPath(new URL('../bin/vmdesk.js', import.meta.url)), 'serve', ...process.argv.slice(2)];
if (!bin) console.log('vmdesk: no Electron binary installed; serving the GUI to your browser instead (open the URL below).');
const child = spawn(bin ?? process.execPath, args, { cwd: root, stdio: 'inherit' });
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(signal ? 1 : (code ?? 0)));
