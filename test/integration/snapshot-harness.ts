// Shared by the snapshot integration suites: a core in a temp home, the test guest as a VM, a serial console driver.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Core } from '../../main/core/core.js';
import type { SerialSession } from '../../main/core/serial.js';
import type { QemuRuntime } from '../../main/engines/qemu/runtime.js';
import type { VmInfo } from '../../main/api/schema.js';
import type { VmEvent } from '../../main/api/events.js';
import type { Rpc } from '../../main/cli/rpc.js';
import { dispatch } from '../../main/daemon/dispatch.js';
import { GUEST_READY_MARKER, guestPaths } from '../guest/guest.js';

export const MiB = 1024 * 1024;

export interface TestCore {
  core: Core;
  home: string;
  /** Kills what still runs and removes the home; uses the core `reopen` made last. */
  cleanup: () => Promise<void>;
  /** A fresh core on the same home, as after a daemon restart: the old one lets go of its guests first. */
  reopen: () => Promise<Core>;
}

export async function makeCore(prefix = 'vmdesk-snapit-'): Promise<TestCore> {
  // Short home: the runtime dir (sockets) is derived from it and must stay under ~100 bytes.
  const home = mkdtempSync(path.join(tmpdir(), prefix));
  let core = new Core({ home });
  await core.boot();
  return {
    core,
    home,
    cleanup: async () => {
      for (const vm of await core.list().catch(() => [] as VmInfo[])) {
        if (vm.state !== 'stopped' && vm.state !== 'crashed') await core.kill(vm.id).catch(() => {});
      }
      await core.shutdown();
      rmSync(home, { recursive: true, force: true });
    },
    reopen: async () => {
      await core.shutdown();
      core = new Core({ home });
      await core.boot();
      return core;
    },
  };
}

/** Raw QMP to a running guest, through its QEMU runtime (not part of the core's interface). */
export async function qmp(core: Core, ref: string, execute: string, args?: Record<string, unknown>): Promise<unknown> {
  const rt = core.runtime((await core.get(ref)).id) as QemuRuntime | undefined;
  if (!rt) throw new Error(`${ref} is not running`);
  return rt.command(execute, args);
}

/** The test guest as a VM with an empty qcow2 disk (the guest sees it as /dev/vda). */
export async function createGuestVm(core: Core, name: string, opts: { memoryMiB?: number; diskBytes?: number; firmware?: 'bios' | 'uefi' } = {}): Promise<VmInfo> {
  const { kernel, initrd } = guestPaths();
  return core.create({
    name,
    cpus: 1,
    memoryMiB: opts.memoryMiB ?? 256,
    diskBytes: opts.diskBytes ?? 64 * MiB,
    accel: 'tcg',
    firmware: opts.firmware ?? 'bios',
    directKernel: { kernel, initrd, cmdline: 'console=ttyS0 panic=-1' },
    network: [{ mode: 'none', forwards: [] }],
  });
}

/** Serial console driver: collects output, waits for patterns, runs shell commands between unique markers. */
export class GuestConsole {
  text = '';
  private constructor(readonly session: SerialSession) {
    this.text = session.history.toString('utf8');
    session.onData((d: Buffer) => (this.text += d.toString('utf8')));
  }

  static async open(core: Core, ref: string): Promise<GuestConsole> {
    return new GuestConsole(core.openSerial(ref));
  }

  async waitFor(pattern: RegExp, from = 0, timeoutMs = 90_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = pattern.exec(this.text.slice(from));
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; console tail:\n${this.text.slice(-800)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async run(command: string, timeoutMs = 30_000): Promise<string> {
    const tag = `M${Math.random().toString(36).slice(2, 8)}`;
    const from = this.text.length;
    this.session.write(Buffer.from(`echo ${tag}''BEGIN; ${command}; echo ${tag}''END\n`));
    const m = await this.waitFor(new RegExp(`${tag}BEGIN\\r?\\n([\\s\\S]*?)${tag}END`), from, timeoutMs);
    return m[1]!.replace(/\r/g, '').trim();
  }

  close(): void {
    this.session.close();
  }
}

/** Waits for the guest's ready marker in the serial log (it may have been printed before anyone attached). */
export async function waitReady(core: Core, ref: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await core.serialLog(ref)).toString('utf8').includes(GUEST_READY_MARKER)) return;
    if (Date.now() > deadline) throw new Error(`guest ${ref} did not print ${GUEST_READY_MARKER}; log tail:\n${(await core.serialLog(ref, 2000)).toString()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Boots the VM and returns a console on which the shell answers. */
export async function bootGuest(core: Core, ref: string): Promise<GuestConsole> {
  await core.start(ref);
  await waitReady(core, ref);
  return shell(core, ref);
}

/**
 * A console whose shell answers. Input typed while the guest's shell is still starting is lost, so this
 * retries with short timeouts (and a fresh connection) instead of one long wait.
 */
export async function shell(core: Core, ref: string, timeoutMs = 60_000): Promise<GuestConsole> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const con = await GuestConsole.open(core, ref);
    try {
      await con.run('true', 3000);
      // Kernel messages on the console would interleave with command output.
      await con.run('dmesg -n 1');
      return con;
    } catch (e) {
      con.close();
      if (Date.now() > deadline) throw e;
    }
  }
}

/** A marker in guest RAM (/tmp is RAM in the test guest). */
export async function writeRamMarker(con: GuestConsole, value: string): Promise<void> {
  await con.run(`echo ${value} > /tmp/marker`);
}
export async function readRamMarker(con: GuestConsole): Promise<string> {
  return con.run('cat /tmp/marker 2>/dev/null || echo none');
}

/** A marker in the first sector of /dev/vda, written through to the disk (sync) and read back bypassing the cache. */
export async function writeDiskMarker(con: GuestConsole, value: string): Promise<void> {
  await con.run(`printf '%-32s' ${value} | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null; sync`);
}
export async function readDiskMarker(con: GuestConsole): Promise<string> {
  return con.run(`dd if=/dev/vda bs=32 count=1 iflag=direct 2>/dev/null | tr -d ' \\000'; echo`);
}

/** Forced power-off; tolerates the guest going away on its own while the kill is in flight. */
export async function killVm(core: Core, ref: string): Promise<void> {
  await core.kill(ref).catch(() => {});
  const deadline = Date.now() + 10_000;
  while ((await core.get(ref)).state !== 'stopped' && (await core.get(ref)).state !== 'crashed') {
    if (Date.now() > deadline) throw new Error(`${ref} did not stop`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The CLI's connection to a daemon, answered in this process by the daemon's own dispatch on `core`: params
 * checked against the contract, results through JSON as on the wire, progress from the call's events.
 */
export function inProcessRpc(core: Core): Rpc {
  const run = async (method: string, params: unknown, progress?: (phase: string, fraction?: number) => void): Promise<unknown> => {
    const opId = randomUUID();
    const emit = (ev: VmEvent) => {
      if (ev.type === 'progress' && ev.opId === opId && !ev.done) progress?.(ev.phase, ev.fraction);
    };
    const result = await dispatch(core, method, params, { opId, emit });
    return result === undefined ? undefined : JSON.parse(JSON.stringify(result));
  };
  return { call: (m: string, p: unknown) => run(m, p), long: (m: string, p: unknown, progress: (phase: string, fraction?: number) => void) => run(m, p, progress) } as unknown as Rpc;
}
