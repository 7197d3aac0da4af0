// containedPath: the one helper that turns untrusted names into paths under a folder VMDesk owns.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { containedPath, isInside, joinContained } from '../../main/platform/contain.js';

describe('containedPath', () => {
  let root: string;
  let outside: string;

  beforeAll(() => {
    root = mkdtempSync(path.join(tmpdir(), 'vmdesk-contain-'));
    outside = mkdtempSync(path.join(tmpdir(), 'vmdesk-outside-'));
    mkdirSync(path.join(root, 'disks'));
    mkdirSync(path.join(root, 'real'));
    symlinkSync(outside, path.join(root, 'escape'));
    symlinkSync(path.join(root, 'real'), path.join(root, 'inner'));
    symlinkSync(path.join(outside, 'nothing-here'), path.join(root, 'dangling'));
  });
  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  it('joins plain names under the root', async () => {
    expect(await containedPath(root, 'disks', 'disk0.qcow2')).toBe(path.join(root, 'disks', 'disk0.qcow2'));
    expect(await containedPath(root, 'disks/disk0.qcow2')).toBe(path.join(root, 'disks', 'disk0.qcow2'));
    expect(await containedPath(root, 'snapshots', 'abcd1234.png')).toBe(path.join(root, 'snapshots', 'abcd1234.png'));
    // A link that stays inside the root is fine.
    expect(await containedPath(root, 'inner', 'x')).toBe(path.join(root, 'inner', 'x'));
  });

  it('refuses "..", absolute segments, NUL and empty names (the diskId traversal of the security issue)', async () => {
    for (const segs of [
      ['disks', '../../victim/disks/disk0.qcow2'],
      ['../x'],
      ['disks/../vm.json'],
      ['/etc/passwd'],
      ['disks', '/abs'],
      ['disks', 'a\0b'],
      [''],
      ['disks', '..'],
    ]) {
      await expect(containedPath(root, ...segs), segs.join(' + ')).rejects.toMatchObject({ code: 'EINVAL' });
      expect(() => joinContained(root, ...segs)).toThrow();
    }
  });

  it('refuses a symbolic link inside the root that leads out of it, or nowhere', async () => {
    await expect(containedPath(root, 'escape', 'planted')).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/symbolic link/) });
    await expect(containedPath(root, 'escape')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(containedPath(root, 'dangling')).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('isInside is lexical and does not match sibling prefixes', () => {
    expect(isInside('/a/b', '/a/b/c')).toBe(true);
    expect(isInside('/a/b', '/a/b')).toBe(true);
    expect(isInside('/a/b', '/a/bc')).toBe(false);
    expect(isInside('/a/b', '/a/b/../c')).toBe(false);
  });
});
