// Bringing a VM back to a snapshot. Disk-only: the VM ends stopped with its disks reverted. Live ('full' or
// 'memory'): the VM ends running where it was when the snapshot was taken. Settings return to the
// snapshot's. Unless told not to, the current state is saved first ("Before restoring X").
import { existsSync } from 'node:fs';
import type { VmConfig, VmInfo } from '../../api/schema.js';
import { VmdeskError, ErrorCode } from '../../api/errors.js';
import type { EngineModule } from '../../engines/engine.js';
import { readSnapshotPrefs } from './prefs.js';
import { pruneAutomatic, pruneCandidates } from './retention.js';
import { readTree, stateFilePath, writeTree } from './store.js';
import { takeSnapshot } from './take.js';
import { addNode, diffConfigs, findNode, isStateFileNode, SAFETY_DESCRIPTION_PREFIX, type SnapshotNode, type SnapshotTree } from './tree.js';
import { diskFile, isRunning, livePhase, loadVm, powerOff, refOf, requireSettled, runtimeOf, uniqueSnapshotName, unsupportedError, type ProgressFn, type SnapVm, type UsableEntry } from './vm.js';
import { configChanges, type WordChange } from './words.js';

export interface RestoreOptions {
  /** Take a snapshot of the current state first (default true), so nothing is lost by restoring. */
  snapshotCurrent?: boolean;
  /** Name for that safety snapshot. */
  currentName?: string;
  onProgress?: ProgressFn;
}

export interface RestoreResult {
  restored: SnapshotNode;
  safety?: SnapshotNode;
  info: VmInfo;
  warnings: string[];
  /** Names of older safety snapshots that retention deleted afterwards. */
  pruned: string[];
}

/** What a snapshot needs of the engine that will run it: 'full' or 'memory' live snapshots, or disk snapshots. */
type Need = 'full' | 'memory' | 'offline';

function needOf(node: SnapshotNode): Need {
  return isStateFileNode(node) ? 'memory' : node.kind === 'live' ? 'full' : 'offline';
}

function offers(eng: EngineModule, need: Need): boolean {
  return need === 'offline' ? eng.capabilities.offlineSnapshots : eng.capabilities.liveSnapshots === need;
}

/** The snapshot's settings, keeping the VM's identity (id, name) and reporting disks added since. */
function configForRestore(entry: UsableEntry, snap: VmConfig, warnings: string[]): VmConfig {
  for (const d of entry.config.disks) {
    if (!snap.disks.some((x) => x.id === d.id)) warnings.push(`disk ${d.id} was added after the snapshot and is now detached; its file is kept at ${diskFile(entry.dir, d)}`);
  }
  // The schedule is not part of the snapshot's moment: the VM keeps the one it has now.
  const { snapshotSchedule: _old, ...rest } = snap;
  void _old;
  return { ...rest, id: entry.config.id, name: entry.config.name, createdAt: entry.config.createdAt, ...(entry.config.snapshotSchedule ? { snapshotSchedule: entry.config.snapshotSchedule } : {}) };
}

/** Refuses what cannot be restored before anything changes: a lost state file, a target lacking the tag. */
async function checkRestorable(vm: SnapVm, node: SnapshotNode, need: Need): Promise<void> {
  const { entry, eng, ctx } = vm;
  if (need === 'memory') {
    const file = stateFilePath(entry.dir, node.id);
    if (!existsSync(file)) throw new VmdeskError(ErrorCode.broken, `the state file of snapshot "${node.name}" (${file}) is missing; it cannot be restored`);
    return;
  }
  const { targets, unsupported } = eng.snapshots.targets(ctx);
  if (unsupported[0]) throw unsupportedError(entry.config.name, unsupported[0]);
  // Every target must hold the snapshot, or the guest would come back with a mix of old and new disks.
  const stored = (await eng.snapshots.stored(ctx, isRunning(vm.info.state))).get(node.tag);
  for (const t of targets) {
    if (stored?.has(t.id)) continue;
    if (node.disks.length ? node.disks.includes(t.id) : true) throw new VmdeskError(ErrorCode.broken, `snapshot "${node.name}" is missing from disk ${t.id}; it cannot be restored`);
    throw new VmdeskError(ErrorCode.invalid, `disk ${t.id} was added after snapshot "${node.name}"; detach it before restoring`);
  }
}

/** The provider leaves a loaded guest paused; it runs on from the snapshot's moment (a paused one too, as before). */
async function resumeLoaded(vm: SnapVm): Promise<void> {
  if ((await vm.core.get(vm.entry.id)).state === 'paused') await vm.core.resume(vm.entry.id);
}

/** Whether the current state can be saved at all (a stopped VM of an engine without disk snapshots cannot). */
function canSaveCurrent(vm: SnapVm): boolean {
  const caps = vm.eng.capabilities;
  return isRunning(vm.info.state) ? caps.liveSnapshots !== false : caps.offlineSnapshots;
}

/** Restores; the caller holds the VM's snapshot gate. */
export async function restoreSnapshot(vm: SnapVm, snapRef: string, opts: RestoreOptions): Promise<RestoreResult> {
  const progress = opts.onProgress ?? (() => {});
  const { core, entry } = vm;
  const tree0 = await readTree(entry.dir);
  const node = findNode(tree0, snapRef);
  const need = needOf(node);
  requireSettled(vm);
  // The settings restore writes back name the engine that will run the snapshot.
  const target = await core.engineOf(node.config ?? entry.config);
  if (!offers(target, need)) {
    const what = need === 'offline' ? 'disk snapshots' : need === 'memory' ? 'memory snapshots' : 'live snapshots of memory and disks';
    throw new VmdeskError(ErrorCode.invalid, `snapshot "${node.name}" needs an engine with ${what}, which the ${target.kind} engine does not offer; it cannot be restored`);
  }
  await checkRestorable(vm, node, need);

  const warnings: string[] = [];
  const safety = opts.snapshotCurrent !== false && canSaveCurrent(vm) ? await takeSafety(vm, tree0, node, opts, progress) : undefined;
  // Taking the safety snapshot does not change the run state, but the guest may have gone meanwhile.
  const now = safety ? await loadVm(core, entry.id) : vm;
  const running = isRunning(now.info.state);
  const sameConfig = node.config === null || diffConfigs(node.config, entry.config).length === 0;

  if (need !== 'offline' && running && sameConfig) {
    // Fast path: the running guest is replaced by the snapshot's in place.
    progress(livePhase('loading', need), 0);
    await now.eng.snapshots.loadLive(runtimeOf(now), now.ctx, refOf(entry.dir, node), progress);
    await resumeLoaded(vm);
  } else {
    if (running) {
      // The guest's current state is being replaced (and was saved above unless the caller declined).
      progress('powering off', 0);
      await powerOff(core, entry.id);
    }
    const state = (await core.get(entry.id)).state;
    if (state !== 'stopped' && state !== 'crashed') throw new VmdeskError(ErrorCode.state, `"${entry.config.name}" started meanwhile; try again`);
    if (need === 'offline') {
      // Reverted through the engine that holds the disks' snapshots now, before its settings change.
      await now.eng.snapshots.applyOffline(now.ctx, refOf(entry.dir, node), progress);
    }
    if (node.config) {
      const config = configForRestore(entry, node.config, warnings);
      if (diffConfigs(config, entry.config).length) await core.saveConfig(entry.id, config);
    }
    if (need !== 'offline') {
      progress('starting paused', 0.2);
      await core.start(entry.id, { paused: true });
      const started = await loadVm(core, entry.id);
      progress(livePhase('loading', need), 0.4);
      try {
        await started.eng.snapshots.loadLive(runtimeOf(started), started.ctx, refOf(entry.dir, node), (p, f) => progress(p, f === undefined ? undefined : 0.4 + f * 0.5));
      } catch (e) {
        // A half-loaded guest (or a freshly booted one that is not the state asked for) must not run.
        await powerOff(core, entry.id).catch(() => {});
        throw e;
      }
      await resumeLoaded(vm);
    }
  }
  if (need === 'memory' && (node.config ?? entry.config).disks.some((d) => !d.readOnly)) {
    warnings.push('the disks were not reverted: memory snapshots do not capture disk contents');
  }
  // "You are here" moves to the restored snapshot.
  const tree = await readTree(entry.dir);
  await writeTree(entry.dir, { ...tree, current: node.id });
  // Retention: only the newest safety snapshots stay (the one just taken among them).
  const { safetyKeep } = await readSnapshotPrefs(core.library.home);
  const pruned = (await pruneAutomatic(core, entry.id, 'safety', safetyKeep, progress).catch(() => [])).map((n) => n.name);
  progress('done', 1);
  const info = await core.get(entry.id);
  core.emit('event', { type: 'vm-updated', id: info.id, info });
  return { restored: node, safety, info, warnings, pruned };
}

/** The automatic "Before restoring X" snapshot, named so it never clashes with an existing one. */
function takeSafety(vm: SnapVm, tree0: SnapshotTree, node: SnapshotNode, opts: RestoreOptions, progress: ProgressFn): Promise<SnapshotNode> {
  progress('saving the current state', 0);
  const name = uniqueSnapshotName(tree0, opts.currentName ?? `Before restoring ${node.name}`);
  return takeSnapshot(vm, { name, description: `${SAFETY_DESCRIPTION_PREFIX} "${node.name}".`, auto: 'safety', onProgress: (p, f) => progress(`saving the current state: ${p}`, f) });
}

// ---- what a restore would do, before it runs -------------------------------------------------------------

export interface RestorePlan {
  snapshot: { id: string; name: string; kind: SnapshotNode['kind']; time: string; memoryOnly: boolean };
  /** The VM's state now and once the restore has run. */
  stateNow: VmInfo['state'];
  stateAfter: 'running' | 'stopped';
  /** The running guest is replaced in place (same process, same settings). */
  inPlace: boolean;
  /** The VM is stopped now and will be started (a live snapshot brings back a running guest). */
  starts: boolean;
  /** The guest running now is powered off (its state is saved first when `safety` says so). */
  powersOff: boolean;
  /** Settings that go back to the snapshot's, from now → after the restore. */
  settings: WordChange[];
  /** Disks added after the snapshot: detached by the restore (their files are kept). */
  detaches: string[];
  /** Whether the disks go back to the snapshot (memory-only snapshots leave them as they are). */
  disksRevert: boolean;
  /** The safety snapshot of the current state, or why there is none. */
  safety: { taken: true; name: string; kind: 'live' | 'disk-only'; memoryMiB: number } | { taken: false; reason: string };
  /** Safety snapshots retention deletes once this one has been added (oldest first). */
  prunes: { id: string; name: string; vmStateBytes: number }[];
  safetyKeep: number | null;
  /** Why the restore would be refused; empty when it can run. */
  blockers: string[];
  /** Everything above in sentences, in the order it happens. */
  steps: string[];
}

/**
 * What restoring `snapRef` would do to the VM as it is now, in the order it would happen. Reads only (the
 * engine's storage included, to find what would refuse it); the restore itself checks everything again.
 */
export async function restorePlan(core: SnapVm['core'], ref: string, snapRef: string, opts: { snapshotCurrent?: boolean } = {}): Promise<RestorePlan> {
  const vm = await loadVm(core, ref);
  const { entry } = vm;
  const tree = await readTree(entry.dir);
  const node = findNode(tree, snapRef);
  const need = needOf(node);
  const blockers: string[] = [];
  const target = await core.engineOf(node.config ?? entry.config);
  if (!offers(target, need)) blockers.push(`it needs an engine with ${need === 'offline' ? 'disk snapshots' : need === 'memory' ? 'memory snapshots' : 'live snapshots of memory and disks'}, which the ${target.kind} engine does not offer`);
  else await checkRestorable(vm, node, need).catch((e: Error) => blockers.push(e.message));
  if (vm.info.state === 'starting' || vm.info.state === 'stopping') blockers.push(`"${entry.config.name}" is ${vm.info.state}; wait until it has finished`);

  const running = isRunning(vm.info.state);
  const detachWarnings: string[] = [];
  const after = node.config ? configForRestore(entry, node.config, detachWarnings) : entry.config;
  const settings = configChanges(entry.config, after);
  const sameConfig = node.config === null || diffConfigs(node.config, entry.config).length === 0;
  const inPlace = need !== 'offline' && running && sameConfig;
  const stateAfter = need === 'offline' ? 'stopped' : 'running';
  const starts = need !== 'offline' && !running;
  const powersOff = running && !inPlace;
  const detaches = entry.config.disks.filter((d) => !(node.config?.disks ?? entry.config.disks).some((x) => x.id === d.id)).map((d) => d.id);

  const wantSafety = opts.snapshotCurrent !== false;
  let safety: RestorePlan['safety'];
  let prunes: RestorePlan['prunes'] = [];
  const { safetyKeep } = await readSnapshotPrefs(core.library.home);
  if (!wantSafety) safety = { taken: false, reason: 'you chose not to save the current state' };
  else if (!canSaveCurrent(vm)) safety = { taken: false, reason: running ? `the ${entry.config.engine} engine cannot snapshot a running VM` : `the ${entry.config.engine} engine cannot snapshot a stopped VM` };
  else {
    const name = uniqueSnapshotName(tree, `Before restoring ${node.name}`);
    safety = { taken: true, name, kind: running ? 'live' : 'disk-only', memoryMiB: running ? entry.config.memoryMiB : 0 };
    // As retention will see the tree: the new safety snapshot is the newest, "current" the restored one.
    const future: SnapshotNode = { ...node, id: '~new', tag: '~new', name, time: '9999-12-31T23:59:59.999Z', parent: tree.current, auto: 'safety', linkedClones: [], description: '' };
    const afterTree = { ...addNode(tree, future, false), current: node.id };
    prunes = pruneCandidates(afterTree, 'safety', safetyKeep).map((n) => ({ id: n.id, name: n.name, vmStateBytes: n.vmStateBytes }));
  }

  const steps: string[] = [];
  const name = `"${entry.config.name}"`;
  if (safety.taken) steps.push(`The current state is saved first as "${safety.name}" (${safety.kind === 'live' ? `memory and disks: up to ${entry.config.memoryMiB} MiB of memory is written` : 'disks only'}).`);
  else if (running || need !== 'memory') steps.push(`The current state is not saved (${safety.reason}): whatever changed since "${node.name}" is lost.`);
  if (inPlace) steps.push(`The running guest is replaced by the one saved in "${node.name}" and runs on from that moment.`);
  else {
    if (powersOff) steps.push(`${name} is powered off.`);
    if (need === 'offline') steps.push(`The disks go back to "${node.name}"; ${name} stays stopped.`);
    else if (starts) steps.push(`${name} is stopped now and will be running afterwards: it is started and continues from the moment of "${node.name}".`);
    else steps.push(`${name} is started again from the moment of "${node.name}" and will be running.`);
  }
  if (settings.length) steps.push(`These settings go back to the snapshot's: ${settings.map((c) => `${c.label} ${c.from} → ${c.to}`).join('; ')}.`);
  for (const d of detaches) steps.push(`Disk ${d} was added after the snapshot and is detached (its file is kept).`);
  if (need === 'memory') steps.push('The disks are not reverted: memory snapshots do not capture disk contents.');
  if (prunes.length) steps.push(`Retention keeps the newest ${safetyKeep} automatic "Before restoring" snapshots: ${prunes.map((p) => `"${p.name}"`).join(', ')} ${prunes.length === 1 ? 'is' : 'are'} deleted.`);
  return {
    snapshot: { id: node.id, name: node.name, kind: node.kind, time: node.time, memoryOnly: need === 'memory' },
    stateNow: vm.info.state,
    stateAfter,
    inPlace,
    starts,
    powersOff,
    settings,
    detaches,
    disksRevert: need !== 'memory',
    safety,
    prunes,
    safetyKeep,
    blockers,
    steps,
  };
}
