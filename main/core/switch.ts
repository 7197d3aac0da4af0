// Internal networks: one learning Ethernet switch per network name, in the daemon. Each VM adapter on
// internal:NAME is QEMU's `-netdev stream,server=on` unix socket; the daemon connects to it (as passt does
// for NAT) and moves frames between the adapters of one network only. No host, no internet, no DHCP: the
// segment carries exactly what the guests send each other. QEMU accepts a new client after one leaves, so a
// daemon that restarts reconnects the running guests' adapters (frames sent in between are lost, as on a
// cable pulled and plugged back).
//
// Framing on the socket (QEMU's "stream" netdev): a 4-byte big-endian length, then the frame.
import type { Socket } from 'node:net';

/** Largest frame QEMU's stream netdev sends (NET_BUFSIZE: 4096 + 65536); a longer length is a broken stream. */
export const MAX_FRAME = 4096 + 65536;
/** Smallest Ethernet header: shorter frames are dropped. */
const MIN_FRAME = 14;
/** Unread output past which frames for a port are dropped (a switch drops, it does not queue without end). */
const MAX_QUEUED_BYTES = 1024 * 1024;
/** MAC table entries per network: a guest that makes up source addresses cannot grow it past this. */
const MAX_MACS = 4096;

export interface PortCounters {
  /** Bytes (frames without the length prefix) delivered to the guest. */
  rxBytes: number;
  /** Bytes the guest sent. */
  txBytes: number;
  rxFrames: number;
  txFrames: number;
  /** Frames for this guest dropped because it did not read them fast enough. */
  dropped: number;
}

/** Splits QEMU's length-prefixed stream into frames; throws on a length no QEMU sends. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private queued = 0;

  push(chunk: Buffer, onFrame: (frame: Buffer) => void): void {
    this.chunks.push(chunk);
    this.queued += chunk.length;
    for (;;) {
      if (this.queued < 4) return;
      const len = this.peekLength();
      if (len > MAX_FRAME) throw new Error(`frame length ${len} is larger than any QEMU sends (${MAX_FRAME})`);
      if (this.queued < 4 + len) return;
      const all = this.take(4 + len);
      onFrame(all.subarray(4));
    }
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length >= 4) return first.readUInt32BE(0);
    const head = Buffer.concat(this.chunks, Math.min(this.queued, 8));
    return head.readUInt32BE(0);
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) {
      // The common case: a whole frame in one chunk, no copy.
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.queued -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.queued -= n;
    return out;
  }
}

export function encodeFrame(frame: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + frame.length);
  out.writeUInt32BE(frame.length, 0);
  frame.copy(out, 4);
  return out;
}

class Port {
  readonly counters: PortCounters = { rxBytes: 0, txBytes: 0, rxFrames: 0, txFrames: 0, dropped: 0 };
  constructor(
    readonly vmId: string,
    readonly adapter: number,
    readonly sock: Socket,
  ) {}

  deliver(frame: Buffer): void {
    if (this.sock.destroyed || this.sock.writableLength > MAX_QUEUED_BYTES) {
      this.counters.dropped++;
      return;
    }
    this.sock.write(encodeFrame(frame));
    this.counters.rxBytes += frame.length;
    this.counters.rxFrames++;
  }
}

class Segment {
  readonly ports = new Set<Port>();
  /** Source MAC (12 hex digits) -> the port it was last seen on. */
  private readonly macs = new Map<string, Port>();

  constructor(readonly name: string) {}

  forward(from: Port, frame: Buffer): void {
    from.counters.txBytes += frame.length;
    from.counters.txFrames++;
    if (frame.length < MIN_FRAME) return;
    const src = frame.toString('hex', 6, 12);
    // Learn where the sender is (group addresses are never a source).
    if ((frame[6]! & 1) === 0 && this.macs.get(src) !== from) {
      this.macs.delete(src);
      if (this.macs.size >= MAX_MACS) this.macs.delete(this.macs.keys().next().value!);
      this.macs.set(src, from);
    }
    const groupcast = (frame[0]! & 1) === 1;
    const to = groupcast ? undefined : this.macs.get(frame.toString('hex', 0, 6));
    if (to) {
      if (to !== from) to.deliver(frame);
      return;
    }
    // Broadcast, multicast, or a destination not seen yet: every other port of this network.
    for (const p of this.ports) if (p !== from) p.deliver(frame);
  }

  get macCount(): number {
    return this.macs.size;
  }

  remove(port: Port): void {
    this.ports.delete(port);
    for (const [mac, p] of this.macs) if (p === port) this.macs.delete(mac);
  }
}

/** Every internal network of one daemon. */
export class SwitchFabric {
  private readonly segments = new Map<string, Segment>();
  private readonly byVm = new Map<string, Set<Port>>();

  /**
   * Plugs a VM adapter's connected socket into network `name`. The port leaves when the socket closes
   * (QEMU exited) or on unplugVm.
   */
  plug(name: string, vmId: string, adapter: number, sock: Socket): void {
    let seg = this.segments.get(name);
    if (!seg) this.segments.set(name, (seg = new Segment(name)));
    const port = new Port(vmId, adapter, sock);
    seg.ports.add(port);
    let mine = this.byVm.get(vmId);
    if (!mine) this.byVm.set(vmId, (mine = new Set()));
    mine.add(port);
    const reader = new FrameReader();
    const segment = seg;
    sock.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk, (frame) => segment.forward(port, frame));
      } catch {
        // Not QEMU's framing: this connection carries nothing we can switch.
        sock.destroy();
      }
    });
    sock.on('error', () => {});
    sock.once('close', () => {
      segment.remove(port);
      this.byVm.get(vmId)?.delete(port);
      if (segment.ports.size === 0 && this.segments.get(name) === segment) this.segments.delete(name);
    });
  }

  /** Disconnects a VM's adapters (its QEMU listens again, for the next daemon or a later plug). */
  unplugVm(vmId: string): void {
    for (const p of this.byVm.get(vmId) ?? []) p.sock.destroy();
    this.byVm.delete(vmId);
  }

  /** The VM's adapters that are plugged in now. */
  plugged(vmId: string): number[] {
    return [...(this.byVm.get(vmId) ?? [])].map((p) => p.adapter).sort();
  }

  /** Sum of the counters of a VM's plugged adapters, or undefined when it has none. */
  counters(vmId: string): PortCounters | undefined {
    const ports = this.byVm.get(vmId);
    if (!ports?.size) return undefined;
    const sum: PortCounters = { rxBytes: 0, txBytes: 0, rxFrames: 0, txFrames: 0, dropped: 0 };
    for (const p of ports) for (const k of Object.keys(sum) as (keyof PortCounters)[]) sum[k] += p.counters[k];
    return sum;
  }

  /** Networks with at least one adapter plugged: how many, and how many MAC addresses the switch knows. */
  networks(): { name: string; ports: number; macs: number }[] {
    return [...this.segments.values()].map((s) => ({ name: s.name, ports: s.ports.size, macs: s.macCount }));
  }

  close(): void {
    for (const vm of [...this.byVm.keys()]) this.unplugVm(vm);
  }
}
