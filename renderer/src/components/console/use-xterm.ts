// One xterm.js set-up for the console's text tabs (serial console, guest terminal): the look, 10,000 lines of
// scrollback, fit to the tab, desktop-terminal copy/paste keys, and only the tab on screen answering the
// guest's terminal queries. Each tab brings its own stream.
import { onMounted, onUnmounted, shallowRef, type Ref } from 'vue';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { SearchAddon } from '@xterm/addon-search';
import '@xterm/xterm/css/xterm.css';
import { mirrorInlineStyles } from '../../composables/useCspSafeStyles';
import { isTerminalReport } from './terminal-words';

export interface XtermOptions {
  host: Ref<HTMLElement | null>;
  /** Whether the tab is on screen (a hidden tab cannot be measured, and does not answer terminal queries). */
  active: () => boolean;
  /** Typed input and the terminal's answers, for the stream. */
  onInput: (data: string) => void;
  onResize?: (cols: number, rows: number) => void;
  /** Ctrl+Shift+F: a search box of the tab's own (with a search add-on loaded). */
  onSearchKey?: () => void;
  /** After the terminal is open in the page. */
  onReady?: (t: Terminal) => void;
}

export function useXterm(opts: XtermOptions) {
  const term = shallowRef<Terminal | null>(null);
  let fit: FitAddon | undefined;
  let search: SearchAddon | undefined;
  let stopMirror: (() => void) | undefined;
  let resizeObserver: ResizeObserver | undefined;

  function refit(): void {
    if (!opts.active() || !opts.host.value?.offsetWidth) return;
    try {
      fit?.fit();
    } catch {
      /* not laid out yet */
    }
  }

  async function copy(): Promise<void> {
    const text = term.value?.getSelection();
    if (text) await navigator.clipboard.writeText(text).catch(() => {});
    // Back to the guest: the next Enter goes to it, not to the button.
    term.value?.focus();
  }

  async function paste(): Promise<void> {
    const text = await navigator.clipboard.readText().catch(() => '');
    if (text) term.value?.paste(text);
    term.value?.focus();
  }

  onMounted(() => {
    const el = opts.host.value!;
    stopMirror = mirrorInlineStyles(el);
    const t = new Terminal({
      scrollback: 10_000,
      cursorBlink: true,
      fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, monospace",
      fontSize: 14,
      theme: { background: '#0f172a', foreground: '#e2e8f0' },
    });
    fit = new FitAddon();
    t.loadAddon(fit);
    if (opts.onSearchKey) {
      search = new SearchAddon();
      t.loadAddon(search);
    }
    t.open(el);
    const keys = opts.onSearchKey ? ['KeyC', 'KeyV', 'KeyF'] : ['KeyC', 'KeyV'];
    // Ctrl+Shift+C / Ctrl+Shift+V as in desktop terminals; plain Ctrl+C goes to the guest. The browser's own
    // default is stopped too: Ctrl+Shift+V is also Chromium's "paste as plain text", whose paste event xterm
    // would handle as well (the text arrived twice).
    t.attachCustomKeyEventHandler((e) => {
      if (!e.ctrlKey || !e.shiftKey || !keys.includes(e.code)) return true;
      e.preventDefault();
      if (e.type !== 'keydown') return false;
      if (e.code === 'KeyC') void copy();
      else if (e.code === 'KeyV') void paste();
      else opts.onSearchKey?.();
      return false;
    });
    // Only the view on screen answers the guest's terminal queries (see isTerminalReport).
    t.onData((data) => {
      if (!opts.active() && isTerminalReport(data)) return;
      opts.onInput(data);
    });
    if (opts.onResize) t.onResize(({ cols, rows }) => opts.onResize!(cols, rows));
    term.value = t;
    // Lets e2e tests read the whole scrollback, not only the rows on screen.
    (el as HTMLElement & { vmdeskTerminal?: Terminal }).vmdeskTerminal = t;
    resizeObserver = new ResizeObserver(() => refit());
    resizeObserver.observe(el);
    opts.onReady?.(t);
  });

  onUnmounted(() => {
    resizeObserver?.disconnect();
    term.value?.dispose();
    stopMirror?.();
  });

  return {
    term,
    refit,
    copy,
    paste,
    findNext: (q: string) => void (q && search?.findNext(q)),
    findPrevious: (q: string) => void (q && search?.findPrevious(q)),
  };
}
