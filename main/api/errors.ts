// Error codes that cross every boundary (CLI exit codes, RPC errors, GUI messages).
export const ErrorCode = {
  invalid: 'EINVAL', // bad input: nothing was changed
  notFound: 'ENOTFOUND',
  exists: 'EEXIST',
  busy: 'EBUSY', // locked by another process, disk in use, VM in the wrong state
  state: 'ESTATE', // the operation is not allowed in the VM's current state
  host: 'EHOST', // the host lacks something: QEMU missing, accelerator unusable, not enough memory
  engine: 'EENGINE', // QEMU or the micro-VMM failed
  broken: 'EBROKEN', // a corrupt or future-version bundle
  cancelled: 'ECANCELED',
  noSpace: 'ENOSPC', // the disk holding the library (or the destination) is full
  permission: 'EACCES', // permission denied or a read-only file system
  timeout: 'ETIMEDOUT',
  internal: 'EINTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Exit codes scripts can rely on, one per error code. */
export const EXIT_CODES: Record<ErrorCode, number> = {
  EINVAL: 2,
  ENOTFOUND: 3,
  EEXIST: 4,
  EBUSY: 5,
  ESTATE: 6,
  EHOST: 7,
  EENGINE: 8,
  EBROKEN: 9,
  ECANCELED: 10,
  ETIMEDOUT: 11,
  ENOSPC: 12,
  EACCES: 13,
  EINTERNAL: 1,
};

export class VmdeskError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Supporting lines shown behind a "details" disclosure, e.g. the tail of QEMU's log. */
    readonly details: string[] = [],
  ) {
    super(message);
    this.name = 'VmdeskError';
  }
}

export function isVmdeskError(e: unknown): e is VmdeskError {
  return e instanceof VmdeskError;
}
