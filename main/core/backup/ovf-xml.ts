// The XML reader for OVF descriptors: saxes (a strict, streaming, linear-time parser) builds a small element
// tree. The hand-written regex reader this replaces was quadratic (100 KB of '<' took 53 s). Descriptors come
// from downloaded appliances, so DTDs (and with them entity definitions, the root of billion-laughs and XXE)
// are refused, and size, element count, nesting depth and attributes per element are bounded.
import { SaxesParser } from 'saxes';
import { VmdeskError, ErrorCode } from '../../api/errors.js';

export interface XmlNode {
  /** Local name without namespace prefix (rasd:ResourceType -> ResourceType). */
  name: string;
  /** By local name; a null-prototype object, so "__proto__" is just a name. */
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string;
}

export const XML_LIMITS = {
  /** Characters of the descriptor: VirtualBox and VMware write a few KB; 16 Mi is far past any real one. */
  chars: 16 * 1024 * 1024,
  elements: 200_000,
  depth: 64,
  attributes: 64,
} as const;

function local(n: string): string {
  const i = n.indexOf(':');
  return i < 0 ? n : n.slice(i + 1);
}

function refuse(message: string): VmdeskError {
  return new VmdeskError(ErrorCode.invalid, message);
}

/**
 * Parses a complete XML document into a tree under a '#root' node. Throws EINVAL for malformed XML, a
 * DOCTYPE, undefined entities or anything past XML_LIMITS; nothing else escapes.
 */
export function parseXml(text: string, limits: { chars: number; elements: number; depth: number; attributes: number } = XML_LIMITS): XmlNode {
  if (text.length > limits.chars) throw refuse(`the OVF descriptor is too large (${text.length} characters; at most ${limits.chars})`);
  const root: XmlNode = { name: '#root', attrs: Object.create(null) as Record<string, string>, children: [], text: '' };
  const stack: XmlNode[] = [root];
  let elements = 0;
  const parser = new SaxesParser({ xmlns: false, position: true });
  parser.on('doctype', () => {
    throw refuse('the OVF descriptor has a DOCTYPE; DTDs and entity definitions are not accepted');
  });
  parser.on('opentag', (tag) => {
    if (++elements > limits.elements) throw refuse(`the OVF descriptor has more than ${limits.elements} elements`);
    if (stack.length > limits.depth) throw refuse(`the OVF descriptor nests elements more than ${limits.depth} deep`);
    const attrs = Object.create(null) as Record<string, string>;
    let count = 0;
    for (const [k, v] of Object.entries(tag.attributes)) {
      if (++count > limits.attributes) throw refuse(`an element of the OVF descriptor has more than ${limits.attributes} attributes`);
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
    throw refuse(`the OVF descriptor is not well-formed XML: ${msg.length > 200 ? `${msg.slice(0, 197)}...` : msg}`);
  }
  return root;
}

/** First descendant (depth-first, document order) with this local name. */
export function find(n: XmlNode, name: string): XmlNode | undefined {
  for (const c of n.children) {
    if (c.name === name) return c;
    const d = find(c, name);
    if (d) return d;
  }
  return undefined;
}

/** Every descendant with this local name, in document order. */
export function findAll(n: XmlNode, name: string, out: XmlNode[] = []): XmlNode[] {
  for (const c of n.children) {
    if (c.name === name) out.push(c);
    findAll(c, name, out);
  }
  return out;
}

/** The trimmed text of the first direct child with this local name. */
export function childText(n: XmlNode, name: string): string | undefined {
  return n.children.find((c) => c.name === name)?.text.trim();
}

/** Escapes text and attribute values for the OVF writer. */
export function xmlEscape(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}
