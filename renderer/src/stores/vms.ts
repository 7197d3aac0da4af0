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
import { isAlive } from '../../../main/api/states';
import { rpc } from '../api/client';
import { useOperationsStore, newOpId } from './operations';

// Same order as String#localeCompare, at a fraction of its cost per comparison.
const collator = new Intl.Collator();

/** List order: by name, then id (names are unique, but a stale event must not make the order ambiguous). */
export function compareVms(a: VmInfo, b: VmInfo): number {
  return collator.compare(a.name, b.name) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** The local library's group name in a list grouped by host. */
export const LOCAL_GROUP = 'This computer';

/**
 * The list grouped by host (VmInfo.host, issue 15): the local library first, then each libvirt host by name;
 * each group keeps the order it was given. One group only (everything local) when no VM lives elsewhere.
 */
export function groupByHost(vms: readonly VmInfo[]): { host: string | null; label: string; vms: VmInfo[] }[] {
  const local: VmInfo[] = [];
  const remote = new Map<string, VmInfo[]>();
  for (const v of vms) {
    const h = v.host ?? v.config?.host;
    if (!h || h === 'local') local.push(v);
    else {
      const g = remote.get(h);
      if (g) g.push(v);
      else remote.set(h, [v]);
    }
  }
  const groups: { host: string | null; label: string; vms: VmInfo[] }[] = [];
  if (local.length || !remote.size) groups.push({ host: null, label: LOCAL_GROUP, vms: local });
  for (const h of [...remote.keys()].sort((a, b) => collator.compare(a, b))) groups.push({ host: h, label: `Host ${h}`, vms: remote.get(h)! });
  return groups;
}

/**
 * What the running VMs of this computer's library have committed (as the daemon counts it for host.info and its
 * over-commit warnings): their vCPUs, and their memory (the balloon target where one is set).
 */
export function committedNow(vms: readonly VmInfo[]): { runningVms: number; cpus: number; memoryMiB: number } {
  let runningVms = 0;
  let cpus = 0;
  let memoryMiB = 0;
  for (const v of vms) {
    if (!v.config || !isAlive(v.state) || (v.host ?? v.config.host ?? 'local') !== 'local') continue;
    runningVms++;
    cpus += v.config.cpus;
    memoryMiB += v.config.limits?.memoryTargetMiB ?? v.config.memoryMiB;
  }
  return { runningVms, cpus, memoryMiB };
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
  /**
   * The multi-selection (Ctrl/Shift-click, Shift+arrows, Ctrl+A): bulk start/stop act on it. It always holds the
   * selectedId (the row with the focus, shown in the details pane) when there is one.
   */
  const selection = shallowRef<ReadonlySet<string>>(new Set());
  let subscribed = false;
  let loading: Promise<void> | undefined;

  const selected = computed(() => (selectedId.value ? byId.value.get(selectedId.value) ?? null : null));
  /** Every selected VM that still exists, in list order. */
  const selectedVms = computed(() => {
    const ids = selection.value;
    if (ids.size <= 1) return selected.value ? [selected.value] : [];
    void byId.value;
    return list.value.filter((v) => ids.has(v.id));
  });

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
      selection.value = new Set([...selection.value].filter((id) => byId.value.has(id)).concat(selectedId.value ? [selectedId.value] : []));
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

  /**
   * The answer of a call that changed a VM. It was made inside the VM's job, so it still names that job; the
   * event that the job ended came before it: keep what the events say about the job.
   */
  function putResult(info: VmInfo): void {
    const known = byId.value.get(info.id);
    const { job: _stale, ...rest } = info;
    put(known?.job ? { ...rest, job: known.job } : rest);
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
        put(ev.info);
        return;
      case 'vm-state':
        put(ev.info);
        // Started after all (from here, the CLI or another window): an old "Starting failed" no longer holds.
        if (ev.state === 'running') ops().clearFor(ev.id);
        return;
      case 'vm-deleted':
        drop(ev.id);
        if (selection.value.has(ev.id)) {
          const next = new Set(selection.value);
          next.delete(ev.id);
          selection.value = next;
        }
        if (selectedId.value === ev.id) select(list.value[0]?.id ?? null);
        return;
      case 'progress':
        useOperationsStore().applyProgress(ev);
        return;
    }
  }

  /** Selects one VM (and only it). */
  function select(id: string | null): void {
    selectedId.value = id;
    selection.value = new Set(id ? [id] : []);
  }

  /** Ctrl/Cmd-click: adds or removes one VM, keeping the rest. */
  function toggleSelected(id: string): void {
    const next = new Set(selection.value);
    if (next.has(id) && next.size > 1) {
      next.delete(id);
      if (selectedId.value === id) selectedId.value = [...next][0] ?? null;
    } else {
      next.add(id);
      selectedId.value = id;
    }
    selection.value = next;
  }

  /** Shift-click, Shift+arrows, Ctrl+A: exactly these VMs, `focus` the one shown in the details. */
  function selectMany(ids: string[], focus: string): void {
    selection.value = new Set(ids);
    selectedId.value = focus;
  }

  const ops = () => useOperationsStore();

  /** Creates a VM; throws so the wizard can show the error next to the form. */
  async function create(req: RpcParams<'vm.create'>): Promise<VmInfo> {
    const opId = newOpId();
    ops().begin(opId, `Creating “${req.name}”`);
    try {
      const info = await rpc().call('vm.create', req, { opId });
      putResult(info);
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
    if (info) putResult(info);
    return info ?? byId.value.get(id)!;
  }

  /** A lifecycle call on several VMs at once (the multi-selection): each as its own tracked call. */
  async function bulk(method: 'vm.start' | 'vm.stop' | 'vm.kill' | 'vm.pause' | 'vm.resume', ids: string[], verb: string): Promise<void> {
    await Promise.all(ids.map((id) => lifecycle(method, id, `${verb} “${byId.value.get(id)?.name ?? id}”`)));
  }

  /** A lifecycle call by name; the answer (and the events) update the list. */
  async function lifecycle(method: 'vm.start' | 'vm.stop' | 'vm.kill' | 'vm.pause' | 'vm.resume' | 'vm.reset', id: string, label: string): Promise<VmInfo | undefined> {
    const info = await ops().track(label, id, (opId) => rpc().call(method, { id }, { opId }));
    if (info) putResult(info);
    return info;
  }

  /**
   * Save state (vmdesk suspend): memory and devices to disk, the VM ends up 'saved'; Start resumes it there.
   */
  async function suspend(id: string): Promise<VmInfo | undefined> {
    const name = byId.value.get(id)?.name ?? id;
    const info = await ops().track(`Saving the state of “${name}”`, id, (opId) => rpc().call('vm.suspend', { id }, { opId }));
    if (info) putResult(info);
    return info;
  }

  /** Deletes a saved state: the next start boots afresh. */
  async function discardState(id: string): Promise<VmInfo | undefined> {
    const name = byId.value.get(id)?.name ?? id;
    const info = await ops().track(`Discarding the saved state of “${name}”`, id, (opId) => rpc().call('vm.discardState', { id }, { opId }));
    if (info) putResult(info);
    return info;
  }

  async function remove(id: string, keepDisks: boolean): Promise<boolean> {
    const name = byId.value.get(id)?.name ?? id;
    const r = await ops().track(`Deleting “${name}”`, id, (opId) => rpc().call('vm.delete', { id, keepDisks }, { opId }));
    if (!r) return false;
    apply({ type: 'vm-deleted', id });
    return true;
  }

  /** The answer of a call that changed one VM, applied before its event arrives. */
  function applyInfo(info: VmInfo): void {
    putResult(info);
  }

  return { byId, list, loaded, loadError, selectedId, selected, selection, selectedVms, load, refetch, apply, applyInfo, select, toggleSelected, selectMany, create, saveSettings, lifecycle, bulk, suspend, discardState, remove };
});
