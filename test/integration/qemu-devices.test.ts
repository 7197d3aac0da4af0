// Issue 12 part B with real QEMU, through dispatch as a client would, on the test guest:
// - save state: a marker written into the running guest's RAM (a shell variable and a file on its tmpfs) is
//   still there after vmdesk suspend (state 'saved', its size in vm.get) and the next start; hardware changed
//   behind a saved state is refused with what to do; discard-state boots afresh;
// - TPM 2.0: swtpm starts with the VM, QEMU's query-tpm sees the emulator, its state is in the bundle's tpm/
//   folder, goes on across a suspend and comes back with a snapshot restore;
// - Secure Boot: OVMF's secboot build runs on the VM's own copy of the Microsoft-keys variable store, which
//   enrols a platform key and enforces Secure Boot.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Core } from '../../main/core/core.js';
import { dispatch } from '../../main/daemon/dispatch.js';
import type { RpcMethod, RpcParams, RpcResult } from '../../main/api/rpc.js';
import { SerialConsole as Console, until } from '../helpers/serial-console.js';
import type { QemuRuntime } from '../../main/engines/qemu/runtime.js';
import { guestPaths, GUEST_READY_MARKER } from '../guest/guest.js';
import { swtpmPath } from '../../main/engines/qemu/tpm.js';
import { findSecureBootFirmware, readVarsStore } from '../../main/engines/qemu/firmware.js';
import { secureBootKeys } from '../../main/platform/uefi-vars.js';
import { processRunning } from '../../main/platform/process.js';
import { writeSavedState } from '../../main/engines/qemu/savestate.js';

let tmp: string;
let core: Core;

function call<M extends RpcMethod>(method: M, params: RpcParams<M>): Promise<RpcResult<M>> {
  return dispatch(core, method, params, { emit: () => {} }) as Promise<RpcResult<M>>;
}

const { kernel, initrd } = guestPaths();
const hasSwtpm = !!swtpmPath();

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'vmd-dev-'));
  core = new Core({ home: path.join(tmp, 'home') });
  await core.boot();
});

afterAll(async () => {
  for (const vm of await core.list()) if (['running', 'paused', 'starting', 'stopping'].includes(vm.state)) await core.kill(vm.id).catch(() => {});
  await core.shutdown();
  await rm(tmp, { recursive: true, force: true });
});

describe.runIf(hasSwtpm)('save state and TPM 2.0 on one guest', () => {
  it('suspends with a RAM marker, refuses changed hardware, resumes with the marker, keeps the TPM, discards', async () => {
    const name = 'saver';
    await call('vm.create', { name, memoryMiB: 256, tpm: true, diskBytes: 16 * 1024 * 1024, network: [{ mode: 'none', forwards: [] }], directKernel: { kernel, initrd, cmdline: 'console=ttyS0 quiet' } });
    const started = await call('vm.start', { id: name });
    const bundle = started.bundle;
    let con = new Console(core.openSerial(name));
    await con.waitFor(new RegExp(GUEST_READY_MARKER));

    // The TPM: swtpm up before QEMU, QEMU's emulator backend connected to it, state in the bundle.
    const rt = core.runtime(started.id) as QemuRuntime;
    const tpms = await rt.command<{ model: string; options: { type: string } }[]>('query-tpm');
    expect(tpms).toEqual([expect.objectContaining({ model: 'tpm-crb', options: expect.objectContaining({ type: 'emulator' }) })]);
    const record = JSON.parse(readFileSync(path.join(core.library.runtimeDir(started.id), 'qemu.json'), 'utf8')) as { swtpm?: { pid: number; startTime: string } };
    expect(processRunning(record.swtpm!.pid, record.swtpm!.startTime)).toBe(true);
    const permall = path.join(bundle, 'tpm', 'tpm2-00.permall');
    expect(existsSync(permall)).toBe(true);
    expect(statSync(path.join(bundle, 'tpm')).mode & 0o777).toBe(0o700);

    // The marker lives only in the guest's memory: a shell variable and a file on its RAM-backed root.
    const marker = `m${Date.now().toString(36)}`;
    await con.run(`MARK=${marker}; echo ${marker} > /tmp/ram-marker`);
    const t0 = Date.now();
    const saved = await call('vm.suspend', { id: name });
    const suspendMs = Date.now() - t0;
    con.close();
    expect(saved.state).toBe('saved');
    expect(saved.savedState!.bytes).toBeGreaterThan(1024 * 1024);
    expect(saved.lastExit?.reason).toBe('saved');
    expect(processRunning(record.swtpm!.pid, record.swtpm!.startTime)).toBe(false);
    expect(existsSync(path.join(bundle, 'saved-state', 'state.qemu'))).toBe(true);
    console.log(`suspend of a 256 MiB guest: ${suspendMs} ms, ${saved.savedState!.bytes} bytes`);

    // A saved VM's hardware stays as it was; the state table says why.
    await expect(call('vm.update', { id: name, patch: { cpus: 2 } })).rejects.toMatchObject({ code: 'ESTATE', message: expect.stringMatching(/saved state needs the hardware.*discard-state/) });
    await expect(call('vm.suspend', { id: name })).rejects.toMatchObject({ code: 'ESTATE' });
    await expect(call('disk.create', { id: name, bytes: 16 * 1024 * 1024 })).rejects.toMatchObject({ code: 'ESTATE', message: expect.stringMatching(/while it is saved: its memory is saved on disk; start it .* shut it down, or throw the saved state away \(vmdesk discard-state "saver"\)/) });
    // Changed behind VMDesk's back (vm.json edited): the start is refused before anything runs, state kept.
    const cfg = (await call('vm.get', { id: name })).config!;
    await core.saveConfig(started.id, { ...cfg, cpus: 2 });
    await expect(call('vm.start', { id: name })).rejects.toMatchObject({ code: 'ESTATE', message: expect.stringMatching(/hardware of "saver".*changed since its state was saved.*discard-state/) });
    expect((await call('vm.get', { id: name })).state).toBe('saved');
    await core.saveConfig(started.id, cfg);

    // A daemon that starts now finds it saved too.
    const again = new Core({ home: core.home });
    await again.boot();
    expect((await again.get(name)).state).toBe('saved');
    await again.shutdown();

    const t1 = Date.now();
    const resumed = await call('vm.start', { id: name });
    const resumeMs = Date.now() - t1;
    expect(resumed.state).toBe('running');
    expect(resumed.savedState).toBeUndefined();
    expect(existsSync(path.join(bundle, 'saved-state', 'state.qemu'))).toBe(false);
    con = new Console(core.openSerial(name));
    // (a long command line wraps on the console: only the last line is the output)
    expect((await con.run('echo "var=$MARK file=$(cat /tmp/ram-marker)"')).output.trim().split('\n').at(-1)).toBe(`var=${marker} file=${marker}`);
    console.log(`resume: ${resumeMs} ms`);
    // The TPM came back with the guest.
    const rt2 = core.runtime(started.id) as QemuRuntime;
    expect(await rt2.command('query-tpm')).toHaveLength(1);

    // USB passthrough while it runs: hot-plugged by vendor:product though this host has no such device (QEMU
    // waits for it), listed as absent, taken out again; a bus/address that does not exist is refused.
    const withUsb = await call('usb.add', { id: name, device: { vendorId: 'fffe', productId: 'fffd' } });
    expect(withUsb.warnings.join('\n')).toMatch(/fffe:fffd is not plugged into this host now/);
    expect(await rt2.command('qom-get', { path: '/machine/peripheral/usbhost-fffe-fffd', property: 'vendorid' })).toBe(0xfffe);
    expect((await call('usb.list', { id: name })).devices).toEqual([expect.objectContaining({ vendorId: 'fffe', productId: 'fffd', present: false })]);
    await expect(call('usb.add', { id: name, device: { vendorId: 'fffe', productId: 'fffd' } })).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(call('usb.add', { id: name, device: { bus: 250, addr: 120 } })).rejects.toMatchObject({ code: 'ENOTFOUND', message: expect.stringMatching(/no USB device at bus 250 address 120/) });
    await expect(call('usb.add', { id: name, device: { vendorId: 'FFFE', productId: 'x' } as never })).rejects.toMatchObject({ code: 'EINVAL' });
    await call('usb.remove', { id: name, device: { vendorId: 'fffe', productId: 'fffd' } });
    await expect(rt2.command('qom-get', { path: '/machine/peripheral/usbhost-fffe-fffd', property: 'vendorid' })).rejects.toThrow();
    expect((await call('vm.get', { id: name })).config!.usb).toBeUndefined();

    // A live snapshot carries the TPM in its memory state (QEMU's tpm-emulator takes it from swtpm) and loads back.
    await call('snapshot.take', { id: name, name: 'live-tpm' });
    await call('snapshot.restore', { id: name, snapshot: 'live-tpm', saveCurrent: false });
    expect(await (core.runtime(started.id) as QemuRuntime).command('query-tpm')).toHaveLength(1);
    expect((await con.run('echo "var=$MARK"')).output.trim().split('\n').at(-1)).toBe(`var=${marker}`);

    // Suspend again, as a daemon that died right after writing the state leaves it (QEMU waiting after the
    // migration): the next daemon sees the complete state and lets QEMU quit; then throw the state away.
    con.close();
    await writeSavedState(core.runtime(started.id) as QemuRuntime, core.ctx(await core.usable(name)), {}, () => {});
    await core.shutdown();
    core = new Core({ home: core.home });
    await core.boot();
    await until('the adopting daemon to finish the save', () => call('vm.get', { id: name }), (i) => i.state === 'saved' && !!i.savedState, 30_000);
    const discarded = await call('vm.discardState', { id: name });
    expect(discarded.state).toBe('stopped');
    expect(existsSync(path.join(bundle, 'saved-state'))).toBe(false);
    await expect(call('vm.discardState', { id: name })).rejects.toMatchObject({ code: 'ESTATE', message: expect.stringMatching(/cannot discard the saved state of "saver" while it is stopped/) });
    await call('vm.start', { id: name });
    con = new Console(core.openSerial(name));
    await con.waitFor(new RegExp(GUEST_READY_MARKER));
    expect((await con.run('echo "var=$MARK"; cat /tmp/ram-marker 2>/dev/null || echo none')).output.trim()).toMatch(/(^|\n)var=\nnone$/);
    con.close();

    // TPM state goes with an offline snapshot: a TPM made anew after it (its state deleted, provisioned again
    // with a new endorsement key at the next start) is back as it was after the restore.
    await call('vm.kill', { id: name });
    const before = readFileSync(permall);
    await call('snapshot.take', { id: name, name: 'with-tpm' });
    await rm(permall);
    await call('vm.start', { id: name });
    await call('vm.kill', { id: name });
    expect(readFileSync(permall).equals(before)).toBe(false);
    await call('snapshot.restore', { id: name, snapshot: 'with-tpm' });
    expect((await call('vm.get', { id: name })).state).toBe('stopped');
    expect(readFileSync(permall).equals(before)).toBe(true);

    // Export and import carry the TPM (and the snapshot's copy of it) and the device settings.
    const archive = path.join(tmp, 'saver.vmdesk');
    await call('vm.export', { id: name, file: archive, includeSnapshots: true });
    const imported = await call('vm.import', { file: archive, name: 'saver-copy' });
    expect(imported.config).toMatchObject({ tpm: true });
    expect(readFileSync(path.join(imported.bundle, 'tpm', 'tpm2-00.permall')).equals(before)).toBe(true);
    const snapId = (await call('snapshot.list', { id: 'saver-copy' })).snapshots.find((n) => n.name === 'with-tpm')!.id;
    expect(existsSync(path.join(imported.bundle, 'tpm', 'snapshots', snapId, 'tpm2-00.permall'))).toBe(true);
    // A clone gets the TPM its disks go with.
    const clone = await call('snapshot.clone', { id: name, name: 'saver-clone', snapshot: 'with-tpm' });
    expect(readFileSync(path.join(clone.bundle, 'tpm', 'tpm2-00.permall')).equals(before)).toBe(true);
  }, 240_000);
});

describe.runIf(findSecureBootFirmware())('Secure Boot', () => {
  it('boots OVMF secboot on its own copy of the Microsoft-keys store, which enforces Secure Boot', async () => {
    const name = 'secure';
    await expect(call('vm.create', { name, memoryMiB: 256, secureBoot: true, network: [{ mode: 'none', forwards: [] }] })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/Secure Boot needs UEFI firmware/) });
    const info = await call('vm.create', { name, memoryMiB: 256, firmware: 'uefi', secureBoot: true, network: [{ mode: 'none', forwards: [] }] });
    await call('vm.start', { id: name });
    const con = new Console(core.openSerial(name));
    // OVMF's boot manager prints on the serial console once it has set up its variables.
    await con.waitFor(/BdsDxe|Boot0|UEFI/, 120_000);
    const args = readFileSync(path.join(info.bundle, 'logs', 'qemu.log'), 'utf8');
    expect(args).toMatch(/OVMF_CODE[^"]*secboot\.fd/);
    expect(args).toContain('smm=on');
    con.close();
    await call('vm.kill', { id: name });
    const keys = secureBootKeys(await readVarsStore(path.join(info.bundle, 'uefi-vars.qcow2')));
    expect(keys).toMatchObject({ pk: true, kek: true, db: true, enforced: true });
    // Turned off: the keys VMDesk enrolled go at the next start (OVMF enforces enrolled keys whatever code runs).
    await call('vm.update', { id: name, patch: { secureBoot: false } });
    const started = await call('vm.start', { id: name });
    expect(started.warnings.join('\n')).toMatch(/Secure Boot was turned off/);
    await call('vm.kill', { id: name });
    expect(secureBootKeys(await readVarsStore(path.join(info.bundle, 'uefi-vars.qcow2'))).pk).toBe(false);
  }, 180_000);
});
