// Turns pasted text into X11 keysyms for noVNC, so text can be "typed" into guests that have no clipboard agent.
export const XK = {
  Return: 0xff0d,
  Tab: 0xff09,
  BackSpace: 0xff08,
  Escape: 0xff1b,
  Shift_L: 0xffe1,
} as const;

/** US-layout characters that need Shift; QEMU maps keysyms to scancodes, so we press Shift ourselves. */
const SHIFTED = new Set('~!@#$%^&*()_+{}|:"<>?ABCDEFGHIJKLMNOPQRSTUVWXYZ');

export interface KeyStroke {
  keysym: number;
  shift: boolean;
}

export function keysymForChar(ch: string): number | null {
  if (ch === '\n' || ch === '\r') return XK.Return;
  if (ch === '\t') return XK.Tab;
  const cp = ch.codePointAt(0);
  if (cp === undefined) return null;
  if ((cp >= 0x20 && cp <= 0x7e) || (cp >= 0xa0 && cp <= 0xff)) return cp;
  if (cp < 0x20 || cp === 0x7f) return null;
  // X11 maps any other Unicode code point to 0x01000000 + code point.
  return 0x01000000 + cp;
}

export function textToKeystrokes(text: string): KeyStroke[] {
  const out: KeyStroke[] = [];
  let prevCr = false;
  for (const ch of text) {
    if (ch === '\n' && prevCr) {
      prevCr = false;
      continue; // CRLF is one Enter
    }
    prevCr = ch === '\r';
    const keysym = keysymForChar(ch);
    if (keysym !== null) out.push({ keysym, shift: SHIFTED.has(ch) });
  }
  return out;
}
