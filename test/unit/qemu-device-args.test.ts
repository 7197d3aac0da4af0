// Issue 12 part B without a guest: QEMU's command line for each device (TPM, Secure Boot, disk buses and NIC
// models of a Windows 11 VM, sound, USB passthrough with no such device on this host, the driver disc, a
// resume) pinned against test/golden/qemu/devices-*.args (UPDATE_GOLDEN=1 rewrites them); the sound backend
// choice, host USB devices from a fixture sysfs with names from a usb.ids, the windows11 preset, what the
// schemas and the CLI refuse, and what the saved-state digest ignores.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { CreateVmRequest, UsbPassthrough, VmConfig } from '../../main/api/schema.js';
import { RpcMethods } from '../../main/api/rpc.js';
import { applyPreset } from '../../main/api/presets.js';
import { buildQemuArgs, type QemuArgsInput } from '../../main/engines/qemu/args.js';
import { chooseAudio, parseAudioDrivers, usbDeviceAdd, usbForRun } from '../../main/engines/qemu/devices.js';
import { hardwareDigest } from '../../main/engines/qemu/savestate.js';
import { swtpmArgs } from '../../main/engines/qemu/tpm.js';
import { listUsbDevices, udevRuleFor } from '../../main/platform/usb-host.js';
import { parseUsbIds } from '../../main/platform/usb-ids.js';
import { checkDeviceCapabilities } from '../../main/core/devices.js';
import { deviceSettingsFrom, usbDeviceFrom } from '../../main/cli/devices.js';
import type { EngineModule } from '../../main/engines/engine.js';

const goldenDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'golden', 'qemu');
const runtimeDir = '/run/user/1000/vmdesk/0b6e2d4e';
const base = { bundleDir: '/home/u/VMs/Test VM.vmdesk', runtimeDir, accel: 'tcg' as const, capabilities: { sandbox: true } };
const secboot = { code: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd', vars: '/home/u/VMs/Test VM.vmdesk/uefi-vars.qcow2' };

function config(extra: Record<string, unknown> = {}): VmConfig {
  return VmConfig.parse({
    schemaVersion: 1,
    id: '0b6e2d4e-6a1f-4d8e-9a51-3f1c2b7d9e10',
    name: 'Test VM',
    cpus: 2,
    memoryMiB: 512,
    network: [],
    createdAt: '2026-01-01T00:00:00.000Z',
    modifiedAt: '2026-01-01T00:00:00.000Z',
    ...extra,
  });
}

const win11 = config({
  osType: 'windows',
  firmware: 'uefi',
  secureBoot: true,
  tpm: true,
  memoryMiB: 4096,
  cdrom: '/isos/Win11_23H2.iso',
  virtioDrivers: '/isos/virtio-win,0.1.240.iso',
  disks: [{ id: 'disk0', path: 'disks/disk0.qcow2', format: 'qcow2', owned: true, bus: 'sata' }],
  network: [{ mode: 'nat', model: 'e1000e', mac: '52:54:00:12:34:56', forwards: [] }],
});

const scenarios: Record<string, QemuArgsInput> = {
  // SMM + secure pflash for OVMF's secboot build, TPM 2.0 (CRB) on swtpm's socket, SATA disk, e1000e, the
  // install disc and the driver disc on AHCI ports, the USB tablet.
  'devices-windows11': { ...base, config: win11, uefi: secboot },
  // Every disk bus and NIC model at once, no tablet, sound through PulseAudio, two host USB devices (by
  // vendor:product and by bus/address) that this host does not have: the argv does not depend on it.
  'devices-buses-sound-usb': {
    ...base,
    config: config({
      usbTablet: false,
      audio: 'auto',
      usb: [
        { vendorId: '046d', productId: 'c52b', label: 'Logitech, Inc. Unifying Receiver' },
        { bus: 3, addr: 7 },
      ],
      disks: [
        { id: 'a', path: 'disks/a.qcow2', format: 'qcow2', owned: true },
        { id: 'b', path: 'disks/b.qcow2', format: 'qcow2', owned: true, bus: 'scsi' },
        { id: 'c', path: 'disks/c.qcow2', format: 'qcow2', owned: true, bus: 'ide' },
      ],
      network: [
        { mode: 'nat', model: 'e1000', mac: '52:54:00:00:00:01', forwards: [] },
        { mode: 'nat', model: 'rtl8139', mac: '52:54:00:00:00:02', forwards: [] },
      ],
    }),
    audio: { driver: 'pa', server: '/run/user/1000/pulse/native' },
  },
  // Resuming a saved state: paused, QEMU waits for migrate-incoming.
  'devices-resume': { ...base, config: config({ tpm: true, audio: 'none' }), paused: true, incoming: true },
};

describe('device golden files', () => {
  for (const [name, input] of Object.entries(scenarios)) {
    it(name, () => {
      const text = buildQemuArgs(input).join('\n') + '\n';
      const file = join(goldenDir, `${name}.args`);
      if (process.env.UPDATE_GOLDEN) {
        mkdirSync(goldenDir, { recursive: true });
        writeFileSync(file, text);
      }
      expect(existsSync(file), `${file} is missing: run UPDATE_GOLDEN=1 npx vitest run test/unit/qemu-device-args.test.ts`).toBe(true);
      expect(text).toBe(readFileSync(file, 'utf8'));
    });
  }

  it('adds no device to a VM that asks for none (older VMs keep their command line)', () => {
    const args = buildQemuArgs({ ...base, config: config() }).join(' ');
    expect(args).toContain('usb-tablet,bus=usb0.0,id=tablet0');
    expect(args).not.toMatch(/tpm|smm=on|pflash01|audiodev|intel-hda|usb-host|cdrom1|-incoming/);
  });

  it('leaves out Secure Boot on BIOS and doubles commas in the driver disc path', () => {
    const args = buildQemuArgs({ ...base, config: config({ secureBoot: true }) }).join(' ');
    expect(args).not.toMatch(/smm=on|pflash01/);
    expect(buildQemuArgs(scenarios['devices-windows11']!).join('\n')).toContain('"filename":"/isos/virtio-win,0.1.240.iso"');
    expect(() => buildQemuArgs({ ...base, config: config({ virtioDrivers: '/isos/a.iso' }), audio: { driver: 'pa', server: '/run/x\ny' } })).not.toThrow();
    expect(() => buildQemuArgs({ ...base, config: config({ audio: 'pa' }), audio: { driver: 'pa', server: '/run/x\ny' } })).toThrow(/control characters/);
  });

  it('hot-plugs USB by the same id the command line gives, with numeric ids for QMP', () => {
    expect(usbDeviceAdd({ vendorId: '046d', productId: 'c52b' })).toEqual({ driver: 'usb-host', id: 'usbhost-046d-c52b', bus: 'usb0.0', vendorid: 0x046d, productid: 0xc52b });
    expect(usbDeviceAdd({ bus: 3, addr: 7 })).toEqual({ driver: 'usb-host', id: 'usbhost-b3-a7', bus: 'usb0.0', hostbus: 3, hostaddr: 7 });
  });

  it('leaves out a bus/address USB device that is gone (QEMU would not start) and says which cannot be opened', () => {
    const cfg = config({ usb: [{ vendorId: '046d', productId: 'c52b' }, { bus: 3, addr: 7, label: 'Stick' }, { vendorId: '0781', productId: '5581' }] });
    const r = usbForRun(cfg, [{ vendorId: '0781', productId: '5581', bus: 1, addr: 5, usable: false, problem: 'VMDesk (uid 1000) may not open /dev/bus/usb/001/005' }]);
    expect(r.usb).toEqual([{ vendorId: '046d', productId: 'c52b' }, { vendorId: '0781', productId: '5581' }]);
    expect(r.warnings[0]).toMatch(/bus 3 address 7 \(Stick\) is not plugged in .* left out/);
    expect(r.warnings[1]).toMatch(/0781:5581: VMDesk \(uid 1000\) may not open/);
    expect(usbForRun(cfg, [{ vendorId: 'aaaa', productId: 'bbbb', bus: 3, addr: 7, usable: true }]).usb).toHaveLength(3);
  });

  it('runs swtpm as TPM 2.0 on a private socket and state folder, ending with QEMU', () => {
    const a = swtpmArgs('/b/x,y/tpm', `${runtimeDir}/swtpm.sock`, `${runtimeDir}/swtpm.pid`, '/b/logs/swtpm.log');
    expect(a).toEqual(expect.arrayContaining(['socket', '--tpm2', 'dir=/b/x,,y/tpm,mode=0600', '--terminate']));
    expect(a).toContain(`type=unixio,path=${runtimeDir}/swtpm.sock,mode=0600`);
  });
});

describe('saved state digest', () => {
  it('ignores the name, -S/-incoming, the sound backend and host USB devices, but not the hardware', () => {
    const cfg = config({ audio: 'auto', tpm: true });
    const a = hardwareDigest(buildQemuArgs({ ...base, config: cfg, audio: { driver: 'none' } }));
    expect(hardwareDigest(buildQemuArgs({ ...base, config: { ...cfg, name: 'Renamed' }, audio: { driver: 'pa', server: '/run/p' }, paused: true, incoming: true }))).toBe(a);
    expect(hardwareDigest(buildQemuArgs({ ...base, config: { ...cfg, usb: [{ vendorId: '1234', productId: '5678' }] }, audio: { driver: 'none' } }))).toBe(a);
    expect(hardwareDigest(buildQemuArgs({ ...base, config: { ...cfg, osType: 'windows' }, audio: { driver: 'none' } }))).toBe(a);
    expect(hardwareDigest(buildQemuArgs({ ...base, config: { ...cfg, tpm: false }, audio: { driver: 'none' } }))).not.toBe(a);
    expect(hardwareDigest(buildQemuArgs({ ...base, config: { ...cfg, cpus: 3 }, audio: { driver: 'none' } }))).not.toBe(a);
  });
});

describe('sound backend', () => {
  const all = ['none', 'alsa', 'pa', 'pipewire'];
  it('parses -audiodev help and picks PipeWire, then PulseAudio, then ALSA, else none with a reason', () => {
    expect(parseAudioDrivers('Available audio drivers:\nnone\nalsa\npa\nsdl\n')).toEqual(['none', 'alsa', 'pa', 'sdl']);
    expect(chooseAudio('auto', all, { pipewire: '/r/pipewire-0', pulse: '/r/pulse/native', alsa: true })).toEqual({ driver: 'pipewire' });
    expect(chooseAudio('auto', ['none', 'alsa', 'pa'], { pipewire: '/r/pipewire-0', pulse: '/r/pulse/native', alsa: true })).toEqual({ driver: 'pa', server: '/r/pulse/native' });
    const none = chooseAudio('auto', all, { alsa: false });
    expect(none.driver).toBe('none');
    expect(none.warning).toMatch(/no PipeWire or PulseAudio server.*no ALSA playback device/);
    expect(chooseAudio('none', all, { alsa: true })).toEqual({ driver: 'none' });
  });
  it('falls back with a warning when the backend asked for is missing', () => {
    const c = chooseAudio('pa', ['none', 'alsa'], { pulse: '/r/pulse/native', alsa: true });
    expect(c.driver).toBe('alsa');
    expect(c.warning).toMatch(/built without its PulseAudio backend.*qemu-system-gui/);
    expect(chooseAudio('pipewire', ['none', 'pa'], { pipewire: '/r/pw', pulse: '/r/pulse/native', alsa: false }).warning).toMatch(/QEMU 8.1/);
  });
});

describe('host USB devices', () => {
  const dir = mkdtempSync(join(os.tmpdir(), 'vmd-usb-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const dev = (name: string, attrs: Record<string, string>) => {
    mkdirSync(join(dir, 'sys', name), { recursive: true });
    for (const [k, v] of Object.entries(attrs)) writeFileSync(join(dir, 'sys', name, k), v + '\n');
  };

  it('lists devices from sysfs without hubs, names them from usb.ids, and explains one VMDesk may not open', () => {
    dev('usb1', { idVendor: '1d6b', idProduct: '0002', busnum: '1', devnum: '1', bDeviceClass: '09' });
    dev('1-1', { idVendor: '046d', idProduct: 'c52b', busnum: '1', devnum: '4', bDeviceClass: '00', product: 'USB Receiver\u001b[31m', speed: '12' });
    dev('1-2', { idVendor: '0781', idProduct: '5581', busnum: '1', devnum: '5', bDeviceClass: '00' });
    dev('1-1:1.0', { idVendor: 'zzzz' });
    dev('2-1', { idVendor: 'xyz', idProduct: '1', busnum: '2', devnum: '2' });
    mkdirSync(join(dir, 'dev', '001'), { recursive: true });
    writeFileSync(join(dir, 'dev', '001', '004'), '');
    writeFileSync(join(dir, 'dev', '001', '005'), '');
    chmodSync(join(dir, 'dev', '001', '005'), 0o000);
    writeFileSync(join(dir, 'usb.ids'), '# comment\n046d  Logitech, Inc.\n\tc52b  Unifying Receiver\n\t\t00  interface\n0781  SanDisk Corp.\nC 00  (Defined at Interface level)\n\t5581  not a product\n');
    const l = listUsbDevices({ sysfs: join(dir, 'sys'), dev: join(dir, 'dev'), idsPaths: [join(dir, 'usb.ids')] });
    expect(l.devices.map((d) => `${d.vendorId}:${d.productId}@${d.bus}.${d.addr}`)).toEqual(['046d:c52b@1.4', '0781:5581@1.5']);
    const [logi, disk] = l.devices;
    expect(logi).toMatchObject({ vendorName: 'Logitech, Inc.', productName: 'Unifying Receiver', product: 'USB Receiver [31m', speed: '12', devNode: join(dir, 'dev', '001', '004') });
    expect(disk).toMatchObject({ vendorName: 'SanDisk Corp.' });
    expect(disk!.productName).toBeUndefined();
    if (process.getuid?.() !== 0) {
      expect(logi!.usable).toBe(true);
      expect(disk!.usable).toBe(false);
      expect(disk!.problem).toContain(udevRuleFor('0781', '5581'));
    }
    expect(listUsbDevices({ sysfs: join(dir, 'nope') }).notes[0]).toMatch(/cannot be read/);
    expect(listUsbDevices({ sysfs: join(dir, 'sys'), dev: join(dir, 'dev'), idsPaths: [join(dir, 'missing.ids')] }).notes.join()).toMatch(/no USB ID database/);
  });

  it('parses usb.ids with bounds: only the vendor section, long lines cut', () => {
    const m = parseUsbIds(`abcd  ${'V'.repeat(600)}\n\t0001  P\n`, [{ vendorId: 'abcd', productId: '0001' }]);
    expect(m.get('abcd:0001')!.vendor!.length).toBeLessThanOrEqual(128);
    expect(m.get('abcd:0001')!.product).toBe('P');
  });
});

describe('bad input', () => {
  it('refuses malformed USB devices in the schema', () => {
    expect(UsbPassthrough.safeParse({ vendorId: '046D', productId: 'c52b' }).success).toBe(false);
    expect(UsbPassthrough.safeParse({ vendorId: '046d' }).success).toBe(false);
    expect(UsbPassthrough.safeParse({ vendorId: '046d', productId: 'c52b', bus: 1, addr: 2 }).success).toBe(false);
    expect(UsbPassthrough.safeParse({ bus: 0, addr: 2 }).success).toBe(false);
    expect(UsbPassthrough.safeParse({ bus: 1, addr: 200 }).success).toBe(false);
    expect(UsbPassthrough.safeParse({ vendorId: '046d', productId: 'c52b', label: 'a\nb' }).success).toBe(false);
    expect(UsbPassthrough.safeParse({ bus: 1, addr: 2 }).success).toBe(true);
  });

  it('refuses bad USB ids and mixed selectors in the CLI, and lower-cases ids', () => {
    expect(usbDeviceFrom('046D:C52B', {})).toEqual({ vendorId: '046d', productId: 'c52b' });
    expect(() => usbDeviceFrom('46d:c52b', {})).toThrow(/VENDOR:PRODUCT in hexadecimal/);
    expect(() => usbDeviceFrom('046d:c52b,x', {})).toThrow(/VENDOR:PRODUCT/);
    expect(() => usbDeviceFrom('046d:c52b', { bus: '1', addr: '2' })).toThrow(/not both/);
    expect(() => usbDeviceFrom(undefined, { bus: '1' })).toThrow(/both --bus and --addr/);
    expect(() => usbDeviceFrom(undefined, { bus: '1', addr: '0' })).toThrow(/--addr must be a number from 1 to 127/);
    expect(usbDeviceFrom(undefined, { bus: '3', addr: '7' })).toEqual({ bus: 3, addr: 7 });
  });

  it('shapes create and set options, refusing what does not fit', () => {
    expect(deviceSettingsFrom({ tpm: 'on', 'secure-boot': 'off', audio: 'off', 'no-virtio-drivers': true }, false)).toEqual({ tpm: true, secureBoot: false, audio: null, virtioDrivers: null });
    expect(deviceSettingsFrom({ preset: 'windows11', 'disk-bus': 'sata', 'virtio-drivers': 'v.iso' }, true)).toEqual({ preset: 'windows11', diskBus: 'sata', virtioDrivers: resolve('v.iso') });
    expect(() => deviceSettingsFrom({ tpm: 'yes' }, true)).toThrow(/--tpm must be on or off/);
    expect(() => deviceSettingsFrom({ audio: 'oss' }, true)).toThrow(/--audio must be one of auto, pipewire, pa, alsa, none or off/);
    expect(() => deviceSettingsFrom({ preset: 'windows10' }, true)).toThrow(/--preset must be one of windows11/);
    expect(() => deviceSettingsFrom({ preset: 'windows11' }, false)).toThrow(/--preset is for vmdesk create/);
    expect(() => deviceSettingsFrom({ 'disk-bus': 'nvme' }, true)).toThrow(/--disk-bus must be one of/);
  });

  it('applies the windows11 preset under explicit fields, refusing BIOS and a direct kernel', () => {
    const req = CreateVmRequest.parse(applyPreset({ name: 'w', preset: 'windows11', memoryMiB: 8192 }));
    expect(req).toMatchObject({ firmware: 'uefi', secureBoot: true, tpm: true, osType: 'windows', cpus: 2, memoryMiB: 8192, diskBytes: 64 * 1024 ** 3, diskBus: 'sata', network: [{ mode: 'nat', model: 'e1000e' }] });
    // The contract applies it before its defaults (firmware would otherwise default to bios).
    expect(RpcMethods['vm.create'].params.parse({ name: 'w', preset: 'windows11' })).toMatchObject({ firmware: 'uefi', memoryMiB: 4096 });
    expect(() => applyPreset({ name: 'w', preset: 'windows11', firmware: 'bios' })).toThrow(/needs UEFI firmware.*--firmware bios/);
    // At the contract's boundary a conflict is an issue on the preset field, never a throw.
    const bad = RpcMethods['vm.create'].params.safeParse({ name: 'w', preset: 'windows11', firmware: 'bios' });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues[0]).toMatchObject({ path: ['preset'], message: expect.stringMatching(/needs UEFI firmware/) });
    expect(() => applyPreset({ name: 'w', preset: 'windows11', directKernel: { kernel: '/k' } })).toThrow(/leave out --kernel/);
    expect(() => applyPreset({ name: 'w', preset: 'xp' })).toThrow(/unknown preset "xp"/);
    expect((applyPreset({ name: 'w', preset: 'windows11', attachDisks: ['/d.qcow2'] }) as { diskBytes?: number }).diskBytes).toBeUndefined();
  });

  it('refuses Secure Boot without UEFI and devices an engine lacks, by its capabilities', async () => {
    const qemuLike = { kind: 'qemu', capabilities: { devices: { tpm: true, secureBoot: true, usbPassthrough: true, usbHotplug: true, audio: true, driverDisc: true } } } as unknown as EngineModule;
    const micro = { kind: 'microvm', capabilities: {} } as unknown as EngineModule;
    expect(() => checkDeviceCapabilities(config({ secureBoot: true }), qemuLike)).toThrow(/Secure Boot needs UEFI firmware: add --firmware uefi/);
    expect(() => checkDeviceCapabilities(win11, qemuLike)).not.toThrow();
    expect(() => checkDeviceCapabilities(config({ tpm: true }), micro)).toThrow(/the microvm engine has no TPM/);
    expect(() => checkDeviceCapabilities(config({ audio: 'auto' }), micro)).toThrow(/no sound card/);
    expect(() => checkDeviceCapabilities(config({ usb: [{ bus: 1, addr: 2 }] }), micro)).toThrow(/no USB passthrough/);
    expect(() => checkDeviceCapabilities(config(), micro)).not.toThrow();
    // The real engines say so themselves.
    const { microvmEngine } = await import('../../main/engines/microvm/module.js');
    const { qemuEngine } = await import('../../main/engines/qemu/module.js');
    expect(microvmEngine.capabilities).toMatchObject({ saveState: false, devices: { tpm: false, secureBoot: false, usbPassthrough: false, audio: false } });
    expect(qemuEngine.capabilities).toMatchObject({ saveState: true, devices: { tpm: true, secureBoot: true, usbPassthrough: true, usbHotplug: true, audio: true, driverDisc: true } });
    expect(() => checkDeviceCapabilities(config({ secureBoot: true, firmware: 'uefi' }), microvmEngine)).toThrow(/the microvm engine has no Secure Boot/);
  });
});

describe('OVF appliances keep their Windows 11 devices', () => {
  it('round-trips TPM and Secure Boot through VMDesk OVA descriptors and reads VMware and VirtualBox ones', async () => {
    const { buildOvf } = await import('../../main/core/backup/ova-export.js');
    const { parseOvf } = await import('../../main/core/backup/ovf.js');
    const { xml, warnings } = buildOvf(win11, []);
    expect(warnings.join('\n')).toMatch(/TPM 2.0 is noted but its state .* is not exported/);
    expect(parseOvf(xml)).toMatchObject({ firmware: 'uefi', tpm: true, secureBoot: true, osType: 'windows' });
    const plain = parseOvf(buildOvf(config(), []).xml);
    expect(plain.tpm).toBeUndefined();
    expect(plain.secureBoot).toBeUndefined();
    const NS = 'xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vbox="http://www.virtualbox.org/ovf/machine"';
    const vmware = `<Envelope ${NS}><VirtualSystem ovf:id="w"><Name>w11</Name><VirtualHardwareSection>
      <Item><rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item ovf:required="false"><rasd:ElementName>Virtual TPM</rasd:ElementName><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceSubType>vmware.vtpm</rasd:ResourceSubType><rasd:ResourceType>1</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      <vmw:Config ovf:required="false" vmw:key="uefi.secureBoot.enabled" vmw:value="true"/>
    </VirtualHardwareSection></VirtualSystem></Envelope>`;
    expect(parseOvf(vmware)).toMatchObject({ firmware: 'uefi', tpm: true, secureBoot: true });
    const vbox = `<Envelope ${NS}><VirtualSystem ovf:id="v"><Name>v</Name><VirtualHardwareSection></VirtualHardwareSection>
      <vbox:Machine><Hardware><Firmware type="EFI"/><TrustedPlatformModule type="v2_0"/></Hardware></vbox:Machine></VirtualSystem></Envelope>`;
    expect(parseOvf(vbox)).toMatchObject({ firmware: 'uefi', tpm: true });
  });
});
