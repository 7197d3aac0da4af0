// The windows' channels to VMDesk (port-relay.ts), opened on request by a validated sender: an rpc channel gets
// its own connection to the daemon's socket, a vnc channel the VM's VNC unix socket. Counted against the same
// bounds as the browser server's connections and VNC bridges (daemon/limits.ts).
import net, { type Socket } from 'node:net';
import { connectDaemon } from '../client/daemon-client.js';
import { DEFAULT_LIMITS } from '../daemon/limits.js';
import { daemonSocketPath } from '../platform/paths.js';
import { connectUnixSocket } from '../platform/process.js';
import type { ChannelRequest } from './ipc-contract.js';
import { DEFAULT_PORT_RELAY, relayRpcPort, relayVncPort, type PortLike, type PortRelay, type PortRelayOptions } from './port-relay.js';

export interface ChannelHubOptions {
  maxRpc: number;
  maxVnc: number;
  relay: Omit<PortRelayOptions, 'onClose' | 'onPause'>;
  /** The VM's VNC unix socket path (asked of the daemon). */
  vncSocket(vm: string): Promise<string>;
}

export class ChannelHub {
  private readonly open = { rpc: new Set<PortRelay>(), vnc: new Set<PortRelay>() };
  /** Opens in progress count too: a window cannot get past the bound by asking quickly. */
  private opening = { rpc: 0, vnc: 0 };
  readonly opts: ChannelHubOptions;

  constructor(
    readonly home: string,
    opts: Partial<ChannelHubOptions> & Pick<ChannelHubOptions, 'vncSocket'>,
  ) {
    this.opts = { maxRpc: DEFAULT_LIMITS.maxConnections, maxVnc: DEFAULT_LIMITS.maxVncBridges, relay: DEFAULT_PORT_RELAY, ...opts };
  }

  counts(): { rpc: number; vnc: number } {
    return { rpc: this.open.rpc.size + this.opening.rpc, vnc: this.open.vnc.size + this.opening.vnc };
  }

  /** A fresh connection to the daemon, started when none runs (as the browser relay does). */
  private async daemonSocket(): Promise<Socket> {
    const direct = await connectUnixSocket(daemonSocketPath(this.home)).catch(() => undefined);
    if (direct) return direct;
    (await connectDaemon(this.home)).close();
    return connectUnixSocket(daemonSocketPath(this.home));
  }

  /** Relays `port` as asked; a refusal (over the bound, no daemon, no display) is said on the port, which then closes. */
  async openChannel(req: ChannelRequest, port: PortLike): Promise<PortRelay | undefined> {
    const refuse = (reason: string) => {
      port.postMessage({ t: 'close', reason });
      port.close();
      return undefined;
    };
    const kind = req.kind;
    const max = kind === 'rpc' ? this.opts.maxRpc : this.opts.maxVnc;
    if (this.counts()[kind] >= max) return refuse(`too many ${kind === 'rpc' ? 'connections' : 'displays open'} (limit ${max})`);
    this.opening[kind]++;
    let sock: Socket;
    try {
      sock = kind === 'rpc' ? await this.daemonSocket() : net.connect(await this.opts.vncSocket(req.vm));
    } catch (e) {
      return refuse((e as Error).message ?? String(e));
    } finally {
      this.opening[kind]--;
    }
    const set = this.open[kind];
    const relayOpts: PortRelayOptions = { ...this.opts.relay, onClose: () => set.delete(r) };
    const r = kind === 'rpc' ? relayRpcPort(port, sock, relayOpts) : relayVncPort(port, sock, relayOpts);
    set.add(r);
    return r;
  }

  closeAll(): void {
    for (const set of [this.open.rpc, this.open.vnc]) for (const r of [...set]) r.close('VMDesk is quitting');
  }
}
