// The bundle's TPM state across disk snapshots: copied whole, put back exactly, never through a symlink.
import { mkdtemp, readdir, readFile, rm, symlink, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { restoreTpmState, snapshotTpmState, tpmStateDir } from '../../main/platform/tpm-state.js';

let bundle: string;
beforeEach(async () => {
  bundle = await mkdtemp(path.join(os.tmpdir(), 'vmdesk-tpm-'));
});
afterEach(async () => {
  await rm(bundle, { recursive: true, force: true });
});

describe('TPM state with disk snapshots', () => {
  it('puts a snapshot\'s state back exactly: its files replaced in place, a file it lacks removed, no temp files left', async () => {
    const state = tpmStateDir(bundle);
    await mkdir(state, { recursive: true });
    await writeFile(path.join(state, 'tpm2-00.permall'), 'sealed at snapshot time');
    snapshotTpmState(bundle, 'snap1');
    // Later the TPM changed and swtpm left a volatile state beside it.
    await writeFile(path.join(state, 'tpm2-00.permall'), 'changed since');
    await writeFile(path.join(state, 'tpm2-00.volatilestate'), 'volatile');
    restoreTpmState(bundle, 'snap1');
    expect(await readFile(path.join(state, 'tpm2-00.permall'), 'utf8')).toBe('sealed at snapshot time');
    expect((await readdir(state)).sort()).toEqual(['snapshots', 'tpm2-00.permall']);
    expect(await readdir(path.join(state, 'snapshots', 'snap1'))).toEqual(['tpm2-00.permall']);
  });

  it('does not follow a symlink planted among a snapshot\'s state files', async () => {
    const state = tpmStateDir(bundle);
    await mkdir(path.join(state, 'snapshots', 'evil'), { recursive: true });
    const secret = path.join(bundle, 'host-secret');
    await writeFile(secret, 'not the TPM');
    await symlink(secret, path.join(state, 'snapshots', 'evil', 'tpm2-00.permall'));
    await writeFile(path.join(state, 'tpm2-00.permall'), 'the real state');
    restoreTpmState(bundle, 'evil');
    expect(await readFile(path.join(state, 'tpm2-00.permall'), 'utf8')).toBe('the real state');
  });
});
