// axe-core in an e2e page: injected through the DevTools protocol (page.evaluate of the library's source), since
// the page's CSP (script-src 'self') refuses inline <script> elements, and run against the whole document.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Page } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export interface AxeFinding {
  rule: string;
  impact: string;
  help: string;
  targets: string[];
  /** axe's explanation for the first node (e.g. the contrast ratio it measured). */
  summary: string;
}

/** The page's critical and serious violations (WCAG 2.x A/AA and best practices), one entry per rule. */
export async function axeScan(page: Page, opts: { exclude?: string[] } = {}): Promise<AxeFinding[]> {
  const loaded = await page.evaluate('typeof window.axe === "object"');
  if (!loaded) await page.evaluate(AXE_SOURCE);
  const result = (await page.evaluate(
    `window.axe.run({ exclude: ${JSON.stringify((opts.exclude ?? []).map((s) => [s]))}, include: [['html']] }, { resultTypes: ['violations'] })`,
  )) as { violations: { id: string; impact: string | null; help: string; nodes: { target: string[]; failureSummary?: string }[] }[] };
  return result.violations
    .filter((v) => v.impact === 'critical' || v.impact === 'serious')
    .map((v) => ({
      rule: v.id,
      impact: v.impact ?? '',
      help: v.help,
      targets: v.nodes.slice(0, 6).map((n) => n.target.join(' ')),
      summary: (v.nodes[0]?.failureSummary ?? '').split('\n').slice(0, 3).join(' '),
    }));
}
