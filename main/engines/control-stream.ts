// Turns a connection to a VM's control socket into a raw stream (serial console) after a JSON-lines handshake.
import type { Socket } from 'node:net';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { connectUnixSocket } from '../platform/process.js';

interface Reply {
  id?: number;
  ok?: boolean;
  error?: { message: string };
}

/**
 * Sends `request` (which carries `id`) and resolves with the socket once the reply with that id says ok.
 * State or event broadcasts that arrive before the reply are skipped. The socket is read in paused mode,
 * so no stream byte after the reply is consumed before the caller attaches its own listener.
 */
export async function openControlStream(socketPath: string, request: { id: number } & Record<string, unknown>, what: string): Promise<Socket> {
  const sock = await connectUnixSocket(socketPath).catch((e: Error) => {
    throw new VmdeskError(ErrorCode.state, `${what} unavailable: ${e.message}`);
  });
  return new Promise((resolve, reject) => {
    let head = Buffer.alloc(0);
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = sock.read() as Buffer | null) !== null) {
        head = Buffer.concat([head, chunk]);
        let reply: Reply | undefined;
        let nl: number;
        while (!reply && (nl = head.indexOf(0x0a)) >= 0) {
          let msg: Reply;
          try {
            msg = JSON.parse(head.subarray(0, nl).toString('utf8')) as Reply;
          } catch {
            msg = { id: request.id, ok: false, error: { message: 'bad reply' } };
          }
          head = head.subarray(nl + 1);
          if (msg.id === request.id) reply = msg;
        }
        if (!reply) continue;
        sock.off('readable', onReadable);
        sock.off('close', onClose);
        if (!reply.ok) {
          sock.destroy();
          reject(new VmdeskError(ErrorCode.engine, `${what} refused: ${reply.error?.message ?? 'bad reply'}`));
          return;
        }
        if (head.length) sock.unshift(head);
        resolve(sock);
        return;
      }
    };
    const onClose = () => reject(new VmdeskError(ErrorCode.state, `${what} closed (the VM has stopped)`));
    sock.on('readable', onReadable);
    sock.once('close', onClose);
    sock.write(JSON.stringify(request) + '\n');
  });
}
