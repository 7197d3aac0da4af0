// Running VMDesk's own Node entry points (the daemon, the CLI) as processes of their own, and the build stamp.
// Where those entry points and the Node that runs them are is resources.ts's business alone.
import { buildInfoOf, nodeCommand, resources, type NodeCommand } from './resources.js';

/** The command that runs `entry` ("daemon/main", "cli/main") with the daemon's Node, without the caller's loaders. */
export function nodeEntryCommand(entry: 'daemon/main' | 'cli/main', extraEnv: NodeJS.ProcessEnv = {}): NodeCommand {
  return nodeCommand(resources(), entry, extraEnv);
}

/**
 * Which code this process runs: the build stamp written by `npm run build:main` (dist/main/build-info.json),
 * or "source" when running the TypeScript sources. A daemon of another build is not the code the client has.
 */
export function buildInfo(): { version: string; build: string } {
  return buildInfoOf(resources());
}
