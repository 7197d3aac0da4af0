// Events the core emits for every change; the server forwards them to the renderer as they are.
import type { VmInfo, VmState, VmStats } from './schema.js';
import type { DownloadInfo } from './images.js';

export type VmEvent =
  | { type: 'vm-created'; id: string; info: VmInfo }
  | { type: 'vm-updated'; id: string; info: VmInfo }
  | { type: 'vm-deleted'; id: string }
  | { type: 'vm-state'; id: string; state: VmState; info: VmInfo }
  | { type: 'progress'; opId: string; id?: string; phase: string; fraction?: number; done?: boolean; error?: string }
  /** An image download's progress or end (main/core/images/cache.ts), at most four a second per download. */
  | { type: 'image-download'; download: DownloadInfo }
  /** The image cache or the sources changed for this image: lists should be fetched again. */
  | { type: 'image-changed'; image: string }
  /** A running VM's usage, once a second, only to connections that subscribed (stats.subscribe). */
  | { type: 'vm-stats'; id: string; stats: VmStats };
