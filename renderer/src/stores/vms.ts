// The VM list: fetched once with vm.list, then kept current by applying pushed events (no polling).
import { defineStore } from 'pinia';
import { computed, nextTick, ref, shallowRef, triggerRef } from 'vue';
import type { VmInfo } from '../../../main/api/schema';
import type { VmEvent } from '../../../main/api/events';
import type { RpcParams } from '../../../main/api/rpc';
import { rpc } from '../api/client';
import { useOperationsStore, newOpId } from './operations';

export const useVmsStore = defineStore('vms', () => {
  // One shallow map: 500 VMs stay cheap because Vue does not proxy each nested config.
  const byId = shallowRef(new Map<string, VmInfo>());
  const loaded = ref(false);
  const loadError = ref<string | null>(null);
  const selectedId = ref<string | null>(null);
  let subscribed = false;

  const list = computed(() => [...byId.value.values()].sort((a, b) => a.name.localeCompare(b.name)));
  const selected = computed(() => (selectedId.value ? byId.value.get(selectedId.value) ?? null : null));

  async function load(): Promise<void> {
    const client = rpc();
    if (!subscribed) {
      subscribed = true;
      client.onEvent(apply);
      // After a reconnect events may have been missed: fetch the whole list again.
      client.onState((s) => {
        if (s === 'open' && loaded.value) void refetch();
      });
    }
    await refetch();
  }

  async function refetch(): Promise<void> {
    try {
      performance.mark('vmdesk:vm-list-requested');
      const infos = await rpc().call('vm.list', {});
      performance.mark('vmdesk:vm-list-received');
      byId.value = new Map(infos.map((i) => [i.id, i]));
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

  function put(info: VmInfo): void {
    byId.value.set(info.id, info);
    triggerRef(byId);
  }

  function apply(ev: VmEvent): void {
    switch (ev.type) {
      case 'vm-created':
      case 'vm-updated':
      case 'vm-state':
        put(ev.info);
        return;
      case 'vm-deleted':
        byId.value.delete(ev.id);
        triggerRef(byId);
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
