// Lets xterm.js style itself under `style-src 'self'`: its runtime <style> elements are blocked, so mirror them into constructed stylesheets.
//
// xterm's DOM renderer writes per-terminal rules (cell size, colours) into <style> elements it creates. The CSP
// refuses to apply those (no 'unsafe-inline'), but stylesheets built with `new CSSStyleSheet()` from our own
// bundled script are not inline content, so copying each blocked element's text into one keeps the policy strict.
export function mirrorInlineStyles(root: HTMLElement): () => void {
  const sheets = new Map<HTMLStyleElement, CSSStyleSheet>();
  const supported = typeof CSSStyleSheet !== 'undefined' && 'replaceSync' in CSSStyleSheet.prototype && 'adoptedStyleSheets' in document;
  if (!supported) return () => {};

  const sync = (el: HTMLStyleElement) => {
    let sheet = sheets.get(el);
    if (!sheet) {
      sheet = new CSSStyleSheet();
      sheets.set(el, sheet);
      document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    }
    try {
      sheet.replaceSync(el.textContent ?? '');
    } catch {
      /* a rule the browser rejects: keep the previous text */
    }
  };
  const scan = () => {
    root.querySelectorAll('style').forEach((el) => sync(el));
    // Drop sheets whose element left the DOM (terminal disposed or re-rendered).
    for (const [el, sheet] of sheets) {
      if (!root.contains(el)) {
        sheets.delete(el);
        document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
      }
    }
  };
  const observer = new MutationObserver(scan);
  observer.observe(root, { subtree: true, childList: true, characterData: true });
  scan();
  return () => {
    observer.disconnect();
    const gone = new Set(sheets.values());
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => !gone.has(s));
    sheets.clear();
  };
}
