// The WebSocket's state as a ref, so screens can say when VMDesk is unreachable instead of silently showing stale data.
import { onUnmounted, ref } from 'vue';
import { rpc, type ConnectionState } from '../api/client';

export function useConnection() {
  const client = rpc();
  const state = ref<ConnectionState>(client.state);
  const off = client.onState((s) => (state.value = s));
  onUnmounted(off);
  return state;
}
