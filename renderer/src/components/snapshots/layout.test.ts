// The snapshot layouts without a DOM: the compact tree (connectors, branches, groups, filter, hide automatic)
// and the timeline (even steps, compressed gaps, day separators, lanes, collision-free labels, ticks, keys).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { treeRows, type Snap, type TreeRow } from './layout';
import { estimateWidth, fitText, GAP_SLOTS, neighbour, placeLabels, placeThumbs, placeTicks, timelineLayout, visibleRange } from './timeline-layout';

const T0 = new Date(2026, 0, 5, 12, 14, 0).getTime();
function snap(id: string, parent: string | null, t: number, over: Partial<Snap> = {}): Snap {
  return {
    id,
    tag: `vmdesk-${id}`,
    name: id,
    description: '',
    time: new Date(t).toISOString(),
    parent,
    kind: 'disk-only',
    config: null,
    thumbnail: false,
    vmStateBytes: 0,
    disks: ['disk0'],
    adopted: false,
    linkedClones: [],
    isCurrent: false,
    missingOn: [],
    children: [],
    ...over,
  };
}
const sec = (n: number) => T0 + n * 1000;
const day = (n: number) => T0 + n * 86_400_000;

/** Rows as text: indentation guides, the row's own column, its name. */
function draw(rows: TreeRow[]): string[] {
  const g = { pipe: '│ ', none: '  ', tee: '├─', elbow: '└─' } as const;
  return rows.map((r) => `${r.guides.map((x) => g[x]).join('')}${r.kind === 'current' ? '▶ now' : r.kind === 'group' ? `[${r.group!.members.length}${r.expanded ? '-' : '+'}]` : r.snap!.name}${r.expandable && r.kind === 'snap' ? (r.expanded ? ' -' : ' +') : ''}`);
}

describe('tree rows', () => {
  it('keeps a chain in one column with the current state at its end', () => {
    const s = [snap('a', null, sec(0)), snap('b', 'a', sec(1)), snap('c', 'b', sec(2)), snap('d', 'c', sec(3))];
    const rows = treeRows(s, 'd');
    expect(draw(rows)).toEqual(['a', 'b', 'c', 'd', '▶ now']);
    expect(rows.map((r) => [r.up, r.down])).toEqual([
      [false, true],
      [true, true],
      [true, true],
      [true, true],
      [true, false],
    ]);
  });

  it('indents a branch with a connector, the lane to the current state going on past it', () => {
    // base ─ updated ─ tweaked (current), and base ─ experiment ─ more
    const s = [snap('base', null, sec(0)), snap('updated', 'base', sec(5)), snap('tweaked', 'updated', sec(9)), snap('experiment', 'base', sec(7)), snap('more', 'experiment', sec(8))];
    const rows = treeRows(s, 'tweaked');
    expect(draw(rows)).toEqual(['base -', '├─experiment', '│ more', 'updated', 'tweaked', '▶ now']);
    expect(rows[1]!.parentKey).toBe('base');
    expect(rows[2]!.level).toBe(1);
    // Folded: the branch goes, the lane stays.
    expect(draw(treeRows(s, 'tweaked', { collapsed: new Set(['base']) }))).toEqual(['base +', 'updated', 'tweaked', '▶ now']);
  });

  it('after a restore, the newer work becomes a branch and "now" follows the restored snapshot', () => {
    const s = [snap('a', null, sec(0)), snap('b', 'a', sec(1)), snap('c', 'b', sec(2))];
    expect(draw(treeRows(s, 'b'))).toEqual(['a', 'b -', '├─c', '▶ now']);
  });

  it('groups automatic snapshots: restores\' safety leaves, and runs of scheduled ones', () => {
    const s = [
      snap('a', null, sec(0)),
      snap('s1', 'a', sec(1), { auto: 'safety', name: 'Before restoring a' }),
      snap('s2', 'a', sec(2), { auto: 'safety', name: 'Before restoring a (2)' }),
      snap('s3', 'a', sec(3), { auto: 'safety', name: 'Before restoring a (3)' }),
      snap('k1', 'a', sec(4), { auto: 'scheduled' }),
      snap('k2', 'k1', sec(5), { auto: 'scheduled' }),
      snap('k3', 'k2', sec(6), { auto: 'scheduled' }),
      snap('b', 'k3', sec(7)),
    ];
    const rows = treeRows(s, 'b');
    expect(draw(rows)).toEqual(['a -', '├─[3+]', '[3+]', 'b', '▶ now']);
    expect(rows[1]!.group!.auto).toBe('safety');
    expect(rows[2]!.group!.auto).toBe('scheduled');
    const open = treeRows(s, 'b', { openGroups: new Set([rows[1]!.key, rows[2]!.key]) });
    expect(draw(open)).toEqual(['a -', '├─[3-]', '│ ├─Before restoring a', '│ ├─Before restoring a (2)', '│ └─Before restoring a (3)', '[3-]', '├─k1', '├─k2', '├─k3', 'b', '▶ now']);
    expect(open[2]!.parentKey).toBe(rows[1]!.key);
    // Hidden: the manual snapshot below them hangs from the nearest one shown.
    expect(draw(treeRows(s, 'b', { hideAuto: true }))).toEqual(['a', 'b', '▶ now']);
  });

  it('filters by name or description, keeping ancestors as context and no groups', () => {
    const s = [snap('a', null, sec(0)), snap('b', 'a', sec(1), { description: 'kernel upgrade' }), snap('c', 'b', sec(2)), snap('x', 'a', sec(3), { name: 'Upgraded', auto: 'safety' })];
    const rows = treeRows(s, 'c', { filter: 'UPGRADE' });
    expect(rows.filter((r) => r.kind === 'snap').map((r) => `${r.snap!.name}${r.context ? '?' : ''}`)).toEqual(['a?', 'Upgraded', 'b']);
  });

  it('lays out a thousand snapshots quickly', () => {
    const s: Snap[] = [];
    for (let i = 0; i < 1000; i++) s.push(snap(`n${i}`, i === 0 ? null : `n${i % 7 === 3 ? Math.max(0, i - 5) : i - 1}`, sec(i), i % 11 === 5 ? { auto: 'safety' } : {}));
    // Warmed up once (the first call pays for the JIT), then timed.
    treeRows(s, 'n999');
    timelineLayout(s, 'n999', sec(2000));
    const t = performance.now();
    const rows = treeRows(s, 'n999');
    timelineLayout(s, 'n999', sec(2000));
    expect(performance.now() - t).toBeLessThan(150);
    expect(rows.length).toBeGreaterThan(500);
  });
});

describe('timeline layout', () => {
  it('gives sixteen snapshots taken in a minute sixteen even steps, and their labels room', () => {
    const s: Snap[] = [];
    for (let i = 0; i < 16; i++) s.push(snap(`s${i}`, i ? `s${i - 1}` : null, sec(i * 3), { name: `Snapshot ${i + 1}` }));
    const l = timelineLayout(s, 's15', sec(60));
    expect(l.nodes.map((n) => n.x)).toEqual([...Array(16).keys()]);
    expect(new Set(l.nodes.map((n) => n.lane))).toEqual(new Set([0]));
    const labels = placeLabels(l.nodes, 96, estimateWidth);
    expect([...labels.values()].every((p) => p.text.startsWith('Snapshot '))).toBe(true);
    expect(labels.size).toBe(16);
    // The axis says each minute once and the later ones by their seconds.
    const ticks = placeTicks(l.nodes, 96, estimateWidth);
    const minutes = ticks.filter((t) => !t.text.startsWith(':'));
    expect(new Set(minutes.map((t) => t.text)).size).toBe(minutes.length);
    expect(ticks.length).toBe(16);
  });

  it('compresses long pauses into a labelled gap and marks every new day', () => {
    const s = [snap('a', null, day(0)), snap('b', 'a', day(0) + 5000), snap('c', 'b', day(3)), snap('d', 'c', day(3) + 7_200_000)];
    const l = timelineLayout(s, 'd', day(3) + 7_260_000);
    const x = l.nodes.map((n) => n.x);
    expect(x[1]! - x[0]!).toBe(1);
    expect(x[2]! - x[1]!).toBeCloseTo(1 + GAP_SLOTS);
    expect(x[3]! - x[2]!).toBeCloseTo(1 + GAP_SLOTS);
    expect(l.gaps.map((g) => g.label)).toEqual(['3 days later', '2 hours later']);
    expect(l.days).toHaveLength(2);
    expect(l.now.x).toBe(x[3]! + 1);
  });

  it('puts the path to the current state in lane 0, packs branches, and gives automatic snapshots their lane', () => {
    // a ─ b ─ c ─ d (current); b ─ x1 (branch, ends before y1 starts); c ─ y1 ─ y2; d ─ safety
    const s = [
      snap('a', null, sec(0)),
      snap('b', 'a', sec(1)),
      snap('x1', 'b', sec(2)),
      snap('c', 'b', sec(3)),
      snap('y1', 'c', sec(4)),
      snap('y2', 'y1', sec(5)),
      snap('d', 'c', sec(6)),
      snap('z1', 'a', sec(7)),
      snap('safe', 'd', sec(8), { auto: 'safety' }),
    ];
    const l = timelineLayout(s, 'd', sec(9));
    const lane = Object.fromEntries(l.nodes.map((n) => [n.snap.id, n.lane]));
    expect(lane).toMatchObject({ a: 0, b: 0, c: 0, d: 0, x1: 1, y1: 1, y2: 1 });
    // z1 leaves a (x 0) and reaches x 7: its span overlaps both branches, so it needs a lane of its own.
    expect(lane.z1).toBe(2);
    expect(lane.safe).toBe(3);
    expect(l.autoLane).toBe(3);
    expect(l.lanes).toBe(4);
    for (const spans of l.spans) {
      const sorted = [...spans].sort((p, q) => p.from - q.from);
      for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.from).toBeGreaterThan(sorted[i - 1]!.to);
    }
    expect(l.edges.find((e) => e.to?.snap.id === 'x1')!.kind).toBe('branch');
    expect(l.edges.find((e) => e.to?.snap.id === 'safe')!.kind).toBe('auto');
    expect(l.edges.find((e) => e.to === null)!.from.snap.id).toBe('d');
    // Hidden automatic snapshots leave no lane behind.
    expect(timelineLayout(s, 'd', sec(9), { hideAuto: true }).autoLane).toBeNull();
  });

  it('walks time with left/right and branches with up/down', () => {
    const s = [snap('a', null, sec(0)), snap('b', 'a', sec(1)), snap('x', 'a', sec(2)), snap('c', 'b', sec(3))];
    const l = timelineLayout(s, 'c', sec(9));
    expect(neighbour(l, 'a', 'right')).toBe('b');
    expect(neighbour(l, 'c', 'right')).toBe('now');
    expect(neighbour(l, 'now', 'left')).toBe('c');
    expect(neighbour(l, 'b', 'down')).toBe('x');
    expect(neighbour(l, 'x', 'up')).toBe('b');
    expect(neighbour(l, 'a', 'left')).toBeNull();
  });

  it('never lets two labels of a lane touch in a row, whatever the tree and zoom', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(40), fc.string({ minLength: 1, maxLength: 40 }), fc.nat(100_000_000)), { minLength: 1, maxLength: 60 }),
        fc.double({ min: 2, max: 300, noNaN: true }),
        (spec, scale) => {
          const s = spec.map(([p, name, dt], i) => snap(`n${i}`, i === 0 ? null : `n${p % i}`, T0 + dt, { name, auto: i % 9 === 4 ? 'scheduled' : undefined, thumbnail: i % 2 === 0 }));
          const l = timelineLayout(s, `n${spec.length - 1}`, T0 + 200_000_000);
          const labels = placeLabels(l.nodes, scale, estimateWidth);
          const byRow = new Map<string, { left: number; right: number }[]>();
          for (const n of l.nodes) {
            const p = labels.get(n.snap.id);
            if (!p) continue;
            expect(estimateWidth(p.text)).toBeLessThanOrEqual(p.right - p.left + 0.001);
            const k = `${n.lane}/${p.row}`;
            (byRow.get(k) ?? byRow.set(k, []).get(k)!).push(p);
          }
          for (const list of byRow.values()) {
            list.sort((a, b) => a.left - b.left);
            for (let i = 1; i < list.length; i++) expect(list[i]!.left).toBeGreaterThanOrEqual(list[i - 1]!.right);
          }
          const thumbs = [...placeThumbs(l.nodes, scale, 64)].map((id) => l.byId.get(id)!);
          for (const a of thumbs) for (const b of thumbs) if (a !== b && a.lane === b.lane) expect(Math.abs(a.x - b.x) * scale).toBeGreaterThanOrEqual(64);
          const ticks = placeTicks(l.nodes, scale, estimateWidth);
          for (let i = 1; i < ticks.length; i++) expect(ticks[i]!.x - estimateWidth(ticks[i]!.text) / 2).toBeGreaterThanOrEqual(ticks[i - 1]!.x + estimateWidth(ticks[i - 1]!.text) / 2);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('shortens a name to the room it has and finds what is on screen', () => {
    expect(fitText('A rather long snapshot name', 80, estimateWidth)).toMatch(/^A rather l.*…$/);
    expect(estimateWidth(fitText('A rather long snapshot name', 80, estimateWidth))).toBeLessThanOrEqual(80);
    expect(fitText('x', 2, estimateWidth)).toBe('');
    const s = Array.from({ length: 100 }, (_, i) => snap(`n${i}`, i ? `n${i - 1}` : null, sec(i)));
    const l = timelineLayout(s, 'n99', sec(100));
    expect(visibleRange(l.nodes, 50, 1000, 2000)).toEqual([20, 40]);
  });
});
