// The terminal tab's sentences: a serial fallback is said plainly, errors keep the daemon's words.
import { describe, expect, it } from 'vitest';
import { isTerminalReport, terminalEndText, terminalOpenedText } from './terminal-words';

describe('terminal words', () => {
  it('says how the terminal reached the guest', () => {
    expect(terminalOpenedText('ssh', 'alice@127.0.0.1:2222')).toBe('SSH session as alice@127.0.0.1:2222 with the key VMDesk made for this VM.');
    expect(terminalOpenedText('serial')).toMatch(/has no SSH access .* serial console/);
  });

  it('says why it ended', () => {
    expect(terminalEndText({ exitCode: 0 })).toBe('The session ended.');
    expect(terminalEndText({ exitCode: 3 })).toBe('The session ended with exit status 3.');
    expect(terminalEndText({ signal: 9 })).toBe('The session ended (signal 9).');
    expect(terminalEndText({ error: { code: 'ESTATE', message: '"g1" is not running (it is stopped)', details: [] } })).toBe('The terminal could not open or ended: "g1" is not running (it is stopped)');
    expect(terminalEndText({ error: { code: 'ECANCELED', message: 'closed', details: [] } })).toBe('The terminal was closed.');
  });

  it('tells xterm\'s own answers to terminal queries from typed input', () => {
    for (const r of ['\x1b[12;5R', '\x1b[?1;2c', '\x1b[>0;276;0c', '\x1b[0n', '\x1b[8;24;80t', '\x1b]11;rgb:0f0f/1717/2a2a\x07', '\x1b[I', '\x1b[12;5R\x1b[12;5R']) expect(isTerminalReport(r), JSON.stringify(r)).toBe(true);
    for (const t of ['ls\r', 'a', '\x1b[A', '\x03', '\x1b', 'R', '\x1b[12;5Rls']) expect(isTerminalReport(t), JSON.stringify(t)).toBe(false);
  });
});
