// Which toolbar actions make sense in which VM state; one table shared by the main toolbar and the console header.
import type { VmInfo } from '../../../main/api/schema';

export type VmAction = 'settings' | 'start' | 'pause' | 'resume' | 'reset' | 'stop' | 'kill' | 'delete' | 'console';

export function actionEnabled(action: VmAction, vm: VmInfo | null | undefined): boolean {
  if (!vm) return false;
  const s = vm.state;
  const usable = !!vm.config;
  switch (action) {
    case 'settings':
      return usable;
    case 'start':
      return usable && (s === 'stopped' || s === 'crashed');
    case 'pause':
      return s === 'running';
    case 'resume':
      return s === 'paused';
    case 'reset':
    case 'stop':
      return s === 'running' || s === 'paused';
    case 'kill':
      return s === 'running' || s === 'paused' || s === 'starting' || s === 'stopping';
    case 'delete':
      return s === 'stopped' || s === 'crashed';
    case 'console':
      return s === 'running' || s === 'paused';
  }
}
