// Builds the freestanding test guest (gcc -ffreestanding -nostdlib -static + linker script) and packs it
// into a minimal bzImage that follows the Linux x86 boot protocol: a 4 KiB setup area with the setup header, 16-bit setup code (setup.S)
// ("HdrS", version 2.15, XLF_KERNEL_64), then the 64-bit payload. Also makes deliberately broken images.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
export const guestDir = join(root, 'test-output', 'native-guests');

// Seven setup sectors make the setup area exactly one 4 KiB zero page: the 16-bit path fills its e820 table
// in place (0x2d0..0xcd0), so the setup code lives above it at 0xe00, reached by a near jump at 0x268.
const SETUP_SECTS = 7;
const SETUP_CODE_OFFSET = 0xe00;

/**
 * Packs a flat 64-bit payload (linked at 1 MiB, 64-bit entry at +0x200) as a bzImage.
 * @param {Buffer} payload
 * @param {{ version?: number, magic?: string, xloadflags?: number, initSize?: number, bootFlag?: number, loadflags?: number }} [o]
 * @returns {Buffer}
 */
export function packBzImage(payload, o = {}, setupCode = buildSetupCode()) {
  payload = Buffer.concat([payload, Buffer.alloc((16 - (payload.length % 16)) % 16)]); // syssize counts paragraphs
  const setup = Buffer.alloc((SETUP_SECTS + 1) * 512);
  setup.writeUInt8(SETUP_SECTS, 0x1f1);
  setup.writeUInt32LE(Math.ceil(payload.length / 16), 0x1f4); // syssize in 16-byte paragraphs
  setup.writeUInt16LE(o.bootFlag ?? 0xaa55, 0x1fe);
  setup.writeUInt8(0xeb, 0x200); // jmp short over the header; its offset byte gives the header length
  setup.writeUInt8(0x66, 0x201);
  setup.write(o.magic ?? 'HdrS', 0x202, 'latin1');
  setup.writeUInt16LE(o.version ?? 0x020f, 0x206);
  setup.writeUInt8(o.loadflags ?? 0x01, 0x211); // LOADED_HIGH
  setup.writeUInt32LE(0x100000, 0x214); // code32_start
  setup.writeUInt32LE(0x7fffffff, 0x22c); // initrd_addr_max
  setup.writeUInt32LE(0x200000, 0x230); // kernel_alignment
  setup.writeUInt16LE(o.xloadflags ?? 0x0001, 0x236); // XLF_KERNEL_64
  setup.writeUInt32LE(2048, 0x238); // cmdline_size
  setup.writeBigUInt64LE(0x100000n, 0x258); // pref_address
  setup.writeUInt32LE(o.initSize ?? Math.ceil((payload.length + 0x40000) / 4096) * 4096, 0x260);
  if (setupCode.length > setup.length - SETUP_CODE_OFFSET) throw new Error('setup code does not fit in the setup sectors');
  setup.writeUInt8(0xe9, 0x268); // jmp near SETUP_CODE_OFFSET
  setup.writeInt16LE(SETUP_CODE_OFFSET - 0x26b, 0x269);
  setupCode.copy(setup, SETUP_CODE_OFFSET);
  return Buffer.concat([setup, payload]);
}

function sourcesHash() {
  const h = createHash('sha256');
  for (const f of ['start.S', 'setup.S', 'guest.c', 'guest.ld', 'build.mjs']) h.update(readFileSync(join(here, f)));
  return h.digest('hex').slice(0, 16);
}

/** Assembles the 16-bit setup code (linked at its offset inside the setup area, which is DS-relative). */
export function buildSetupCode() {
  mkdirSync(guestDir, { recursive: true });
  const bin = join(guestDir, `setup-${sourcesHash()}.bin`);
  if (!existsSync(bin)) {
    const obj = `${bin}.o`;
    execFileSync('gcc', ['-c', '-o', obj, join(here, 'setup.S')], { stdio: 'pipe' });
    execFileSync('ld', ['-m', 'elf_x86_64', `-Ttext=0x${SETUP_CODE_OFFSET.toString(16)}`, '--oformat', 'binary', '-e', '_start', '-o', `${bin}.tmp`, obj], { stdio: 'pipe' });
    renameSync(`${bin}.tmp`, bin);
  }
  return readFileSync(bin);
}

/** Compiles the guest once per source version; returns the flat payload and its ELF symbol sizes. */
export function buildPayload() {
  mkdirSync(guestDir, { recursive: true });
  const tag = sourcesHash();
  const bin = join(guestDir, `guest-${tag}.bin`);
  if (!existsSync(bin)) {
    const elf = join(guestDir, `guest-${tag}.elf`);
    execFileSync('gcc', [
      '-O2', '-ffreestanding', '-nostdlib', '-static', '-fno-pic', '-no-pie', '-mno-red-zone', '-mgeneral-regs-only',
      '-fno-stack-protector', '-fno-asynchronous-unwind-tables', '-mcmodel=small', '-Wl,--build-id=none',
      '-T', join(here, 'guest.ld'), '-o', elf, join(here, 'start.S'), join(here, 'guest.c'),
    ], { stdio: 'pipe' });
    execFileSync('objcopy', ['-O', 'binary', '--only-section=.head', '--only-section=.text', '--only-section=.rodata', '--only-section=.data', elf, `${bin}.tmp`]);
    renameSync(`${bin}.tmp`, bin);
  }
  return readFileSync(bin);
}

/** Path of the packed test guest bzImage (built on first use). */
export function ensureTestGuest() {
  const payload = buildPayload();
  const out = join(guestDir, `guest-${sourcesHash()}.bzImage`);
  if (!existsSync(out)) writeFileSync(out, packBzImage(payload));
  return out;
}

/** Writes a malformed variant of the test guest and returns its path. */
export function writeBrokenGuest(kind) {
  const payload = buildPayload();
  let img;
  switch (kind) {
    case 'bad-magic': img = packBzImage(payload, { magic: 'NoPe' }); break;
    case 'old-protocol': img = packBzImage(payload, { version: 0x0204 }); break;
    case 'no-64bit': img = packBzImage(payload, { xloadflags: 0 }); break;
    case 'truncated': img = packBzImage(payload).subarray(0, (SETUP_SECTS + 1) * 512 + 100); break;
    case 'tiny': img = Buffer.alloc(300); break;
    case 'huge': img = packBzImage(payload, { initSize: 0x7ff00000 }); break;
    default: throw new Error(`unknown broken guest kind ${kind}`);
  }
  const out = join(guestDir, `broken-${kind}.bzImage`);
  writeFileSync(out, img);
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) console.log(ensureTestGuest());
