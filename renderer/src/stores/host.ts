// Facts about the host (CPUs, memory, accelerators) that bound the wizard's sliders.
import { defineStore } from 'pinia';
import { ref } from 'vue';
import type { HostInfo } from '../../../main/api/schema';
import { rpc } from '../api/client';

export const useHostStore = defineStore('host', () => {
  const info = ref<HostInfo | null>(null);
  const error = ref<string | null>(null);

  async function load(force = false): Promise<HostInfo | null> {
    if (info.value && !force) return info.value;
    try {
      info.value = await rpc().call('host.info', {});
      error.value = null;
    } catch (e) {
      error.value = e instanceof Error ? e.message : String(e);
    }
    return info.value;
  }

  return { info, error, load };
});
