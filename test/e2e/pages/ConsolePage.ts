// Page object for a VM's console: the Serial and Terminal tabs (xterm.js) and the Display tab (noVNC canvas).
import type { Locator, Page } from 'playwright-core';

export class ConsolePage {
  constructor(readonly page: Page) {}

  async waitOpen(): Promise<void> {
    await this.page.getByTestId('console-view').waitFor();
  }

  get state(): Locator {
    return this.page.getByTestId('console-state');
  }

  async waitForState(state: string, timeout = 60_000): Promise<void> {
    await this.page.locator(`[data-testid="console-state"]`, { hasText: new RegExp(`^${state}$`) }).waitFor({ timeout });
  }

  button(name: 'start' | 'pause' | 'resume' | 'reset' | 'stop' | 'kill'): Locator {
    return this.page.getByTestId(`console-${name}`);
  }

  async serialTab(): Promise<void> {
    await this.page.getByTestId('console-tab-serial').click();
    await this.page.getByTestId('serial-terminal').locator('.xterm-screen').waitFor();
  }

  async displayTab(): Promise<void> {
    await this.page.getByTestId('console-tab-display').click();
  }

  /** All of the terminal's buffer (scrollback included), read from xterm itself. */
  async serialText(): Promise<string> {
    return this.page.evaluate(() => {
      const el = document.querySelector('[data-testid="serial-terminal"]') as (HTMLElement & { vmdeskTerminal?: { buffer: { active: { length: number; getLine(i: number): { translateToString(trim: boolean): string } | undefined } } } }) | null;
      const buf = el?.vmdeskTerminal?.buffer.active;
      if (!buf) return '';
      const lines: string[] = [];
      for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? '');
      return lines.join('\n');
    });
  }

  async waitForSerial(pattern: RegExp, timeout = 90_000): Promise<string> {
    const deadline = Date.now() + timeout;
    let text = '';
    while (Date.now() < deadline) {
      text = await this.serialText();
      if (pattern.test(text)) return text;
      await this.page.waitForTimeout(250);
    }
    throw new Error(`serial console never showed ${pattern}; last screen:\n${text.trimEnd().split('\n').slice(-25).join('\n')}`);
  }

  async typeSerial(text: string): Promise<void> {
    await this.page.getByTestId('serial-terminal').locator('.xterm-screen').click();
    await this.page.waitForFunction(() => document.activeElement?.classList.contains('xterm-helper-textarea'));
    await this.page.keyboard.type(text, { delay: 20 });
  }

  /** Waits until the guest has printed nothing new for quietMs, so typed input is not lost in boot noise. */
  async waitForQuiet(quietMs = 1500, timeout = 30_000): Promise<void> {
    const deadline = Date.now() + timeout;
    let last = await this.serialText();
    let since = Date.now();
    while (Date.now() < deadline) {
      await this.page.waitForTimeout(250);
      const now = await this.serialText();
      if (now !== last) {
        last = now;
        since = Date.now();
      } else if (Date.now() - since >= quietMs) return;
    }
  }

  get displayStatus(): Locator {
    return this.page.getByTestId('display-status');
  }

  /** How many pixels of the noVNC canvas differ from black/background: >0 means the guest screen was drawn. */
  async displayLitPixels(): Promise<number> {
    return this.page.evaluate(() => {
      const canvas = document.querySelector('[data-testid="display-screen"] canvas') as HTMLCanvasElement | null;
      if (!canvas || !canvas.width || !canvas.height) return 0;
      const ctx = canvas.getContext('2d');
      if (!ctx) return 0;
      const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
      let lit = 0;
      for (let i = 0; i < data.length; i += 4) if (data[i]! + data[i + 1]! + data[i + 2]! > 60) lit++;
      return lit;
    });
  }

  async terminalTab(): Promise<void> {
    await this.page.getByTestId('console-tab-terminal').click();
    await this.page.getByTestId('terminal-screen').locator('.xterm-screen').waitFor();
  }

  get terminalNote(): Locator {
    return this.page.getByTestId('terminal-note');
  }

  /** All of the Terminal tab's buffer, read from xterm itself. */
  async terminalText(): Promise<string> {
    return this.page.evaluate(() => {
      const el = document.querySelector('[data-testid="terminal-screen"]') as (HTMLElement & { vmdeskTerminal?: { buffer: { active: { length: number; getLine(i: number): { translateToString(trim: boolean): string } | undefined } } } }) | null;
      const buf = el?.vmdeskTerminal?.buffer.active;
      if (!buf) return '';
      const lines: string[] = [];
      for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? '');
      return lines.join('\n');
    });
  }

  async waitForTerminal(pattern: RegExp, timeout = 60_000): Promise<string> {
    const deadline = Date.now() + timeout;
    let text = '';
    while (Date.now() < deadline) {
      text = await this.terminalText();
      if (pattern.test(text)) return text;
      await this.page.waitForTimeout(250);
    }
    throw new Error(`the terminal never showed ${pattern}; last screen:\n${text.trimEnd().split('\n').slice(-25).join('\n')}`);
  }

  async typeTerminal(text: string): Promise<void> {
    await this.page.getByTestId('terminal-screen').locator('.xterm-screen').click();
    await this.page.waitForFunction(() => document.activeElement?.closest('[data-testid="terminal-screen"]') !== null && document.activeElement?.classList.contains('xterm-helper-textarea'));
    await this.page.keyboard.type(text, { delay: 20 });
  }
}
