// @vitest-environment jsdom
// The timeline's level of detail and culling (timeline-layout.ts: detailAt, cull, dotsPath, nodeAt), checked
// against brute force on random trees, and in the component: a thousand snapshots zoomed out put dots on a few
// shared paths, not a thousand elements, while the keyboard's active node keeps its element and name.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mount } from '@vue/test-utils';
import { createPinia, setActivePinia } from 'pinia';
import type { Snap } from './layout';
import { cull, detailAt, dotsPath, DOTS_BELOW, nodeAt, timelineLayout, type TlNode } from './timeline-layout';
import SnapshotTimeline from './SnapshotTimeline.vue';

const T0 = new Date(2026, 0, 5, 12, 14, 0).getTime();
function snap(id: string, parent: string | null, t: number, over: Partial<Snap> = {}): Snap {
  return { id, tag: `vmdesk-${id}`, name: id, description: '', time: new Date(t).toISOString(), parent, kind: 'disk-only', config: null, thumbnail: false, vmStateBytes: 0, disks: ['disk0'], adopted: false, linkedClones: [], isCurrent: false, missingOn: [], children: [], ...over };
}
/** A random tree: parents earlier, pauses from seconds to days, some automatic. */
const treeArb = fc.array(fc.tuple(fc.nat(1000), fc.integer({ min: 1, max: 4 * 86_400 }), fc.boolean()), { minLength: 1, maxLength: 120 }).map((spec) => {
  let t = T0;
  return spec.map(([p, dt, auto], i) => {
    t += dt * 1000;
    return snap(`n${i}`, i === 0 ? null : `n${p % i}`, t, auto && i % 3 === 0 ? { auto: 'scheduled' } : {});
  });
});

describe('timeline level of detail and culling', () => {
  it('draws dots below DOTS_BELOW pixels per snapshot and whole nodes from there on', () => {
    expect(detailAt(0.5)).toBe('dots');
    expect(detailAt(DOTS_BELOW - 0.01)).toBe('dots');
    expect(detailAt(DOTS_BELOW)).toBe('full');
    expect(detailAt(96)).toBe('full');
  });

  it('keeps exactly what touches the window (nodes, lines crossing it, gaps, days) and the active node', () => {
    fc.assert(
      fc.property(treeArb, fc.double({ min: 0.5, max: 200, noNaN: true }), fc.double({ min: -500, max: 20_000, noNaN: true }), fc.double({ min: 10, max: 5000, noNaN: true }), fc.nat(), (s, scale, from, width, k) => {
        const l = timelineLayout(s, s.at(-1)!.id, s.at(-1)!.time ? Date.parse(s.at(-1)!.time) + 1000 : T0);
        const to = from + width;
        const keep = s[k % s.length]!.id;
        const w = cull(l, scale, from, to, keep);
        const inside = (x: number) => x * scale >= from && x * scale < to;
        // Nodes: every one in the window, none outside it but the active one.
        expect(new Set(w.nodes.map((n) => n.snap.id))).toEqual(new Set([...l.nodes.filter((n) => inside(n.x)).map((n) => n.snap.id), keep]));
        // Lines: every one whose span touches the window (a long branch line crossing it with both ends outside too).
        const touches = (a: number, b: number) => Math.max(a, b) * scale >= from && Math.min(a, b) * scale <= to;
        expect(w.edges).toEqual(l.edges.filter((e) => touches(e.from.x, e.to ? e.to.x : l.now.x)));
        expect(w.gaps).toEqual(l.gaps.filter((g) => touches(g.x0, g.x1)));
        expect(w.days).toEqual(l.days.filter((d) => touches(d.x, d.x)));
      }),
      { numRuns: 200 },
    );
  });

  it('finds the node under the pointer as brute force does, and none far from every node', () => {
    fc.assert(
      fc.property(treeArb, fc.double({ min: 0.5, max: 40, noNaN: true }), fc.double({ min: -50, max: 3000, noNaN: true }), fc.double({ min: 0, max: 600, noNaN: true }), (s, scale, x, y) => {
        const l = timelineLayout(s, s.at(-1)!.id, T0);
        const yOf = (lane: number) => 98 + lane * 104;
        const r = 9;
        const got = nodeAt(l.nodes, scale, x, y, yOf, r);
        const d = (n: TlNode) => Math.hypot(n.x * scale - x, yOf(n.lane) - y);
        const best = Math.min(...l.nodes.map(d));
        if (best > r) expect(got).toBeNull();
        else expect(got && d(got)).toBeCloseTo(best, 9);
      }),
      { numRuns: 300 },
    );
  });

  it('puts every dot in one path, each a closed circle around its centre', () => {
    const d = dotsPath([[10, 20], [30.25, 40]], 2);
    expect(d).toBe('M8.0 20.0a2 2 0 1 0 4 0a2 2 0 1 0 -4 0M28.3 40.0a2 2 0 1 0 4 0a2 2 0 1 0 -4 0');
    expect(dotsPath([], 2)).toBe('');
  });
});

describe('SnapshotTimeline with a thousand snapshots', () => {
  function thousand(): Snap[] {
    const out: Snap[] = [];
    for (let i = 0; i < 1000; i++) out.push(snap(`s${String(i).padStart(4, '0')}`, i ? out[i - 1]!.id : null, T0 + i * (i % 50 === 0 ? 7_200_000 : 3000), { name: `Snapshot ${i}`, kind: i % 3 ? 'disk-only' : 'live', auto: i % 10 === 9 ? 'scheduled' : undefined }));
    out[999]!.isCurrent = true;
    return out;
  }
  async function timeline(activeKey: string) {
    setActivePinia(createPinia());
    const w = mount(SnapshotTimeline, { props: { snaps: thousand(), current: 's0999', activeKey, vmId: 'vm', vmState: 'stopped', hideAuto: false, filter: '', nowMs: T0 + 4_000_000 } });
    await w.vm.$nextTick();
    return w;
  }

  it('zoomed out, draws the dots as a few paths, not a thousand elements, and keeps the active node reachable', async () => {
    const w = await timeline('s0500');
    const ex = w.vm as unknown as { fitAll(): void; scale: number };
    ex.fitAll();
    await w.vm.$nextTick();
    await w.vm.$nextTick();
    expect(detailAt(ex.scale)).toBe('dots');
    const options = w.findAll('[role="option"]');
    // The active node and "you are here": elements with their names; the rest are dots.
    expect(options.map((o) => o.attributes('id')).sort()).toEqual(['snaptl-now', 'snaptl-s0500']);
    expect(w.find('#snaptl-s0500').attributes('aria-label')).toMatch(/^Snapshot 500, /);
    expect(w.find('[data-testid="snap-timeline"]').attributes('aria-activedescendant')).toBe('snaptl-s0500');
    const dots = w.findAll('path.dotpath');
    expect(dots.length).toBeGreaterThan(0);
    expect(dots.length).toBeLessThanOrEqual(6);
    const circles = dots.reduce((a, p) => a + (p.attributes('d')!.match(/M/g)?.length ?? 0), 0);
    expect(circles).toBeGreaterThan(100);
    expect(w.findAll('image').length).toBe(0);
    expect(w.findAll('*').length).toBeLessThan(400);
  });

  it('at full detail, has an element only for the nodes near the viewport', async () => {
    const w = await timeline('current');
    const ex = w.vm as unknown as { scale: number };
    expect(detailAt(ex.scale)).toBe('full');
    const options = w.findAll('[role="option"]');
    expect(options.length).toBeGreaterThan(5);
    expect(options.length).toBeLessThan(60);
    expect(w.findAll('path.edge').length).toBeLessThanOrEqual(6);
  });
});
