// Short confirmations after an action ("Settings saved", "Disk detached"), some with an Undo where undoing is
// cheap; shown for a few seconds in a polite live region.
import { defineStore } from 'pinia';
import { ref } from 'vue';

export interface Notice {
  key: number;
  text: string;
  /** Offered where undoing is cheap (settings, tags, a detached disk, an ejected disc). */
  undo?: () => Promise<unknown> | unknown;
}

let counter = 0;
export const NOTICE_MS = 10_000;

export const useNoticesStore = defineStore('notices', () => {
  const notices = ref<Notice[]>([]);

  function show(text: string, undo?: Notice['undo']): number {
    const key = counter++;
    notices.value = [...notices.value, { key, text, undo }].slice(-3);
    setTimeout(() => dismiss(key), NOTICE_MS);
    return key;
  }

  function dismiss(key: number): void {
    notices.value = notices.value.filter((n) => n.key !== key);
  }

  async function undo(key: number): Promise<void> {
    const n = notices.value.find((x) => x.key === key);
    dismiss(key);
    await n?.undo?.();
  }

  return { notices, show, dismiss, undo };
});
