// The XML reader for OVF descriptors: the bounded tree reader of platform/xml-tree.ts (it replaced a regex
// reader that was quadratic: 100 KB of '<' took 53 s), with limits for descriptors, plus the lookups and the
// escaping the OVF reader and writer use.
import { ErrorCode } from '../../api/errors.js';
import { parseXmlTree, type XmlLimits, type XmlNode } from '../../platform/xml-tree.js';

export type { XmlNode };
export const XML_LIMITS = {
  /** Characters of the descriptor: VirtualBox and VMware write a few KB; 16 Mi is far past any real one. */
  chars: 16 * 1024 * 1024,
  elements: 200_000,
  depth: 64,
  attributes: 64,
} as const;

/** Parses a complete descriptor (platform/xml-tree.ts); EINVAL for anything malformed or past the limits. */
export function parseXml(text: string, limits: XmlLimits = XML_LIMITS): XmlNode {
  return parseXmlTree(text, { what: 'the OVF descriptor', code: ErrorCode.invalid, limits });
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
