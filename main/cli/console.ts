// `vmdesk console`: the guest's serial console on this terminal, or a pipe between stdin/stdout and the guest.
import type { CliIo } from './main.js';

const DETACH = 0x1d; // Ctrl-]

/** The guest's console as the daemon serves it (serial frames over the daemon connection). */
export interface GuestConsole {
  write(data: Buffer): void;
  on(event: 'data', fn: (d: Buffer) => void): void;
  on(event: 'close', fn: () => void): void;
  on(event: 'error', fn: (e: Error) => void): void;
  destroy(): void;
}

export function attachConsole(guest: GuestConsole, io: CliIo, opts: { lingerMs: number }): Promise<number> {
  const stdin = io.stdin;
  const interactive = !!stdin.isTTY && typeof stdin.setRawMode === 'function';
  return new Promise((resolve) => {
    let finished = false;
    const finish = (code: number) => {
      if (finished) return;
      finished = true;
      stdin.removeListener('data', onInput);
      stdin.removeListener('end', onEnd);
      if (interactive) stdin.setRawMode!(false);
      stdin.pause();
      guest.destroy();
      resolve(code);
    };
    const onInput = (chunk: Buffer | string) => {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (interactive) {
        const i = buf.indexOf(DETACH);
        if (i >= 0) {
          if (i > 0) guest.write(buf.subarray(0, i));
          io.stderr.write('\r\n[detached]\r\n');
          return finish(0);
        }
      }
      guest.write(buf);
    };
    // A script piping commands in wants the answers too: keep copying output a moment after its input ends.
    const onEnd = () => setTimeout(() => finish(0), opts.lingerMs);
    // Whoever reads our output went away (`vmdesk console vm | head`): detach quietly instead of dying on
    // EPIPE. Kept after finishing: writes already queued fail the same way.
    io.stdout.on('error', () => finish(0));
    guest.on('data', (d: Buffer) => io.stdout.write(d));
    guest.on('close', () => {
      if (!finished && interactive) io.stderr.write('\r\n[the VM stopped]\r\n');
      finish(0);
    });
    guest.on('error', () => finish(0));
    if (interactive) {
      stdin.setRawMode!(true);
      io.stderr.write('[connected to the serial console; Ctrl-] detaches]\r\n');
    }
    stdin.on('data', onInput);
    stdin.on('end', onEnd);
    stdin.resume();
  });
}
