// The shell's own connection to the library's daemon (the windows have theirs, through port-relay.ts): calls for
// the quit flow, the tray and file opening, and the event stream behind the tray and the notifications. A call
// reconnects (starting the daemon if none runs, like any client); the event stream comes back by itself after a
// daemon restart but never starts a daemon on its own (the app merely watching must not keep one alive).
import type { VmEvent } from '../api/events.js';
import type { FrameClient, Hello } from '../api/frame-client.js';
import type { RpcMethod, RpcParams, RpcResult } from '../api/rpc.js';
import { connectDaemon, type ConnectOptions } from '../client/daemon-client.js';

export type Connect = (home: string, opts?: ConnectOptions) => Promise<FrameClient>;

export class DaemonLink {
  private client: FrameClient | undefined;
  private connecting: Promise<FrameClient> | undefined;
  private readonly listeners = new Set<(ev: VmEvent) => void>();
  private readonly connectedListeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly home: string,
    private readonly connect: Connect = connectDaemon,
    private readonly retryMs = 2000,
  ) {}

  /** Connects now (starting the daemon if needed): the app boots against a daemon of its build. */
  async start(): Promise<void> {
    await this.ensure({});
  }

  get hello(): Hello | undefined {
    return this.client?.hello;
  }

  async call<M extends RpcMethod>(method: M, params: RpcParams<M>, opts: { opId?: string } = {}): Promise<RpcResult<M>> {
    return (await this.ensure({})).call(method, params, opts);
  }

  onEvent(fn: (ev: VmEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** After each (re)connection: a listener refreshes what it derived from events it may have missed. */
  onConnected(fn: () => void): () => void {
    this.connectedListeners.add(fn);
    return () => this.connectedListeners.delete(fn);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.client?.close();
    this.client = undefined;
  }

  private ensure(opts: ConnectOptions): Promise<FrameClient> {
    if (this.client && !this.client.isClosed) return Promise.resolve(this.client);
    this.connecting ??= this.connect(this.home, opts)
      .then((c) => {
        if (this.closed) {
          c.close();
          throw new Error('the VMDesk shell is closing');
        }
        this.adopt(c);
        return c;
      })
      .finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private adopt(c: FrameClient): void {
    clearTimeout(this.timer);
    this.client = c;
    c.onEvent((ev) => {
      for (const fn of this.listeners) fn(ev);
    });
    c.onClosed(() => {
      if (this.client === c) this.client = undefined;
      this.scheduleWatch();
    });
    for (const fn of this.connectedListeners) fn();
  }

  /** Re-attach the event stream to a daemon that came back, without starting one. */
  private scheduleWatch(): void {
    if (this.closed || !this.listeners.size) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.closed || (this.client && !this.client.isClosed)) return;
      this.ensure({ autostart: false }).catch(() => this.scheduleWatch());
    }, this.retryMs);
    this.timer.unref?.();
  }
}
