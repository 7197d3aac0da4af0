// Host ports on 127.0.0.1: whether one could be listened on now, and whether one is being listened on.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

export type PortState = { state: 'free' } | { state: 'in-use' } | { state: 'denied' } | { state: 'error'; message: string };

/** Tries to bind the port on 127.0.0.1 (and lets it go at once). */
export function probeHostPort(protocol: 'tcp' | 'udp', port: number): Promise<PortState> {
  const classify = (e: NodeJS.ErrnoException): PortState =>
    e.code === 'EADDRINUSE' ? { state: 'in-use' } : e.code === 'EACCES' || e.code === 'EPERM' ? { state: 'denied' } : { state: 'error', message: e.message };
  return new Promise((resolve) => {
    if (protocol === 'tcp') {
      const srv = createServer();
      srv.once('error', (e: NodeJS.ErrnoException) => resolve(classify(e)));
      srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve({ state: 'free' })));
    } else {
      const sock = createSocket({ type: 'udp4', reuseAddr: false });
      sock.once('error', (e: NodeJS.ErrnoException) => {
        sock.close();
        resolve(classify(e));
      });
      sock.bind({ port, address: '127.0.0.1', exclusive: true }, () => sock.close(() => resolve({ state: 'free' })));
    }
  });
}

/**
 * True when something listens on 127.0.0.1:port (or the wildcard) over TCP, from /proc/net/tcp; undefined
 * where there is no /proc. Used to see that a forwarder really took a port.
 */
export function tcpListening(port: number, procNetTcp = '/proc/net/tcp'): boolean | undefined {
  let text: string;
  try {
    text = readFileSync(procNetTcp, 'utf8');
  } catch {
    return undefined;
  }
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const [addr, p] = f[1]!.split(':');
    if (p === hexPort && f[3] === '0A' && (addr === '0100007F' || addr === '00000000')) return true;
  }
  return false;
}
