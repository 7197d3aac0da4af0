// One image service per core (the daemon's): the cache, the downloads and the sources of its library.
import type { Core } from '../core.js';
import { ImageService } from './cache.js';
import { registerImageActivity } from './activity.js';

const services = new WeakMap<Core, ImageService>();

export function imagesOf(core: Core): ImageService {
  let s = services.get(core);
  if (!s) {
    s = new ImageService(core.home, (ev) => core.emit('event', ev), {
      // A cached ISO that is a VM's CD-ROM stays until the VM lets go of it.
      usersOf: async (file) => (await core.list()).filter((v) => v.config?.cdrom === file).map((v) => v.name),
    });
    services.set(core, s);
    const svc = s;
    registerImageActivity(core, () => svc.busy());
  }
  return s;
}
