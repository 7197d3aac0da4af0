// Page object for a VM's Snapshots tab (SnapshotView.vue): take, tree/timeline modes, thumbnails, the restore and
// delete dialogs, keyboard focus in the tree and the timeline.
import type { Locator, Page } from 'playwright-core';

export class SnapshotsPage {
  constructor(readonly page: Page) {}

  /** Opens the Snapshots tab of the VM shown in the details pane and waits for its listing. */
  async open(): Promise<void> {
    await this.page.getByTestId('tab-snapshots').click();
    await this.root.waitFor();
    // The listing has arrived once either the empty note or the tree/timeline is shown.
    await this.page.locator('[data-testid="snap-empty"], [data-testid="snap-tree"], [data-testid="snap-timeline"]').first().waitFor({ timeout: 30_000 });
  }

  get root(): Locator {
    return this.page.getByTestId('snapshot-view');
  }

  get empty(): Locator {
    return this.page.getByTestId('snap-empty');
  }

  get progress(): Locator {
    return this.page.getByTestId('snap-progress');
  }

  get error(): Locator {
    return this.page.getByTestId('snap-error');
  }

  get details(): Locator {
    return this.page.getByTestId('snap-details');
  }

  /** The thumbnail <img> in the details side panel of the selected snapshot. */
  get thumb(): Locator {
    return this.page.getByTestId('snap-thumb');
  }

  treeNode(name: string): Locator {
    return this.page.getByTestId(`snap-node-${name}`);
  }

  get currentNode(): Locator {
    return this.page.getByTestId('snap-node-current');
  }

  timelineNode(name: string): Locator {
    return this.page.getByTestId(`snap-tl-${name}`);
  }

  async treeMode(): Promise<void> {
    await this.page.getByTestId('snap-mode-tree').click();
    await this.page.getByTestId('snap-tree').waitFor();
  }

  async timelineMode(): Promise<void> {
    await this.page.getByTestId('snap-mode-timeline').click();
    await this.page.getByTestId('snap-timeline').waitFor();
  }

  /** Waits for a long operation (take/restore) to finish: the progress panel goes away. */
  async waitIdle(timeout = 180_000): Promise<void> {
    await this.progress.waitFor({ state: 'detached', timeout });
  }

  async take(name: string, description?: string, timeout = 180_000): Promise<void> {
    await this.page.getByTestId('snap-take-open').click();
    await this.page.getByTestId('snap-take-form').waitFor();
    await this.page.getByTestId('snap-take-name').fill(name);
    if (description !== undefined) await this.page.getByTestId('snap-take-description').fill(description);
    await this.page.getByTestId('snap-take-submit').click();
    // The form closes only when the snapshot was taken; an error keeps it open and shows snap-error.
    await this.page.waitForFunction(
      () => !document.querySelector('[data-testid="snap-take-form"]') || !!document.querySelector('[data-testid="snap-error"]'),
      undefined,
      { timeout, polling: 250 },
    );
  }

  /** Restore… on the selected snapshot: the dialog states the consequences; confirms unless told not to. */
  async restore(opts: { saveCurrent?: boolean; confirm?: boolean } = {}): Promise<void> {
    await this.page.getByTestId('snap-restore').click();
    await this.restoreDialog.waitFor();
    if (opts.saveCurrent !== undefined) await this.page.getByTestId('snap-save-current').setChecked(opts.saveCurrent);
    // The plan is asked again when the checkbox changes: wait for the steps of the answer.
    await this.restoreDialog.getByTestId('snap-restore-steps').waitFor();
    if (opts.confirm === false) return;
    await this.page.locator('[data-testid="snap-restore-confirm"]:not([disabled])').click();
  }

  get restoreDialog(): Locator {
    return this.page.getByTestId('snap-restore-dialog');
  }

  get deleteDialog(): Locator {
    return this.page.getByTestId('snap-delete-dialog');
  }

  /** The element holding the keyboard focus in the tree or timeline (aria-activedescendant's target). */
  async activeDescendant(container: 'snap-tree' | 'snap-timeline'): Promise<string | null> {
    return this.page.getByTestId(container).evaluate((el) => {
      const id = el.getAttribute('aria-activedescendant');
      const t = id ? document.getElementById(id) : null;
      return t ? t.getAttribute('aria-label') : null;
    });
  }

  /** The test id of the element that has the focus. */
  async focused(): Promise<string | null> {
    return this.page.evaluate(() => document.activeElement?.getAttribute('data-testid') ?? null);
  }

  get summary(): Locator {
    return this.page.getByTestId('snap-summary');
  }

  /** naturalWidth of an <img>, 0 until it has loaded and decoded. */
  async imgNaturalWidth(img: Locator): Promise<number> {
    return img.evaluate((el) => {
      const i = el as HTMLImageElement;
      return i.complete ? i.naturalWidth : 0;
    });
  }

  /** The SVG <image> of a timeline node: loads its href in an <img> and returns its naturalWidth (0 if absent or broken). */
  async timelineThumbNaturalWidth(name: string): Promise<number> {
    const image = this.timelineNode(name).locator('[data-testid="snap-tl-thumb"]');
    if (!(await image.count())) return 0;
    return image.evaluate(async (el) => {
      const href = el.getAttribute('href') ?? el.getAttributeNS('http://www.w3.org/1999/xlink', 'href');
      if (!href) return 0;
      const img = new Image();
      img.src = href;
      try {
        await img.decode();
      } catch {
        return 0;
      }
      return img.naturalWidth;
    });
  }
}
