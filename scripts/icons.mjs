// Icons at every size from assets/icon.svg, at build time (nothing rasterised is committed):
//   dist/icons/<n>x<n>.png    16 … 1024, inside the app (window and tray icons, resources.ts iconFile)
//   build/icons/<n>x<n>.png   the same, for electron-builder's Linux targets (hicolor theme, .desktop file)
//   build/icon.icns           macOS, written here (PNG entries) so no platform tool is needed
// Rendered with resvg compiled to WebAssembly: the same pixels on every machine, no native dependency.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { initWasm, Resvg } from '@resvg/resvg-wasm';

export const SIZES = [16, 24, 32, 48, 64, 128, 256, 512, 1024];
/** ICNS entry types holding PNG data, by pixel size (the @2x types share sizes with the next one up). */
const ICNS_TYPES = [
  ['icp4', 16], ['icp5', 32], ['icp6', 64], ['ic07', 128], ['ic08', 256], ['ic09', 512], ['ic10', 1024],
  ['ic11', 32], ['ic12', 64], ['ic13', 256], ['ic14', 512],
];

export function icns(pngs) {
  const entries = ICNS_TYPES.map(([type, size]) => {
    const png = pngs.get(size);
    const head = Buffer.alloc(8);
    head.write(type, 0, 'ascii');
    head.writeUInt32BE(png.length + 8, 4);
    return Buffer.concat([head, png]);
  });
  const body = Buffer.concat(entries);
  const head = Buffer.alloc(8);
  head.write('icns', 0, 'ascii');
  head.writeUInt32BE(body.length + 8, 4);
  return Buffer.concat([head, body]);
}

export async function renderIcons(root = process.cwd()) {
  const require = createRequire(import.meta.url);
  await initWasm(readFileSync(require.resolve('@resvg/resvg-wasm/index_bg.wasm')));
  const svg = readFileSync(join(root, 'assets', 'icon.svg'), 'utf8');
  const pngs = new Map();
  for (const size of SIZES) {
    const r = new Resvg(svg, { fitTo: { mode: 'width', value: size }, background: 'rgba(0,0,0,0)' });
    pngs.set(size, Buffer.from(r.render().asPng()));
    r.free();
  }
  for (const dir of [join(root, 'dist', 'icons'), join(root, 'build', 'icons')]) {
    mkdirSync(dir, { recursive: true });
    for (const [size, png] of pngs) writeFileSync(join(dir, `${size}x${size}.png`), png);
  }
  writeFileSync(join(root, 'build', 'icon.icns'), icns(pngs));
  return pngs;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await renderIcons();
  console.log(`vmdesk: icons ${SIZES.join(', ')} px in dist/icons and build/icons, build/icon.icns`);
}
