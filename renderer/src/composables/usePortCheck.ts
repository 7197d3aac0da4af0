// Asks the daemon (host.ports) whether the host ports of a form's forwards are free, shortly after they change,
// so a port in use is a warning on the form rather than a failed start.
import { onUnmounted, ref, watch } from 'vue';
import { rpc } from '../api/client';

export type PortReport = Record<string, { status: string; message: string }>;

export function usePortCheck(forwards: () => { protocol: 'tcp' | 'udp'; hostPort: number }[], vmId?: string) {
  const report = ref<PortReport>({});
  let timer: ReturnType<typeof setTimeout> | undefined;
  let generation = 0;
  watch(
    () => JSON.stringify(forwards().map((f) => [f.protocol, f.hostPort])),
    () => {
      clearTimeout(timer);
      const list = forwards().filter((f) => Number.isInteger(f.hostPort) && f.hostPort >= 1 && f.hostPort <= 65535);
      if (!list.length) {
        report.value = {};
        return;
      }
      const g = ++generation;
      timer = setTimeout(async () => {
        try {
          const r = await rpc().call('host.ports', { forwards: list.map((f) => ({ protocol: f.protocol, hostPort: f.hostPort })), ...(vmId ? { id: vmId } : {}) });
          if (g === generation) report.value = Object.fromEntries(r.map((p) => [`${p.protocol}:${p.hostPort}`, { status: p.status, message: p.message }]));
        } catch {
          /* no answer: the start will say */
        }
      }, 300);
    },
    { immediate: true },
  );
  onUnmounted(() => clearTimeout(timer));
  return report;
}
