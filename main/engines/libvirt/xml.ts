// XML in and out for libvirt: escaping for everything VMDesk writes, and a bounded reader (saxes: strict,
// linear time) for what a host sends back. A host may be someone else's machine: no DTDs or entity
// definitions, and size, element count, depth and attributes are bounded.
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { parseXmlTree, type XmlNode } from '../../platform/xml-tree.js';

export type { XmlNode };

export const XML_LIMITS = { chars: 4 * 1024 * 1024, elements: 50_000, depth: 48, attributes: 48 } as const;

/** Text or an attribute value for XML; characters XML 1.0 cannot carry are refused, not dropped. */
export function xmlEscape(s: string): string {
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/.test(s)) throw new VmdeskError(ErrorCode.invalid, `"${s.slice(0, 60)}" contains control characters, which a libvirt definition cannot carry`);
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Parses a whole document under a '#root' node; EENGINE (the host sent it) for anything malformed or too big. */
export function parseXml(text: string, what = 'the XML libvirt sent', limits = XML_LIMITS): XmlNode {
  return parseXmlTree(text, { what, code: ErrorCode.engine, limits });
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
