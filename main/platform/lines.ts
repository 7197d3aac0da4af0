// Newline-delimited frames from a byte stream: one splitter for the daemon's socket, its clients and the
// relay. A line (or an unfinished one) longer than maxBytes means a peer that does not frame its messages.

/**
 * Returns a function to feed each chunk to: complete lines (without the newline) go to onLine in order.
 * onLine may return false to stop the rest of the chunk (the connection is gone). onOverflow is called once
 * when a line exceeds maxBytes; nothing more is delivered after it.
 */
export function lineSplitter(maxBytes: number, onLine: (line: Buffer) => boolean | void, onOverflow: () => void): (chunk: Buffer) => void {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let dead = false;
  return (chunk) => {
    if (dead) return;
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const part = chunk.subarray(start, nl);
      const line = pendingBytes ? Buffer.concat([...pending, part]) : part;
      pending = [];
      pendingBytes = 0;
      start = nl + 1;
      if (line.length > maxBytes) {
        dead = true;
        onOverflow();
        return;
      }
      if (onLine(line) === false) return;
    }
    if (start < chunk.length) {
      pending.push(chunk.subarray(start));
      pendingBytes += chunk.length - start;
      if (pendingBytes > maxBytes) {
        dead = true;
        onOverflow();
      }
    }
  };
}
