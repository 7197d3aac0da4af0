// Reads an OVMF variable store (the raw flash image of OVMF_VARS*.fd) with bounds: the firmware volume header,
// the variable store header and each variable record. Used to tell whether Secure Boot keys are enrolled in a
// VM's own store, and by tests to see what the firmware wrote there. Nothing here trusts a length it reads.

/** EFI's global variable GUID (PK, KEK, SecureBoot, BootOrder...). */
export const EFI_GLOBAL_VARIABLE = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
/** EDK II's Secure Boot switch (SecureBootEnable): 1 enforces once a PK is enrolled. */
export const EFI_SECURE_BOOT_ENABLE_DISABLE = 'f0a30bc7-af08-4556-99c4-001009c93a44';
/** EDK II's CustomMode switch: 1 lets keys change without signatures (Secure Boot is not enforced then). */
export const EFI_CUSTOM_MODE_ENABLE = 'c076ec0c-7028-4399-a072-71ee5c448b9f';
/** db and dbx live under the image security database GUID. */
export const EFI_IMAGE_SECURITY_DATABASE = 'd719b2cb-3d3a-4596-a3bc-dad00e67656f';

const FVH_SIGNATURE = 0x4856465f; // "_FVH"
const AUTH_VARIABLE_STORE = 'aaf32c78-947b-439a-a180-2e144ec37792';
const PLAIN_VARIABLE_STORE = 'ddcf3616-3275-4164-98b6-fe85707ffe7d';
const VARIABLE_START_ID = 0x55aa;
const VAR_ADDED = 0x3f;
/** VAR_ADDED & VAR_IN_DELETED_TRANSITION: still the live copy until its replacement is written. */
const VAR_ADDED_IN_TRANSITION = 0x3e;
/** A store this big is no OVMF store (the largest builds have 4 MiB flash). */
const MAX_STORE_BYTES = 16 * 1024 * 1024;
const MAX_VARIABLES = 20_000;

export interface UefiVariable {
  name: string;
  guid: string;
  attributes: number;
  data: Buffer;
}

export class UefiVarStoreError extends Error {}

/** A GUID as EFI lays it out (first three fields little-endian), in its usual text form. */
export function guidAt(buf: Buffer, off: number): string {
  if (off < 0 || off + 16 > buf.length) throw new UefiVarStoreError('GUID past the end of the store');
  const h = (b: Buffer) => b.toString('hex');
  const le = (start: number, len: number) => h(Buffer.from(buf.subarray(off + start, off + start + len)).reverse());
  return `${le(0, 4)}-${le(4, 2)}-${le(6, 2)}-${h(buf.subarray(off + 8, off + 10))}-${h(buf.subarray(off + 10, off + 16))}`;
}

/**
 * The live variables of a raw OVMF variable store, later copies replacing earlier ones (the store is a log:
 * an update appends a new record and marks the old one deleted). Throws UefiVarStoreError on anything that
 * is not a well-formed store.
 */
export function parseUefiVarStore(buf: Buffer): UefiVariable[] {
  if (buf.length > MAX_STORE_BYTES) throw new UefiVarStoreError(`${buf.length} bytes is too large for a UEFI variable store`);
  if (buf.length < 0x48 + 28) throw new UefiVarStoreError('too short for a firmware volume');
  if (buf.readUInt32LE(40) !== FVH_SIGNATURE) throw new UefiVarStoreError('no firmware volume signature (_FVH)');
  const fvLength = Number(buf.readBigUInt64LE(32));
  const headerLength = buf.readUInt16LE(48);
  if (headerLength < 56 || headerLength > 4096 || headerLength % 8 !== 0) throw new UefiVarStoreError(`firmware volume header length ${headerLength} is implausible`);
  if (fvLength > buf.length || fvLength < headerLength + 28) throw new UefiVarStoreError('firmware volume length does not fit the file');
  const storeGuid = guidAt(buf, headerLength);
  const authenticated = storeGuid === AUTH_VARIABLE_STORE;
  if (!authenticated && storeGuid !== PLAIN_VARIABLE_STORE) throw new UefiVarStoreError(`unknown variable store ${storeGuid}`);
  const storeSize = buf.readUInt32LE(headerLength + 16);
  const end = headerLength + storeSize;
  if (storeSize < 28 || end > fvLength) throw new UefiVarStoreError('variable store size does not fit the firmware volume');
  const headerSize = authenticated ? 60 : 32;
  const live = new Map<string, UefiVariable>();
  let off = headerLength + 28;
  for (let count = 0; off + headerSize <= end; count++) {
    if (count > MAX_VARIABLES) throw new UefiVarStoreError('too many variable records');
    if (buf.readUInt16LE(off) !== VARIABLE_START_ID) break; // erased flash (0xffff) ends the log
    const state = buf.readUInt8(off + 2);
    const attributes = buf.readUInt32LE(off + 4);
    const sizes = authenticated ? off + 36 : off + 8;
    const nameSize = buf.readUInt32LE(sizes);
    const dataSize = buf.readUInt32LE(sizes + 4);
    const guidOff = sizes + 8;
    const nameOff = off + headerSize;
    if (nameSize > end - nameOff || dataSize > end - nameOff - nameSize || nameSize % 2 !== 0) throw new UefiVarStoreError(`variable record at ${off} runs past the store`);
    if (state === VAR_ADDED || state === VAR_ADDED_IN_TRANSITION) {
      const name = buf.subarray(nameOff, nameOff + nameSize).toString('utf16le').replace(/\u0000+$/, '');
      const guid = guidAt(buf, guidOff);
      const data = Buffer.from(buf.subarray(nameOff + nameSize, nameOff + nameSize + dataSize));
      live.set(`${guid}/${name}`, { name, guid, attributes, data });
    }
    off = (nameOff + nameSize + dataSize + 3) & ~3;
  }
  return [...live.values()];
}

export function findVariable(vars: readonly UefiVariable[], guid: string, name: string): UefiVariable | undefined {
  return vars.find((v) => v.guid === guid && v.name === name);
}

export interface SecureBootKeys {
  /** A platform key is enrolled (without one the firmware is in setup mode and enforces nothing). */
  pk: boolean;
  kek: boolean;
  db: boolean;
  /** EDK II's SecureBootEnable: 1, 0, or undefined when the variable is absent. */
  enable: number | undefined;
  customMode: number | undefined;
  /**
   * What OVMF makes of it at boot: it sets the volatile SecureBoot variable to 1 when a PK is enrolled,
   * SecureBootEnable is 1 (or absent: enabled by default with keys) and CustomMode is off.
   */
  enforced: boolean;
}

export function secureBootKeys(vars: readonly UefiVariable[]): SecureBootKeys {
  const byte = (v: UefiVariable | undefined) => (v && v.data.length >= 1 ? v.data[0] : undefined);
  const nonEmpty = (v: UefiVariable | undefined) => !!v && v.data.length > 0;
  const pk = nonEmpty(findVariable(vars, EFI_GLOBAL_VARIABLE, 'PK'));
  const enable = byte(findVariable(vars, EFI_SECURE_BOOT_ENABLE_DISABLE, 'SecureBootEnable'));
  const customMode = byte(findVariable(vars, EFI_CUSTOM_MODE_ENABLE, 'CustomMode'));
  return {
    pk,
    kek: nonEmpty(findVariable(vars, EFI_GLOBAL_VARIABLE, 'KEK')),
    db: nonEmpty(findVariable(vars, EFI_IMAGE_SECURITY_DATABASE, 'db')),
    enable,
    customMode,
    enforced: pk && enable !== 0 && customMode !== 1,
  };
}
