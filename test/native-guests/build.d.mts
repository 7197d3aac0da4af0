// Types for build.mjs (the packer is plain JS so bench/microvm.mjs can use it without a TS loader).
export declare const guestDir: string;
export declare function packBzImage(payload: Buffer, o?: { version?: number; magic?: string; xloadflags?: number; initSize?: number; bootFlag?: number; loadflags?: number }, setupCode?: Buffer): Buffer;
export declare function buildSetupCode(): Buffer;
export declare function buildPayload(): Buffer;
export declare function ensureTestGuest(): string;
export declare function writeBrokenGuest(kind: 'bad-magic' | 'old-protocol' | 'no-64bit' | 'truncated' | 'tiny' | 'huge'): string;
