// XML in and out for libvirt: escaping for everything VMDesk writes, and a bounded reader (saxes: strict,
// linear time) for what a host sends back. A host may be someone else's machine: no DTDs or entity
// definitions, and size, element count, depth and attributes are bounded.
import { SaxesParser } from 'saxes';
import { ErrorCode, VmdeskError } from '../../api/errors.js';

export interface XmlNode {
  /** Local name (a namespace prefix dropped). */
  name: string;
  /** Null-prototype, so "__proto__" is only a name. */
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string;
}

export const XML_LIMITS = { chars: 4 * 1024 * 1024, elements: 50_000, depth: 48, attributes: 48 } as const;

/** Text or an attribute value for XML; characters XML 1.0 cannot carry are refused, not dropped. */
export function xmlEscape(s: string): string {
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/.test(s)) throw new VmdeskError(ErrorCode.invalid, `"${s.slice(0, 60)}" contains control characters, which a libvirt definition cannot carry`);
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

function local(n: string): string {
  const i = n.indexOf(':');
  return i < 0 ? n : n.slice(i + 1);
}

/** Parses a whole document under a '#root' node; EENGINE (the host sent it) for anything malformed or too big. */
export function parseXml(text: string, what = 'the XML libvirt sent', limits = XML_LIMITS): XmlNode {
  const refuse = (why: string) => new VmdeskError(ErrorCode.engine, `${what} ${why}`);
  if (text.length > limits.chars) throw refuse(`is too large (${text.length} characters; at most ${limits.chars})`);
  const root: XmlNode = { name: '#root', attrs: Object.create(null) as Record<string, string>, children: [], text: '' };
  const stack: XmlNode[] = [root];
  let elements = 0;
  const parser = new SaxesParser({ xmlns: false });
  parser.on('doctype', () => {
    throw refuse('has a DOCTYPE; DTDs and entity definitions are not accepted');
  });
  parser.on('opentag', (tag) => {
    if (++elements > limits.elements) throw refuse(`has more than ${limits.elements} elements`);
    if (stack.length > limits.depth) throw refuse(`nests elements more than ${limits.depth} deep`);
    const attrs = Object.create(null) as Record<string, string>;
    let count = 0;
    for (const [k, v] of Object.entries(tag.attributes)) {
      if (++count > limits.attributes) throw refuse(`has an element with more than ${limits.attributes} attributes`);
      attrs[local(k)] = String(v);
    }
    const node: XmlNode = { name: local(tag.name), attrs, children: [], text: '' };
    stack[stack.length - 1]!.children.push(node);
    stack.push(node);
  });
  parser.on('closetag', () => {
    if (stack.length > 1) stack.pop();
  });
  parser.on('text', (t) => {
    stack[stack.length - 1]!.text += t;
  });
  parser.on('cdata', (t) => {
    stack[stack.length - 1]!.text += t;
  });
  try {
    parser.write(text).close();
  } catch (e) {
    if (e instanceof VmdeskError) throw e;
    const msg = (e as Error)?.message ?? String(e);
    throw refuse(`is not well-formed XML: ${msg.length > 200 ? `${msg.slice(0, 197)}...` : msg}`);
  }
  return root;
}

/** Direct children with this name. */
export function kids(n: XmlNode | undefined, name: string): XmlNode[] {
  return n ? n.children.filter((c) => c.name === name) : [];
}

/** The first direct child with this name. */
export function kid(n: XmlNode | undefined, name: string): XmlNode | undefined {
  return n?.children.find((c) => c.name === name);
}

/** Follows a path of direct children: path(domain, 'os', 'kernel'). */
export function path(n: XmlNode | undefined, ...names: string[]): XmlNode | undefined {
  let cur = n;
  for (const name of names) cur = kid(cur, name);
  return cur;
}
