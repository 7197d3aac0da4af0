// The VM list: fetched once with vm.list, then kept current by applying pushed events (no polling).
//
// Thousands of VMs: nothing here is deeply reactive. The VmInfo objects stay plain (Vue never proxies a
// config), `byId` and the sorted `list` are shallow refs, and an event touches one entry: a state change
// replaces one slot of the sorted array, a create or delete splices at a binary-searched position. The
// views (a virtualized list) then patch only the rows that show that VM.
import { defineStore } from 'pinia';
import { computed, nextTick, ref, shallowRef, triggerRef } from 'vue';
import type { VmInfo } from '../../../main/api/schema';
import type { VmEvent } from '../../../main/api/events';
import type { RpcParams } from '../../../main/api/rpc';
import { rpc } from '../api/client';
import { useOperationsStore, newOpId } from './operations';

// Same order as String#localeCompare, at a fraction of its cost per comparison.
const collator = new Intl.Collator();

/** List order: by name, then id (names are unique, but a stale event must not make the order ambiguous). */
export function compareVms(a: VmInfo, b: VmInfo): number {
  return collator.compare(a.name, b.name) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Index of `vm` in the sorted `list`, or where it would go (first index whose entry sorts at or after it). */
function lowerBound(list: readonly VmInfo[], vm: VmInfo): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareVms(list[mid]!, vm) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Where `vm` (an entry of the sorted `list`) sits. */
function indexOf(list: readonly VmInfo[], vm: VmInfo): number {
  const i = lowerBound(list, vm);
  return list[i]?.id === vm.id ? i : list.findIndex((v) => v.id === vm.id);
}

export const useVmsStore = defineStore('vms', () => {
  const byId = shallowRef(new Map<string, VmInfo>());
  /** Every VM, sorted by name; replaced or spliced in place by events, never re-sorted as a whole. */
  const list = shallowRef<VmInfo[]>([]);
  const loaded = ref(false);
  const loadError = ref<string | null>(null);
  const selectedId = ref<string | null>(null);
  let subscribed = false;
  let loading: Promise<void> | undefined;

  const selected = computed(() => (selectedId.value ? byId.value.get(selectedId.value) ?? null : null));

  /**
   * Subscribes to events and fetches the list once; later calls share that fetch (main.ts starts it before
   * the app mounts, the windows ask again when they mount).
   */
  function load(): Promise<void> {
    const client = rpc();
    if (!subscribed) {
      subscribed = true;
      client.onEvent(apply);
      // After a reconnect events may have been missed: fetch the whole list again.
      client.onState((s) => {
        if (s === 'open' && loaded.value) void refetch();
      });
    }
    if (!loading) {
      loading = refetch().then(() => {
        // A failed first fetch may be retried by a later load().
        if (!loaded.value) loading = undefined;
      });
    }
    return loading;
  }

  async function refetch(): Promise<void> {
    try {
      performance.mark('vmdesk:vm-list-requested');
      const infos = await rpc().call('vm.list', {});
      performance.mark('vmdesk:vm-list-received');
      byId.value = new Map(infos.map((i) => [i.id, i]));
      list.value = infos.slice().sort(compareVms);
      loaded.value = true;
      // Marks for bench/gui.mjs: how long the server took versus how long the list took to render.
      void nextTick(() => performance.mark('vmdesk:vm-list-rendered'));
      loadError.value = null;
      if (selectedId.value && !byId.value.has(selectedId.value)) selectedId.value = null;
      if (!selectedId.value && infos.length) selectedId.value = list.value[0]?.id ?? null;
    } catch (e) {
      loadError.value = e instanceof Error ? e.message : String(e);
    }
  }

  // A new array per change (2,000 pointers copy in microseconds): views that hold the old one see a new value.
  function put(info: VmInfo): void {
    const old = byId.value.get(info.id);
    byId.value.set(info.id, info);
    const l = list.value.slice();
    const at = old ? indexOf(l, old) : -1;
    if (at >= 0 && old!.name === info.name) {
      // Same place in the order (the common case: a state change): swap the one entry.
      l[at] = info;
    } else {
      if (at >= 0) l.splice(at, 1);
      l.splice(lowerBound(l, info), 0, info);
    }
    triggerRef(byId);
    list.value = l;
  }

  function drop(id: string): void {
    const old = byId.value.get(id);
    if (!old) return;
    byId.value.delete(id);
    const l = list.value.slice();
    const at = indexOf(l, old);
    if (at >= 0) l.splice(at, 1);
    triggerRef(byId);
    list.value = l;
  }

  function apply(ev: VmEvent): void {
    switch (ev.type) {
      case 'vm-created':
      case 'vm-updated':
      case 'vm-state':
        put(ev.info);
        return;
      case 'vm-deleted':
        drop(ev.id);
        if (selectedId.value === ev.id) selectedId.value = list.value[0]?.id ?? null;
        return;
      case 'progress':
        useOperationsStore().applyProgress(ev);
        return;
    }
  }

  function select(id: string | null): void {
    selectedId.value = id;
  }

  const ops = () => useOperationsStore();

  /** Creates a VM; throws so the wizard can show the error next to the form. */
  async function create(req: RpcParams<'vm.create'>): Promise<VmInfo> {
    const opId = newOpId();
    ops().begin(opId, `Creating “${req.name}”`);
    try {
      const info = await rpc().call('vm.create', req, { opId });
      put(info);
      selectedId.value = info.id;
      return info;
    } finally {
      ops().finish(opId);
    }
  }

  /** Saves settings (and a new name); throws so the dialog can show the error next to the form. */
  async function saveSettings(id: string, patch: RpcParams<'vm.update'>['patch'], newName?: string): Promise<VmInfo> {
    let info: VmInfo | undefined;
    if (newName) info = await rpc().call('vm.rename', { id, name: newName });
    if (Object.keys(patch).length) info = await rpc().call('vm.update', { id, patch });
    if (info) put(info);
    return info ?? byId.value.get(id)!;
  }

  /** A lifecycle call by name; the answer (and the events) update the list. */
  async function lifecycle(method: 'vm.start' | 'vm.stop' | 'vm.kill' | 'vm.pause' | 'vm.resume' | 'vm.reset', id: string, label: string): Promise<VmInfo | undefined> {
    const info = await ops().track(label, id, (opId) => rpc().call(method, { id }, { opId }));
    if (info) put(info);
    return info;
  }

  async function remove(id: string, keepDisks: boolean): Promise<boolean> {
    const name = byId.value.get(id)?.name ?? id;
    const r = await ops().track(`Deleting “${name}”`, id, (opId) => rpc().call('vm.delete', { id, keepDisks }, { opId }));
    if (!r) return false;
    apply({ type: 'vm-deleted', id });
    return true;
  }

  return { byId, list, loaded, loadError, selectedId, selected, load, refetch, apply, select, create, saveSettings, lifecycle, remove };
});
