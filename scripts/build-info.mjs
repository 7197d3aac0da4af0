// Stamps dist/main/build-info.json with VMDesk's version and a hash of the compiled code: a client whose
// build differs from a running daemon's restarts that daemon when it is idle (main/client/daemon-client.ts).
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dist = 'dist/main';
const hash = createHash('sha256');
function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.js')) hash.update(p).update(readFileSync(p));
  }
}
walk(dist);
const { version } = JSON.parse(readFileSync('package.json', 'utf8'));
writeFileSync(join(dist, 'build-info.json'), JSON.stringify({ version, build: hash.digest('hex').slice(0, 16) }) + '\n');
