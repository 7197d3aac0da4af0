// Timing marks for benchmarks: with VMDESK_TRACE=1 a process writes "trace <label> <epoch ms>" lines to its
// stderr (the daemon's is logs/daemon.log). Off by default; costs one env lookup when off.
const on = process.env.VMDESK_TRACE === '1';

export function trace(label: string): void {
  if (on) process.stderr.write(`trace ${label} ${(performance.timeOrigin + performance.now()).toFixed(3)}\n`);
}
