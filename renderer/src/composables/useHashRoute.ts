// A two-screen router on location.hash: the main window, or one VM's console (its own tab or Electron window).
import { ref, computed, onUnmounted } from 'vue';

export type ConsoleTab = 'display' | 'serial' | 'terminal';
export type Route = { name: 'main' } | { name: 'console'; id: string; tab: ConsoleTab };

export function parseHash(hash: string): Route {
  const m = /^#\/console\/([^/?]+)(?:\?tab=(display|serial|terminal))?$/.exec(hash);
  if (m) return { name: 'console', id: decodeURIComponent(m[1]!), tab: (m[2] as ConsoleTab | undefined) ?? 'display' };
  return { name: 'main' };
}

export function consoleHash(id: string, tab: ConsoleTab = 'display'): string {
  return `#/console/${encodeURIComponent(id)}?tab=${tab}`;
}

export function useHashRoute() {
  const hash = ref(location.hash);
  const onChange = () => (hash.value = location.hash);
  window.addEventListener('hashchange', onChange);
  onUnmounted(() => window.removeEventListener('hashchange', onChange));
  return computed(() => parseHash(hash.value));
}
