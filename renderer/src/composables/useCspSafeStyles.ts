// Lets xterm.js style itself under `style-src 'self'`: its runtime <style> elements are blocked, so mirror them into constructed stylesheets.
//
// xterm's DOM renderer writes per-terminal rules (cell size, colours) into <style> elements it creates. The CSP
// refuses to apply those (no 'unsafe-inline') and logs a violation each time (Chrome checks the CSP even for
// <style type="text/x-whatever">). So a script asking for a <style> element at run time gets an inert
// <vmdesk-style> element instead (xterm only sets its textContent), and the mirror copies that text into a
// stylesheet built with `new CSSStyleSheet()` by our own bundled script. Only 'self' scripts run at all, so this
// grants nothing a script could not already do.

const INERT_TAG = 'vmdesk-style';
let createElementPatched = false;

/** Makes run-time <style> elements inert (the page's own CSS comes from a file and is unaffected). */
// A plain function keeps `this` the document when callers invoke it as a method.
export function makeRuntimeStylesInert(doc: Document = document): void {
  if (createElementPatched) return;
  createElementPatched = true;
  const original = doc.createElement;
  doc.createElement = function (this: Document, tag: string, options?: ElementCreationOptions) {
    return original.call(this, tag.toLowerCase() === 'style' ? INERT_TAG : tag, options);
  } as Document['createElement'];
  // xterm also styles some cells with setAttribute('style', …) (search highlights, true colours): the CSP blocks
  // style *attributes* but not the CSSOM, so route that one attribute through element.style.cssText.
  const view = doc.defaultView;
  if (view) {
    const setAttribute = view.Element.prototype.setAttribute;
    view.Element.prototype.setAttribute = function (this: Element, name: string, value: string) {
      if (name.toLowerCase() === 'style' && 'style' in this) {
        (this as HTMLElement).style.cssText = String(value);
        return;
      }
      setAttribute.call(this, name, value);
    };
  }
}
export function mirrorInlineStyles(root: HTMLElement): () => void {
  const sheets = new Map<Element, CSSStyleSheet>();
  makeRuntimeStylesInert(root.ownerDocument);
  const supported = typeof CSSStyleSheet !== 'undefined' && 'replaceSync' in CSSStyleSheet.prototype && 'adoptedStyleSheets' in document;
  if (!supported) return () => {};

  const sync = (el: Element) => {
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
    root.querySelectorAll(`style, ${INERT_TAG}`).forEach((el) => sync(el));
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
