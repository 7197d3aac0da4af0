// The cancel signal of the RPC call being served, carried through async calls (AsyncLocalStorage), so a tool
// deep inside an operation (qemu-img convert in a clone, an export, an import) stops when the user cancels
// the call, without every layer in between passing a signal along.
import { AsyncLocalStorage } from 'node:async_hooks';

const scope = new AsyncLocalStorage<AbortSignal>();

/** Runs `fn` with `signal` as the cancel signal of everything it starts. */
export function withCancelSignal<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
  return scope.run(signal, fn);
}

/** The cancel signal of the operation this code runs for, if it can be cancelled. */
export function currentCancelSignal(): AbortSignal | undefined {
  return scope.getStore();
}
