// `vmdesk shell NAME [-- COMMAND...]`: a shell in the guest through the daemon's terminal stream (term.*
// frames): ssh with the VM's own key through its forward on 127.0.0.1, run under a pty by the daemon, or
// the serial console for VMs without SSH access. The window size follows this terminal's. The exit status
// is the remote command's, as with ssh.
import { parseArgs } from 'node:util';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import type { Rpc } from './rpc.js';
import type { CliIo } from './main.js';

const DETACH = 0x1d; // Ctrl-]

export async function runShell(rpc: () => Promise<Rpc>, args: string[], io: CliIo): Promise<number> {
  const dash = args.indexOf('--');
  const own = dash >= 0 ? args.slice(0, dash) : args;
  const command = dash >= 0 ? args.slice(dash + 1) : [];
  let parsed;
  try {
    parsed = parseArgs({ args: own, options: { serial: { type: 'boolean' }, ssh: { type: 'boolean' }, wait: { type: 'string' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new VmdeskError(ErrorCode.invalid, (e as Error).message.split('\n')[0]!.replace(/^TypeError \[\w+\]: /, ''));
  }
  if (parsed.positionals.length !== 1) throw new VmdeskError(ErrorCode.invalid, parsed.positionals.length ? `unexpected argument "${parsed.positionals[1]}" (put a command after --)` : 'missing NAME');
  if (parsed.values.serial && parsed.values.ssh) throw new VmdeskError(ErrorCode.invalid, 'give --serial or --ssh, not both');
  if (dash >= 0 && !command.length) throw new VmdeskError(ErrorCode.invalid, 'nothing after --');
  const wait = parsed.values.wait;
  if (wait !== undefined && !/^\d+$/.test(wait)) throw new VmdeskError(ErrorCode.invalid, '--wait takes seconds');
  const vm = parsed.positionals[0]!;
  const r = await rpc();
  const stdin = io.stdin;
  const stdout = io.stdout as NodeJS.WriteStream;
  const interactive = !!stdin.isTTY && typeof stdin.setRawMode === 'function';
  const size = () => ({ cols: stdout.columns || 80, rows: stdout.rows || 24 });
  return new Promise<number>((resolve, reject) => {
    let finished = false;
    let opened = false;
    let via: 'ssh' | 'serial' | undefined;
    // Piped input waits for the guest's first output (or a moment): typed before ssh puts the pty in raw
    // mode, it would be echoed and edited by the local line discipline.
    let ready = interactive;
    let piped = false;
    const queued: Buffer[] = [];
    const flush = () => {
      if (ready) return;
      ready = true;
      for (const b of queued.splice(0)) term.write(b.toString('base64'));
    };
    const onResize = () => term.resize(size().cols, size().rows);
    const finish = (fn: () => void) => {
      if (finished) return;
      finished = true;
      stdin.removeListener('data', onInput);
      stdin.removeListener('end', onEnd);
      stdout.removeListener?.('resize', onResize);
      if (interactive) stdin.setRawMode!(false);
      stdin.pause();
      fn();
    };
    const term = r.client.openTerminal(
      vm,
      { via: parsed.values.serial ? 'serial' : parsed.values.ssh ? 'ssh' : 'auto', ...(command.length ? { command } : {}), ...size(), ...(wait !== undefined ? { waitMs: Number(wait) * 1000 } : {}) },
      {
        onStatus: (m) => io.stderr.write(`[${m}]\r\n`),
        onOpened: (how, detail) => {
          opened = true;
          via = how;
          if (interactive) {
            stdin.setRawMode!(true);
            io.stderr.write(`[connected: ${detail ?? how}${how === 'serial' ? '; Ctrl-] detaches' : ''}]\r\n`);
          }
          stdin.on('data', onInput);
          stdin.on('end', onEnd);
          stdin.resume();
          setTimeout(flush, 1500).unref();
          stdout.on?.('resize', onResize);
        },
        onData: (b64) => {
          stdout.write(Buffer.from(b64, 'base64'));
          flush();
        },
        onClose: (end) => {
          if (end.error && (!opened || end.error.code !== 'ENET')) {
            const code = (end.error.code === 'ENET' ? ErrorCode.host : end.error.code) as ErrorCode;
            return finish(() => reject(new VmdeskError(code, end.error!.message)));
          }
          finish(() => resolve(typeof end.exitCode === 'number' ? end.exitCode : 0));
        },
      },
    );
    const onInput = (chunk: Buffer | string) => {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (interactive && via === 'serial') {
        const i = buf.indexOf(DETACH);
        if (i >= 0) {
          if (i > 0) term.write(buf.subarray(0, i).toString('base64'));
          io.stderr.write('\r\n[detached]\r\n');
          term.close();
          return finish(() => resolve(0));
        }
      }
      piped = true;
      if (ready) term.write(buf.toString('base64'));
      else queued.push(buf);
    };
    // Piped input has ended: over ssh the pty's end-of-file (Ctrl-D) tells the remote side; the serial
    // console has no end, so detach after a moment for the answers.
    const onEnd = () => {
      if (via === 'ssh') {
        // Nothing piped (a command, or </dev/null): the remote side needs no end-of-file.
        if (!piped) return;
        const eof = Buffer.from([0x04]);
        if (ready) term.write(eof.toString('base64'));
        else queued.push(eof);
      }
      else
        setTimeout(() => {
          term.close();
          finish(() => resolve(0));
        }, 1000);
    };
    stdout.on?.('error', () => {
      term.close();
      finish(() => resolve(0));
    });
  });
}
