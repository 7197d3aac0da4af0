// `virsh screenshot` gives what the host's QEMU writes: PNG where it can (QEMU 7.1 and later), else a binary
// PPM (P6); VMDesk's contract speaks PNG. A small, bounded converter: the header is checked and the pixel data
// must be exactly what it declares.
import { crc32, deflateSync } from 'node:zlib';
import { ErrorCode, VmdeskError } from '../../api/errors.js';

/** Pixels past which a screenshot is refused (16384 x 8192). */
export const PPM_MAX_PIXELS = 16384 * 8192;

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A screenshot as PNG: a PNG as it is, a P6 PPM converted; EENGINE for anything else. */
export function screenshotToPng(data: Buffer): Buffer {
  if (data.subarray(0, 8).equals(PNG_SIGNATURE)) return data;
  return ppmToPng(data);
}

/** A P6 PPM (maxval 255) as a PNG; EENGINE when it is anything else. */
export function ppmToPng(ppm: Buffer): Buffer {
  const bad = (why: string) => new VmdeskError(ErrorCode.engine, `the screenshot from libvirt is not a usable PPM image: ${why}`);
  // Header: "P6" whitespace width whitespace height whitespace maxval one-whitespace, comments (#…\n) allowed.
  let i = 0;
  const fields: string[] = [];
  if (ppm.subarray(0, 2).toString('ascii') !== 'P6') throw bad('it does not start with P6');
  i = 2;
  while (fields.length < 3) {
    while (i < ppm.length && i < 1024) {
      const c = ppm[i]!;
      if (c === 0x23) while (i < ppm.length && ppm[i] !== 0x0a) i++;
      else if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
    const start = i;
    while (i < ppm.length && i < 1024 && ppm[i]! >= 0x30 && ppm[i]! <= 0x39) i++;
    if (i === start || i - start > 6) throw bad('its header is malformed');
    fields.push(ppm.subarray(start, i).toString('ascii'));
  }
  i++; // the single whitespace before the pixels
  const [w, h, max] = fields.map(Number) as [number, number, number];
  if (max !== 255) throw bad(`maxval ${max} (only 255 is read)`);
  if (w < 1 || h < 1 || w * h > PPM_MAX_PIXELS) throw bad(`size ${w}x${h}`);
  const rowBytes = w * 3;
  if (ppm.length - i !== rowBytes * h) throw bad(`${ppm.length - i} bytes of pixels for ${w}x${h}`);
  const raw = Buffer.alloc((rowBytes + 1) * h);
  for (let y = 0; y < h; y++) {
    raw[y * (rowBytes + 1)] = 0;
    ppm.copy(raw, y * (rowBytes + 1) + 1, i + y * rowBytes, i + (y + 1) * rowBytes);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  ihdr[10] = 0;
  ihdr[11] = 0;
  ihdr[12] = 0;
  return Buffer.concat([PNG_SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
