// The contract's image and guest-shell part: methods for the gallery, the image cache, downloads, VMs made
// from images and what VMDesk knows of a running guest; the term.* frames of terminal streams (SSH into
// the guest through a pty in the daemon, or its serial console), validated and bounded like serial.*.
// Handlers: main/daemon/image-handlers.ts and main/daemon/terminals.ts.
import { z } from 'zod';
import { VmInfo } from './schema.js';
import { CachedImage, CreateFromImageRequest, DownloadInfo, GalleryEntry, GuestInfo, ImageId, ImageListing, TERM_LIMITS, UserSourceInput } from './images.js';

const VmRef = z.string().min(1, 'a VM name or id is required').max(128);
const Base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'not base64');

export const ImageRpcMethods = {
  /** The gallery and the user's sources, with what is cached, partial or downloading, and the cache's size. */
  'image.list': { params: z.object({}).strict(), result: ImageListing },
  /** Downloads an image into the cache (or returns the cached one, or joins the running download). Long: progress under the call's opId, and image-download events for everyone. */
  'image.pull': { params: z.object({ image: ImageId }).strict(), result: CachedImage },
  /** Stops a running download and keeps what came; the next image.pull resumes it (HTTP Range). */
  'image.pause': { params: z.object({ image: ImageId }).strict(), result: DownloadInfo },
  /** Stops a download (running or paused) and removes its partial file. */
  'image.cancel': { params: z.object({ image: ImageId }).strict(), result: z.object({ cancelled: z.boolean() }) },
  /** Removes cached images (and partial downloads): the ones named, or every one with all. */
  'image.remove': {
    params: z.object({ images: z.array(ImageId).max(500).optional(), all: z.boolean().optional() }).strict().refine((p) => !!p.all !== !!p.images?.length, 'name images or give all, not both'),
    result: z.object({ removed: z.array(z.string()), freedBytes: z.number() }),
  },
  'image.addSource': { params: UserSourceInput, result: GalleryEntry },
  'image.removeSource': { params: z.object({ image: ImageId }).strict(), result: z.object({ removed: z.boolean() }) },
  /** A new VM from a gallery image: a cloud image copied and grown with a cloud-init seed, or an installer ISO with an empty disk. Long. */
  'vm.createFromImage': { params: CreateFromImageRequest, result: VmInfo },
  /** The guest's addresses (guest agent, or the NAT's DHCP) and how `vmdesk shell` reaches it. */
  'vm.guestInfo': { params: z.object({ id: VmRef }).strict(), result: GuestInfo },
} as const;

export type ImageRpcMethod = keyof typeof ImageRpcMethods;

export const IMAGE_LONG_METHODS: readonly ImageRpcMethod[] = ['image.pull', 'vm.createFromImage'];

// ---- terminal frames --------------------------------------------------------------------------------

const Sid = z.number().int().nonnegative();
const Cols = z.number().int().min(1).max(TERM_LIMITS.colsMax);
const Rows = z.number().int().min(1).max(TERM_LIMITS.rowsMax);

/** Client → server: open a terminal on a VM (ssh when it has a key and a forward, else its serial console), type, resize, close. */
export const TermClientFrames = [
  z
    .object({
      t: z.literal('term.open'),
      sid: Sid,
      vm: VmRef,
      /** auto: ssh where the VM was made with a key and an SSH forward, else the serial console. */
      via: z.enum(['auto', 'ssh', 'serial']).optional(),
      /** A command to run instead of a login shell (ssh only). */
      command: z.array(z.string().max(TERM_LIMITS.argMax).refine((s) => !s.includes('\u0000'), 'no NUL bytes')).min(1).max(TERM_LIMITS.argsMax).optional(),
      cols: Cols.optional(),
      rows: Rows.optional(),
      /** How long to wait for the guest's SSH server to answer (it may still be booting). */
      waitMs: z.number().int().min(0).max(600_000).optional(),
    })
    .strict(),
  z.object({ t: z.literal('term.in'), sid: Sid, data: Base64.max(1024 * 1024) }).strict(),
  z.object({ t: z.literal('term.resize'), sid: Sid, cols: Cols, rows: Rows }).strict(),
  z.object({ t: z.literal('term.close'), sid: Sid }).strict(),
] as const;

const RpcErrorShape = z.object({ code: z.string(), message: z.string(), details: z.array(z.string()).default([]) });

/** Server → client. */
export const TermServerFrames = [
  /** The terminal is open; `via` says how (ssh to user@127.0.0.1:port, or the serial console). */
  z.object({ t: z.literal('term.opened'), sid: z.number(), via: z.enum(['ssh', 'serial']), detail: z.string().optional() }),
  /** Status lines before the terminal opens (waiting for the guest's SSH server…). */
  z.object({ t: z.literal('term.status'), sid: z.number(), message: z.string() }),
  z.object({ t: z.literal('term.data'), sid: z.number(), data: Base64 }),
  /** The end: the remote command's exit status (ssh), or why it could not open or ended. */
  z.object({ t: z.literal('term.closed'), sid: z.number(), exitCode: z.number().nullable().optional(), signal: z.number().nullable().optional(), error: RpcErrorShape.optional() }),
] as const;
