// How to run one of VMDesk's own Node entry points as a separate process: the compiled JS beside the calling
// module, or (running from sources under vitest) the TypeScript source through a loader found in node_modules.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ErrorCode, VmdeskError } from '../api/errors.js';

/** node arguments that run `<dir of fromUrl>/<relative>.js` (or its .ts source). */
export function nodeEntry(fromUrl: string, relative: string): string[] {
  const here = dirname(fileURLToPath(fromUrl));
  const js = resolve(here, `${relative}.js`);
  if (existsSync(js)) return [js];
  const ts = resolve(here, `${relative}.ts`);
  if (existsSync(ts)) {
    for (let dir = here; ; dir = dirname(dir)) {
      for (const loader of ['tsx/dist/loader.mjs', 'jiti/lib/jiti-register.mjs']) {
        const p = join(dir, 'node_modules', loader);
        if (existsSync(p)) return ['--import', pathToFileURL(p).href, ts];
      }
      if (dirname(dir) === dir) break;
    }
  }
  throw new VmdeskError(ErrorCode.internal, `VMDesk entry ${relative} not found next to ${here} (run npm run build)`);
}

/** Environment for a Node child: without the caller's loaders/inspectors, and as plain Node inside Electron. */
export function nodeChildEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.NODE_OPTIONS;
  if (process.versions.electron) env.ELECTRON_RUN_AS_NODE = '1';
  return env;
}

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Which code this process runs: the build stamp written by `npm run build:main` (dist/main/build-info.json),
 * or "source" when running the TypeScript sources. A daemon of another build is not the code the client has.
 */
export function buildInfo(): { version: string; build: string } {
  for (const p of [join(root, 'build-info.json'), join(root, '..', 'build-info.json')]) {
    try {
      const j = JSON.parse(readFileSync(p, 'utf8')) as { version?: string; build?: string };
      if (j.version && j.build) return { version: j.version, build: j.build };
    } catch {
      /* next */
    }
  }
  let version = '0.0.0';
  for (let dir = root; dirname(dir) !== dir; dir = dirname(dir)) {
    try {
      version = (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
      break;
    } catch {
      /* up */
    }
  }
  return { version, build: 'source' };
}
