// Changes to the tree alone (names, descriptions, linked-clone records): the engine's storage knows a
// snapshot only by its tag, so none of this touches disks or state files.
import { readTree, writeTree } from './store.js';
import { checkDescription, checkSnapshotName, findNode, updateNode, type SnapshotNode, type SnapshotTree } from './tree.js';

/** Applies `patch` to one node; the caller holds the VM's snapshot gate. */
export async function editSnapshot(bundleDir: string, snapRef: string, patch: (tree: SnapshotTree, node: SnapshotNode) => Partial<SnapshotNode>): Promise<SnapshotNode> {
  const tree = await readTree(bundleDir);
  const node = findNode(tree, snapRef);
  const next = updateNode(tree, node.id, patch(tree, node));
  await writeTree(bundleDir, next);
  return next.nodes.find((n) => n.id === node.id)!;
}

export const renamePatch = (newName: string) => (tree: SnapshotTree, node: SnapshotNode) => ({ name: checkSnapshotName(tree, newName, node.id) });

export const describePatch = (description: string) => () => ({ description: checkDescription(description) });

/** Records (or forgets) a linked clone built on a snapshot, so the snapshot is protected from deletion. */
export const linkedClonePatch = (cloneVmId: string, add: boolean) => (_tree: SnapshotTree, node: SnapshotNode) => {
  const set = new Set(node.linkedClones);
  if (add) set.add(cloneVmId);
  else set.delete(cloneVmId);
  return { linkedClones: [...set] };
};
