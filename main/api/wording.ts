// The words VMDesk uses for states, exits and accelerators, in one place for the CLI and the GUI (plain
// TypeScript, no zod: the CLI loads it without the schemas).

interface StateLike {
  state: string;
  broken?: string;
  lastExit?: { reason: string } | undefined;
}

/** A VM's state as people read it: "stopped (start failed)" rather than a bare "stopped" after a failed start. */
export function stateLabel(vm: StateLike): string {
  if (vm.broken) return 'broken';
  if (vm.state === 'stopped' && vm.lastExit?.reason === 'start-failed') return 'stopped (start failed)';
  return vm.state;
}

const EXIT_REASONS: Record<string, string> = {
  'guest-poweroff': 'the guest powered itself off',
  shutdown: 'shut down',
  killed: 'powered off',
  crashed: 'crashed',
  'host-signal': 'stopped by a signal on the host',
  'start-failed': 'start failed',
  saved: 'state saved to disk (the next start resumes it)',
  unknown: 'ended for an unknown reason',
};

/** Why a VM last stopped, in words: "start failed", "the guest powered itself off". */
export function exitReasonText(reason: string): string {
  return EXIT_REASONS[reason] ?? reason;
}

const ACCELS: Record<string, string> = { kvm: 'KVM', hvf: 'Hypervisor.framework', tcg: 'TCG (software emulation)', auto: 'automatic' };

/** An accelerator's name for people: "KVM", "TCG (software emulation)". */
export function accelName(accel: string): string {
  return ACCELS[accel] ?? accel;
}

/** "1 CPU", "2 CPUs". */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
