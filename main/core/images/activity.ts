// Whether a core's image service is doing something (a download, a copy out of the cache): the daemon stays
// up while it is, as it does for VM jobs. Kept apart from the service so the daemon can ask without loading
// the HTTP client.
import type { EventEmitter } from 'node:events';

const busyFns = new WeakMap<EventEmitter, () => boolean>();

export function registerImageActivity(core: EventEmitter, busy: () => boolean): void {
  busyFns.set(core, busy);
}

export function imagesBusy(core: EventEmitter): boolean {
  return busyFns.get(core)?.() ?? false;
}
