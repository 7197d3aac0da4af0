// The WebSocket's state as a ref, so screens can say when VMDesk is unreachable instead of silently showing
// stale data, and disable what cannot work without it.
import { computed, onUnmounted, ref } from 'vue';
import { rpc, type ConnectionState } from '../api/client';

export function useConnection() {
  const client = rpc();
  const state = ref<ConnectionState>(client.state ?? 'open');
  const off = client.onState((s) => (state.value = s));
  onUnmounted(off);
  return state;
}

/** True while calls can go out: actions are disabled otherwise. */
export function useConnected() {
  const state = useConnection();
  return computed(() => state.value === 'open');
}
