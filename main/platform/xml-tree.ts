// The one bounded XML reader (OVF descriptors from downloaded appliances, libvirt's answers from another
// host): saxes, a strict streaming parser in linear time, builds a small element tree. Input is untrusted, so
// DTDs (and with them entity definitions, the root of billion laughs and XXE) are refused, and size, element
// count, nesting depth and attributes per element are bounded.
import { SaxesParser } from 'saxes';
import { VmdeskError, type ErrorCode } from '../api/errors.js';

export interface XmlNode {
  /** Local name without namespace prefix (rasd:ResourceType -> ResourceType). */
  name: string;
  /** By local name; a null-prototype object, so "__proto__" is just a name. */
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string;
}

export interface XmlLimits {
  chars: number;
  elements: number;
  depth: number;
  attributes: number;
}

function local(n: string): string {
  const i = n.indexOf(':');
  return i < 0 ? n : n.slice(i + 1);
}

/**
 * Parses a complete document into a tree under a '#root' node. Anything malformed, a DOCTYPE, an undefined
 * entity or anything past `limits` throws a VmdeskError with `code`, worded "<what> <why>"; nothing else escapes.
 */
export function parseXmlTree(text: string, opts: { what: string; code: ErrorCode; limits: XmlLimits }): XmlNode {
  const { what, code, limits } = opts;
  const refuse = (why: string) => new VmdeskError(code, `${what} ${why}`);
  if (text.length > limits.chars) throw refuse(`is too large (${text.length} characters; at most ${limits.chars})`);
  const root: XmlNode = { name: '#root', attrs: Object.create(null) as Record<string, string>, children: [], text: '' };
  const stack: XmlNode[] = [root];
  let elements = 0;
  const parser = new SaxesParser({ xmlns: false, position: true });
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
    parser.write(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text).close();
  } catch (e) {
    if (e instanceof VmdeskError) throw e;
    const msg = (e as Error)?.message ?? String(e);
    throw refuse(`is not well-formed XML: ${msg.length > 200 ? `${msg.slice(0, 197)}...` : msg}`);
  }
  return root;
}
