// `vmdesk console` in a real terminal (node-pty): raw keystrokes reach the guest and Ctrl-] detaches.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rm } from 'node:fs/promises';
import * as pty from 'node-pty';
import { guestPaths, GUEST_READY_MARKER } from '../guest/guest.js';
import { BIN, stopDaemon, tempHome, vmdesk, vmdeskJson } from '../helpers/cli.js';

function waitFor(getOutput: () => string, re: RegExp, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (re.test(getOutput())) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${re}; terminal so far:\n${getOutput().slice(-1500)}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

describe('the serial console on a terminal', () => {
  let home: string;
  beforeAll(async () => {
    home = await tempHome();
    const { kernel, initrd } = guestPaths();
    await vmdeskJson(home, ['create', 'tty', '--memory', '192', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0', '--net', 'none']);
    await vmdeskJson(home, ['start', 'tty']);
  });
  afterAll(async () => {
    await vmdesk(home, ['kill', 'tty']);
    await stopDaemon(home);
    await rm(home, { recursive: true, force: true });
  });

  it('types into the guest in raw mode and detaches on Ctrl-]', async () => {
    const term = pty.spawn(process.execPath, [BIN, '--home', home, 'console', 'tty'], { cols: 100, rows: 30, env: process.env as Record<string, string> });
    let out = '';
    term.onData((d) => (out += d));
    const exited = new Promise<number>((r) => term.onExit(({ exitCode }) => r(exitCode)));
    await waitFor(() => out, /Ctrl-\] detaches/);
    await waitFor(() => out, new RegExp(GUEST_READY_MARKER));
    term.write('echo tty=$((40+2))\r');
    await waitFor(() => out, /tty=42/);
    term.write('\x1d');
    await waitFor(() => out, /\[detached\]/);
    expect(await exited).toBe(0);
    // Detaching leaves the guest running.
    expect((await vmdeskJson(home, ['info', 'tty'])).state).toBe('running');
  });
});
