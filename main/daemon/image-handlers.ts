// RPC handlers for the gallery, the image cache, downloads, VMs made from images and guest information.
import type { z } from 'zod';
import type { Core } from '../core/core.js';
import type { ImageRpcMethods, ImageRpcMethod } from '../api/rpc-images.js';
import { imagesOf } from '../core/images/service.js';
import { createFromImage } from '../core/images/create.js';
import { guestInfo } from '../core/images/guest-info.js';

type Parsed<M extends ImageRpcMethod> = z.output<(typeof ImageRpcMethods)[M]['params']>;
type Result<M extends ImageRpcMethod> = z.input<(typeof ImageRpcMethods)[M]['result']>;
type Progress = (phase: string, fraction?: number) => void;
export type ImageHandlers = { [M in ImageRpcMethod]: (core: Core, p: Parsed<M>, ctx: { progress: Progress }) => Promise<Result<M>> };

export const imageHandlers: ImageHandlers = {
  'image.list': (core) => imagesOf(core).list(),
  'image.pull': (core, p, { progress }) =>
    imagesOf(core).pull(p.image, (info) => {
      if (info.state === 'running') progress('downloading', info.totalBytes ? info.bytes / info.totalBytes : undefined);
      else progress(info.state);
    }),
  'image.pause': async (core, p) => imagesOf(core).pause(p.image),
  'image.cancel': (core, p) => imagesOf(core).cancel(p.image),
  'image.remove': (core, p) => imagesOf(core).remove(p.all ? undefined : p.images),
  'image.addSource': async (core, p) => {
    const entry = await imagesOf(core).sources.add(p);
    core.emit('event', { type: 'image-changed', image: entry.id });
    return entry;
  },
  'image.removeSource': async (core, p) => {
    const removed = await imagesOf(core).sources.remove(p.image);
    if (removed) core.emit('event', { type: 'image-changed', image: p.image });
    return { removed };
  },
  'vm.createFromImage': (core, p, { progress }) => createFromImage(core, p, progress),
  'vm.guestInfo': (core, p) => guestInfo(core, p.id),
};
