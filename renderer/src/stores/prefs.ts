// How the user likes the VM list (sort order, grouping by tag), kept in this browser's storage.
import { defineStore } from 'pinia';
import { ref, watch } from 'vue';

export type SortKey = 'name' | 'state' | 'changed' | 'os';
const KEY = 'vmdesk.list-prefs';

function load(): { sort: SortKey; groupByTag: boolean } {
  try {
    const v = JSON.parse(localStorage.getItem(KEY) ?? '{}') as { sort?: string; groupByTag?: boolean };
    const sort = (['name', 'state', 'changed', 'os'] as const).find((k) => k === v.sort) ?? 'name';
    return { sort, groupByTag: v.groupByTag === true };
  } catch {
    return { sort: 'name', groupByTag: false };
  }
}

export const usePrefsStore = defineStore('prefs', () => {
  const initial = typeof localStorage !== 'undefined' ? load() : { sort: 'name' as SortKey, groupByTag: false };
  const sort = ref<SortKey>(initial.sort);
  const groupByTag = ref(initial.groupByTag);
  watch([sort, groupByTag], () => {
    try {
      localStorage.setItem(KEY, JSON.stringify({ sort: sort.value, groupByTag: groupByTag.value }));
    } catch {
      /* storage refused (private mode): the choice lasts this session */
    }
  });
  return { sort, groupByTag };
});
