// The terminal tab's sentences: a serial fallback is said plainly, errors keep the daemon's words.
import { describe, expect, it } from 'vitest';
import { terminalEndText, terminalOpenedText } from './terminal-words';

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
});
