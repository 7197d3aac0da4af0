// Unit tests of the pure snapshot tree model: names, re-parenting on delete, branches, rendering, config diffs.
import { describe, expect, it } from 'vitest';
import {
  addNode,
  ancestry,
  checkSnapshotName,
  childrenOf,
  diffConfigs,
  emptyTree,
  findNode,
  normalizeTree,
  removeBranch,
  removeNode,
  renderTreeText,
  subtree,
  type SnapshotNode,
  type SnapshotTree,
} from '../../main/core/snapshots/tree.js';
import { idFromTag, newSnapshotId, tagFor } from '../../main/core/snapshots/store.js';
import { parseConvertProgress } from '../../main/platform/qemu-img.js';

let clock = 0;
function node(id: string, parent: string | null, name = id): SnapshotNode {
  clock++;
  return {
    id,
    tag: `vmdesk-${id}`,
    name,
    description: '',
    time: new Date(Date.UTC(2026, 0, 1, 0, 0, clock)).toISOString(),
    parent,
    kind: 'disk-only',
    config: null,
    thumbnail: false,
    vmStateBytes: 0,
    disks: ['disk0'],
    adopted: false,
    linkedClones: [],
  };
}

/** a ─ b ─ c ─ d, and b ─ e (a branch), current = d */
function sample(): SnapshotTree {
  let t = emptyTree();
  for (const [id, p] of [['aaaa', null], ['bbbb', 'aaaa'], ['cccc', 'bbbb'], ['dddd', 'cccc'], ['eeee', 'bbbb']] as const) t = addNode(t, node(id, p), true);
  return { ...t, current: 'dddd' };
}

describe('snapshot names', () => {
  const t = sample();
  it('rejects empty, too long, control characters and duplicates (case-insensitive)', () => {
    expect(() => checkSnapshotName(t, '')).toThrow(/empty/);
    expect(() => checkSnapshotName(t, '   ')).toThrow(/empty/);
    expect(() => checkSnapshotName(t, 'x'.repeat(65))).toThrow(/at most 64/);
    expect(() => checkSnapshotName(t, 'a\nb')).toThrow(/control/);
    expect(() => checkSnapshotName(t, 'BBBB')).toThrow(/already exists/);
    expect(() => checkSnapshotName(t, 42)).toThrow(/text/);
  });
  it('accepts a fresh name, trims it, and lets a rename keep its own name', () => {
    expect(checkSnapshotName(t, '  Clean install ')).toBe('Clean install');
    expect(checkSnapshotName(t, 'bbbb', 'bbbb')).toBe('bbbb');
  });
});

describe('finding snapshots', () => {
  const t = sample();
  it('by id, name (any case) and unique id prefix', () => {
    expect(findNode(t, 'cccc').id).toBe('cccc');
    expect(findNode(t, 'CCCC').id).toBe('cccc');
    expect(() => findNode(t, 'zzzz')).toThrow(/no snapshot "zzzz"/);
  });
});

describe('tree shape', () => {
  it('knows children, subtrees and ancestry', () => {
    const t = sample();
    expect(childrenOf(t, 'bbbb').map((n) => n.id)).toEqual(['cccc', 'eeee']);
    expect(subtree(t, 'bbbb').map((n) => n.id)).toEqual(['bbbb', 'cccc', 'dddd', 'eeee']);
    expect(ancestry(t, 'dddd')).toEqual(['aaaa', 'bbbb', 'cccc', 'dddd']);
  });

  it('deleting a middle node re-parents its children to its parent', () => {
    const t = removeNode(sample(), 'bbbb');
    expect(t.nodes.map((n) => n.id)).not.toContain('bbbb');
    expect(childrenOf(t, 'aaaa').map((n) => n.id)).toEqual(['cccc', 'eeee']);
    expect(t.current).toBe('dddd');
  });

  it('deleting the current node makes its parent current', () => {
    expect(removeNode(sample(), 'dddd').current).toBe('cccc');
  });

  it('deleting a branch removes everything below and moves current out of it', () => {
    const t = removeBranch(sample(), 'cccc');
    expect(t.nodes.map((n) => n.id).sort()).toEqual(['aaaa', 'bbbb', 'eeee']);
    expect(t.current).toBe('bbbb');
  });

  it('normalize repairs dangling parents, cycles and a dangling current', () => {
    const t = sample();
    const broken: SnapshotTree = {
      ...t,
      current: 'gone',
      nodes: t.nodes.map((n) => (n.id === 'aaaa' ? { ...n, parent: 'dddd' } : n.id === 'eeee' ? { ...n, parent: 'nowhere' } : n)),
    };
    const fixed = normalizeTree(broken);
    expect(fixed.current).toBeNull();
    expect(fixed.nodes.find((n) => n.id === 'eeee')!.parent).toBeNull();
    // Every node reaches a root.
    for (const n of fixed.nodes) expect(ancestry(fixed, n.id)[0] && fixed.nodes.find((x) => x.id === ancestry(fixed, n.id)[0])!.parent).toBeNull();
  });

  it('renders a text tree with the current state marked', () => {
    const lines = renderTreeText(sample());
    expect(lines).toEqual(['aaaa', '└─ bbbb', '   ├─ cccc', '   │  └─ dddd  <- current state', '   └─ eeee']);
  });
});

describe('config diff', () => {
  it('lists changed top-level settings and ignores timestamps', () => {
    const base = {
      schemaVersion: 1 as const,
      id: '00000000-0000-4000-8000-000000000000',
      name: 'a',
      osType: 'linux' as const,
      engine: 'qemu' as const,
      accel: 'auto' as const,
      firmware: 'bios' as const,
      cpus: 1,
      memoryMiB: 256,
      disks: [],
      network: [],
      createdAt: '2026-01-01T00:00:00.000Z',
      modifiedAt: '2026-01-01T00:00:00.000Z',
    };
    const d = diffConfigs(base, { ...base, cpus: 2, memoryMiB: 512, modifiedAt: '2026-02-01T00:00:00.000Z' });
    expect(d).toEqual([
      { field: 'cpus', from: 1, to: 2 },
      { field: 'memoryMiB', from: 256, to: 512 },
    ]);
  });
});

describe('ids and tags', () => {
  it('round-trips ids through QEMU tags and leaves foreign tags alone', () => {
    const id = newSnapshotId();
    expect(id).toMatch(/^[a-z0-9]{10}$/);
    expect(idFromTag(tagFor(id))).toBe(id);
    expect(idFromTag('my-own-snapshot')).toBeUndefined();
  });
  it('parses qemu-img convert progress', () => {
    expect(parseConvertProgress('    (0.00/100%)\r    (42.50/100%)\r')).toBeCloseTo(0.425);
    expect(parseConvertProgress('nothing')).toBeUndefined();
  });
});
