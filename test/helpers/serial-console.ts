// A guest's serial console in tests that drive a Core directly: its text, waits on it, and commands run with
// their output and exit status.
import type { SerialSession } from '../../main/core/serial.js';

/** Polls `fn` until `ok` accepts its value; the error names what was awaited and the last value seen. */
export async function until<T>(what: string, fn: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v).slice(-600)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The guest's serial console as text, and a way to run a command and get its output and status. */
export class SerialConsole {
  out = '';
  private n = 0;
  constructor(private readonly s: SerialSession) {
    this.out = s.history.toString('latin1');
    s.onData((d) => (this.out += d.toString('latin1')));
  }
  async waitFor(re: RegExp, timeoutMs = 120_000): Promise<RegExpMatchArray> {
    return (await until(`${re} on the serial console`, () => this.out.match(re), (m) => !!m, timeoutMs))!;
  }
  async run(cmd: string, timeoutMs = 60_000): Promise<{ status: number; output: string }> {
    const id = `${Date.now()}${this.n++}`;
    const start = this.out.length;
    this.s.write(Buffer.from(`${cmd}; echo "__END_${id}_$?__"\n`));
    const re = new RegExp(`__END_${id}_(\\d+)__`);
    await until(`"${cmd}" to finish`, () => this.out.slice(start), (t) => re.test(t), timeoutMs);
    const text = this.out.slice(start);
    const m = text.match(re)!;
    // The output is what came between the echoed command line and the marker.
    const body = text.slice(text.indexOf('\n') + 1, m.index).replace(/\r/g, '');
    return { status: Number(m[1]), output: body };
  }
  close(): void {
    this.s.close();
  }
}
