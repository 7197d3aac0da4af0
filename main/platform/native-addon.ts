// Finds and loads VMDesk's native addon (native/build/Release/vmdesk_native.node) once per process.
// The micro-VM engine types its KVM surface on top of this; the platform layer uses its file locks.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { resources } from './resources.js';

/** Where the addon is (VMDESK_NATIVE_ADDON, or the daemon tree's native/build/Release): resources.ts decides. */
export function addonPath(): string {
  return resources().nativeAddon;
}

let cached: { module?: unknown; error?: Error } | undefined;

/** The addon's exports, or the reason it cannot be loaded (missing build, wrong Node ABI). */
export function loadAddon(): { module?: unknown; error?: Error } {
  if (cached) return cached;
  const file = addonPath();
  if (!existsSync(file)) {
    cached = { error: new Error(`the native addon is not built (${file} is missing); build it with: npm run build:native`) };
    return cached;
  }
  try {
    cached = { module: createRequire(import.meta.url)(file) as unknown };
  } catch (e) {
    cached = { error: new Error(`the native addon failed to load: ${(e as Error).message}; rebuild it with: npm run build:native`) };
  }
  return cached;
}
