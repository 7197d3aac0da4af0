// Pasted text becomes keysyms, with Shift pressed for characters that need it on a US layout.
import { describe, expect, it } from 'vitest';
import { textToKeystrokes, XK } from './keysyms';

describe('textToKeystrokes', () => {
  it('maps ASCII, shifted symbols, newlines and Unicode', () => {
    expect(textToKeystrokes('aA!\n')).toEqual([
      { keysym: 0x61, shift: false },
      { keysym: 0x41, shift: true },
      { keysym: 0x21, shift: true },
      { keysym: XK.Return, shift: false },
    ]);
    expect(textToKeystrokes('x\r\ny')).toHaveLength(3);
    expect(textToKeystrokes('€')[0]!.keysym).toBe(0x01000000 + 0x20ac);
    expect(textToKeystrokes('\u0007')).toEqual([]);
  });
});
