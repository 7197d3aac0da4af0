// The clipboard shared between this computer and a guest (VNC clipboard extension ↔ the browser's clipboard):
// each text crosses once, and a text that came from one side is never echoed back to it.

export interface ClipboardEnds {
  readHost(): Promise<string>;
  writeHost(text: string): Promise<void>;
  sendGuest(text: string): void;
}

export type ToGuestResult = 'sent' | 'unchanged' | 'empty' | 'denied';

export class ClipboardBridge {
  /** The text both sides hold now, as far as the bridge knows. */
  private last: string | undefined;

  constructor(private readonly ends: ClipboardEnds) {}

  /** The guest copied text: put it on this computer's clipboard. False when the browser refused. */
  async fromGuest(text: string): Promise<boolean> {
    if (text === this.last) return true;
    this.last = text;
    try {
      await this.ends.writeHost(text);
      return true;
    } catch {
      return false;
    }
  }

  /** Calls one after another: two at once (focus and pointer together) would both see a change and send it twice. */
  private queue: Promise<unknown> = Promise.resolve();

  /** This computer's clipboard to the guest if it changed (force: even if not, as a button asks). */
  toGuest(opts: { force?: boolean } = {}): Promise<ToGuestResult> {
    const run = this.queue.then(() => this.toGuestNow(opts));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async toGuestNow(opts: { force?: boolean }): Promise<ToGuestResult> {
    let text: string;
    try {
      text = await this.ends.readHost();
    } catch {
      return 'denied';
    }
    if (!text) return 'empty';
    if (!opts.force && text === this.last) return 'unchanged';
    this.last = text;
    this.ends.sendGuest(text);
    return 'sent';
  }
}
