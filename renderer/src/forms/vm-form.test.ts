// The form model turns what the user typed into exactly what the server's schemas accept, and says why when it cannot.
import { describe, expect, it } from 'vitest';
import { RpcMethods } from '../../../main/api/rpc';
import { applyDevicePreset, devicesSummary, defaultShareTag, emptyForm, errorsForStep, formFromInfo, internalNetworks, networkOf, networkSummary, newAdapter, randomMac, shareMountCommand, sharesDiff, toCreateRequest, toPatch, usbDiff, usbKey, validateCreate, validateSettings, validateShare, type VmForm } from './vm-form';
import { HOST, vmInfo } from '../testing/fake-rpc';

const valid = () => ({ ...emptyForm(), name: 'web', media: 'kernel' as const, kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', cmdline: 'console=ttyS0' });

describe('create form', () => {
  it('produces a request the server contract accepts', () => {
    const form = { ...valid(), diskGiB: 2, forwards: [{ protocol: 'tcp' as const, hostPort: 2222, guestPort: 22 }] };
    expect(validateCreate(form, { host: HOST }).errors).toEqual({});
    const req = toCreateRequest(form);
    const parsed = RpcMethods['vm.create'].params.parse(req);
    expect(parsed).toMatchObject({ name: 'web', diskBytes: 2 * 1024 ** 3, directKernel: { kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', cmdline: 'console=ttyS0' }, network: [{ mode: 'nat', forwards: [{ hostPort: 2222 }] }] });
  });

  it('names the field at fault', () => {
    const bad = validateCreate({ ...valid(), name: '../x', cpus: 0, memoryMiB: 8, kernel: 'relative/vmlinuz', diskGiB: -1 }, { host: HOST }).errors;
    expect(Object.keys(bad).sort()).toEqual(['cpus', 'diskGiB', 'kernel', 'memoryMiB', 'name']);
    expect(bad.cpus).toMatch(/at least 1 CPU/);
    expect(bad.kernel).toMatch(/absolute/);
  });

  it('checks host limits, duplicate names and forwards, and the engine’s needs', () => {
    const r = validateCreate({ ...valid(), cpus: 9, memoryMiB: 4096, forwards: [{ protocol: 'tcp', hostPort: 80, guestPort: 80 }, { protocol: 'tcp', hostPort: 80, guestPort: 81 }] }, { host: HOST, existingNames: ['WEB'] });
    expect(r.errors.cpus).toMatch(/4 CPUs/);
    expect(r.errors.name).toMatch(/already exists/);
    expect(r.errors['forwards.1.hostPort']).toMatch(/already forwarded/);
    expect(r.warnings.memoryMiB).toMatch(/free/);
    expect(r.warnings['forwards.0.hostPort']).toMatch(/root/);
    expect(validateCreate({ ...valid(), media: 'iso', iso: '', engine: 'microvm' }).errors).toMatchObject({ iso: expect.any(String), engine: expect.stringMatching(/kernel/) });
  });

  it('keeps step errors on their step', () => {
    const { errors } = validateCreate({ ...valid(), name: '', cpus: 0 }, { host: HOST });
    expect(Object.keys(errorsForStep(errors, 0))).toEqual(['name']);
    expect(Object.keys(errorsForStep(errors, 2))).toEqual(['cpus']);
    expect(errorsForStep(errors, 5)).toEqual({});
  });
});

describe('settings form', () => {
  it('sends only what changed', () => {
    const original = formFromInfo(vmInfo('db'));
    expect(toPatch({ ...original }, original)).toEqual({});
    expect(toPatch({ ...original, cpus: 2, osType: 'bsd' }, original)).toEqual({ cpus: 2, osType: 'bsd' });
    const withKernel = toPatch({ ...original, media: 'kernel', kernel: '/k', initrd: '', cmdline: 'quiet' }, original);
    expect(withKernel).toEqual({ cdrom: null, directKernel: { kernel: '/k', cmdline: 'quiet' } });
    expect(RpcMethods['vm.update'].params.safeParse({ id: 'x', patch: withKernel }).success).toBe(true);
  });

  it('validates a new name like the server', () => {
    const original = formFromInfo(vmInfo('db'));
    expect(validateSettings({ ...original, name: 'a/b' }, original).errors.name).toBeDefined();
    expect(validateSettings({ ...original, name: 'db2' }, original, { existingNames: ['db', 'db2'] }).errors.name).toMatch(/exists/);
    expect(validateSettings({ ...original, name: 'db3' }, original).errors).toEqual({});
  });
});

describe('network cards', () => {
  const twoCards = () =>
    vmInfo('net', 'stopped', {
      network: [
        { mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }], mac: '52:54:00:00:00:01' },
        { mode: 'internal', network: 'lab', forwards: [], mac: '52:54:00:00:00:02', model: 'e1000e' },
      ],
    });

  it('loads every card and puts the first NAT card’s forwards in the form, and saves nothing when nothing changed', () => {
    const f = formFromInfo(twoCards());
    expect(f.adapters.map((a) => [a.mode, a.network, a.model, a.mac])).toEqual([
      ['nat', '', 'virtio-net', '52:54:00:00:00:01'],
      ['internal', 'lab', 'e1000e', '52:54:00:00:00:02'],
    ]);
    expect(f.forwards).toEqual([{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }]);
    expect(networkOf(f)).toEqual(twoCards().config!.network);
    expect(toPatch(formFromInfo(twoCards()), f)).toEqual({});
  });

  it('sends cards in their new order with their MACs, and forwards to whichever card is now the first NAT one (as --forward)', () => {
    const original = formFromInfo(twoCards());
    const f = formFromInfo(twoCards());
    f.adapters.reverse();
    f.adapters.push(newAdapter({ mode: 'nat-host', model: 'rtl8139' }));
    const { network } = toPatch(f, original);
    expect(network).toEqual([
      { mode: 'internal', network: 'lab', forwards: [], mac: '52:54:00:00:00:02', model: 'e1000e' },
      { mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }], mac: '52:54:00:00:00:01' },
      { mode: 'nat-host', forwards: [], model: 'rtl8139' },
    ]);
    expect(RpcMethods['vm.update'].params.safeParse({ id: 'x', patch: { network } }).success).toBe(true);
    // The first NAT card becomes internal: the forwards move to the next NAT card, as the CLI puts them.
    f.adapters[1]!.mode = 'internal';
    f.adapters[1]!.network = 'dmz';
    expect(toPatch(f, original).network!.map((n) => (n.forwards ?? []).length)).toEqual([0, 0, 1]);
  });

  it('keeps forwards another card had (vmdesk forward add --adapter) and drops them when it stops being NAT', () => {
    const info = vmInfo('n2', 'stopped', { network: [{ mode: 'nat', forwards: [] }, { mode: 'nat', forwards: [{ protocol: 'udp', hostPort: 5353, guestPort: 53 }] }] });
    const f = formFromInfo(info);
    expect(networkOf(f)[1]!.forwards).toEqual([{ protocol: 'udp', hostPort: 5353, guestPort: 53 }]);
    f.adapters[1]!.mode = 'none';
    expect(networkOf(f)[1]).toEqual({ mode: 'none', forwards: [] });
  });

  it('names the card at fault: internal network names, MAC addresses, duplicates, forwards without NAT', () => {
    const original = formFromInfo(twoCards());
    const f = formFromInfo(twoCards());
    f.adapters[1]!.network = 'a,b';
    f.adapters[0]!.mac = '53:54:00:00:00:01';
    f.adapters.push(newAdapter({ mode: 'nat', mac: '52:54:00:00:00:02' }));
    const { errors } = validateSettings(f, original);
    expect(errors['net.1.network']).toMatch(/letters, digits/);
    expect(errors['net.0.mac']).toMatch(/multicast/);
    expect(errors['net.2.mac']).toMatch(/eth1 has this MAC/);
    const noNat = { ...original, adapters: [newAdapter({ mode: 'internal', network: 'lab' })] };
    expect(validateSettings(noNat, original).errors.forwards).toMatch(/need a NAT card/);
    expect(validateSettings({ ...original, adapters: [1, 2, 3, 4, 5].map(() => newAdapter()) }, original).errors.net).toMatch(/at most 4/);
  });

  it('a MAC address it makes is unicast and in QEMU’s range', () => {
    for (let i = 0; i < 50; i++) expect(randomMac()).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
  });

  it('creates with several cards, an internal one included, and limits', () => {
    const form = { ...valid(), adapters: [newAdapter(), newAdapter({ mode: 'internal', network: 'lab', model: 'e1000' })], forwards: [{ protocol: 'tcp' as const, hostPort: 8080, guestPort: 80 }] };
    form.limits = { ...form.limits, cpuCapPercent: 50, cpuPinning: '0-1', memoryTargetMiB: 256, diskIops: 500, diskMiBPerSec: 20 };
    expect(validateCreate(form, { host: HOST }).errors).toEqual({});
    const req = RpcMethods['vm.create'].params.parse(toCreateRequest(form));
    expect(req.network).toEqual([
      { mode: 'nat', forwards: [{ protocol: 'tcp', hostPort: 8080, guestPort: 80 }] },
      { mode: 'internal', network: 'lab', forwards: [], model: 'e1000' },
    ]);
    expect(req.limits).toEqual({ cpuCapPercent: 50, cpuPinning: [0, 1], memoryTargetMiB: 256, diskIops: 500, diskBytesPerSec: 20 * 1024 * 1024 });
    expect(networkSummary(form)).toBe('eth0 NAT (tcp 8080→80), eth1 Internal network “lab” e1000');
  });

  it('offers the internal networks other VMs use', () => {
    expect(internalNetworks([twoCards(), vmInfo('x', 'stopped', { network: [{ mode: 'internal', network: 'dmz', forwards: [] }] }), { config: null }])).toEqual(['dmz', 'lab']);
  });
});

describe('limits', () => {
  it('sets, clears and keeps: only what changed, null for a cleared limit', () => {
    const info = vmInfo('l', 'running', { limits: { cpuCapPercent: 50, diskBytesPerSec: 65536, cpuPinning: [0, 2, 3] } });
    const original = formFromInfo(info);
    expect(original.limits).toEqual({ cpuCapPercent: 50, cpuPinning: '0,2-3', memoryTargetMiB: '', diskIops: '', diskMiBPerSec: 0.0625 });
    expect(toPatch(formFromInfo(info), original)).toEqual({});
    const f = formFromInfo(info);
    f.limits.cpuCapPercent = '';
    f.limits.memoryTargetMiB = 300;
    f.limits.cpuPinning = '0, 2-3'.replace(' ', '');
    const patch = toPatch(f, original);
    expect(patch).toEqual({ limits: { cpuCapPercent: null, memoryTargetMiB: 300 } });
    expect(RpcMethods['vm.update'].params.safeParse({ id: 'x', patch }).success).toBe(true);
  });

  it('refuses what the host or the VM cannot have, by field', () => {
    const original = formFromInfo(vmInfo('l'));
    const f = formFromInfo(vmInfo('l'));
    f.limits = { cpuCapPercent: 150, cpuPinning: '0-9', memoryTargetMiB: 4096, diskIops: 5, diskMiBPerSec: 0.01 };
    const { errors } = validateSettings(f, original, { host: HOST });
    expect(errors['limits.cpuCapPercent']).toMatch(/1-100/);
    expect(errors['limits.cpuPinning']).toMatch(/0-3/);
    expect(errors['limits.memoryTargetMiB']).toMatch(/512 MiB/);
    expect(errors['limits.diskIops']).toMatch(/at least 10/);
    expect(errors['limits.diskMiBPerSec']).toMatch(/64 KiB/);
    const noCgroups = { ...HOST, limits: { cpuCap: { available: false, reason: 'no writable cgroup' }, cpuPinning: { available: true, mechanism: 'taskset', reason: '' } } };
    expect(validateSettings({ ...f, limits: { ...f.limits, cpuCapPercent: 50, cpuPinning: '1' } }, original, { host: noCgroups }).errors['limits.cpuCapPercent']).toMatch(/cannot cap CPU time: no writable cgroup/);
    f.limits = { ...f.limits, cpuPinning: '3-1' };
    expect(validateSettings(f, original).errors['limits.cpuPinning']).toMatch(/smaller/);
  });
});

describe('guest integration and devices', () => {
  it('maps toggles both ways: patch keys only for what changed, null takes a sound card or driver disc out', () => {
    const info = vmInfo('w', 'stopped', { firmware: 'uefi', audio: 'pa', virtioDrivers: '/isos/virtio-win.iso', display: 'virtio', guestAgent: true });
    const original = formFromInfo(info);
    expect(original).toMatchObject({ clipboard: false, guestAgent: true, display: 'virtio', tpm: false, secureBoot: false, usbTablet: true, audio: 'pa', virtioDrivers: '/isos/virtio-win.iso' });
    const f = formFromInfo(info);
    Object.assign(f, { clipboard: true, tpm: true, secureBoot: true, usbTablet: false, audio: '', virtioDrivers: '', display: 'vga', guestAgent: false });
    const patch = toPatch(f, original);
    expect(patch).toEqual({ clipboard: true, tpm: true, secureBoot: true, usbTablet: false, audio: null, virtioDrivers: null, display: 'vga', guestAgent: false });
    expect(RpcMethods['vm.update'].params.safeParse({ id: 'x', patch }).success).toBe(true);
  });

  it('asks for UEFI before Secure Boot, and sends new VMs only what differs from the defaults', () => {
    const form = { ...valid(), secureBoot: true, tpm: true };
    expect(validateCreate(form).errors.secureBoot).toMatch(/UEFI/);
    const ok = { ...form, firmware: 'uefi' as const, clipboard: true, usbTablet: false, audio: 'auto' as const, virtioDrivers: '/isos/virtio-win.iso', diskBus: 'sata' as const, diskGiB: 4, display: 'virtio' as const };
    expect(validateCreate(ok).errors).toEqual({});
    const req = toCreateRequest(ok);
    expect(req).toMatchObject({ tpm: true, secureBoot: true, clipboard: true, usbTablet: false, audio: 'auto', virtioDrivers: '/isos/virtio-win.iso', diskBus: 'sata', display: 'virtio' });
    expect(req.guestAgent).toBeUndefined();
    expect(RpcMethods['vm.create'].params.safeParse(req).success).toBe(true);
    const plain = toCreateRequest(valid());
    for (const k of ['tpm', 'secureBoot', 'clipboard', 'usbTablet', 'audio', 'virtioDrivers', 'diskBus', 'display', 'guestAgent', 'limits']) expect(plain).not.toHaveProperty(k);
  });

  it('turns the share list into share.remove and share.add calls, and checks a new share', () => {
    const original = formFromInfo(vmInfo('s', 'stopped', { shares: [{ tag: 'data', hostPath: '/srv/data', readOnly: false }, { tag: 'docs', hostPath: '/srv/docs', readOnly: true }] }));
    expect(sharesDiff(original.shares, original.shares)).toEqual({ remove: [], add: [] });
    const next = [{ ...original.shares[0]!, readOnly: true }, { tag: 'src', hostPath: '/home/me/src', readOnly: false }];
    expect(sharesDiff(next, original.shares)).toEqual({ remove: ['data', 'docs'], add: next });
    expect(shareMountCommand({ tag: 'src', hostPath: '/x', readOnly: true })).toBe('mount -t virtiofs -o ro src /mnt/src');
    expect(validateShare({ tag: '', hostPath: '/home/me/src' }, next)).toEqual({ 'share.tag': expect.stringMatching(/already tagged "src"/) });
    expect(validateShare({ tag: 'bad tag', hostPath: 'relative' }, [])).toEqual({ 'share.hostPath': expect.stringMatching(/absolute/), 'share.tag': expect.stringMatching(/letters, digits/) });
    expect(validateShare({ tag: '', hostPath: '~/projects' }, [])).toEqual({});
    expect(defaultShareTag('/home/me/My Files/')).toBe('My Files');
    expect(validateShare({ tag: '', hostPath: '/home/me/My Files' }, [])['share.tag']).toMatch(/cannot be a tag/);
  });
});

describe('device presets', () => {
  it('gives Windows 11 a TPM, Secure Boot, a SATA disk and an e1000e card, leaving alone what the user changed', () => {
    const f: VmForm = { ...emptyForm(), osType: 'windows', firmware: 'uefi' };
    applyDevicePreset(f);
    expect([f.tpm, f.secureBoot, f.diskBus, f.adapters[0]!.model]).toEqual([false, false, 'sata', 'e1000e']);
    applyDevicePreset(f, new Set(), { windows11: true });
    expect([f.tpm, f.secureBoot, f.diskBus, f.adapters[0]!.model]).toEqual([true, true, 'sata', 'e1000e']);
    expect(devicesSummary(f)).toBe('TPM 2.0, Secure Boot, SATA disk');
    // Unticked by the user: said so in the request, so the windows11 preset cannot tick it again.
    f.secureBoot = false;
    expect(toCreateRequest({ ...f, name: 'w' })).toMatchObject({ tpm: true, secureBoot: false, usbTablet: true, diskBus: 'sata' });
    f.osType = 'linux';
    f.tpm = true;
    applyDevicePreset(f, new Set(['tpm']));
    expect([f.tpm, f.secureBoot, f.diskBus, f.adapters[0]!.model]).toEqual([true, false, 'virtio', 'virtio-net']);
    expect(devicesSummary(emptyForm())).toBe('standard');
  });
});

describe('USB passthrough', () => {
  it('turns the device list into usb.remove and usb.add calls, by vendor:product or bus and address', () => {
    const original = formFromInfo(vmInfo('u', 'running', { usb: [{ vendorId: '046d', productId: 'c52b', label: 'Logitech receiver' }, { bus: 1, addr: 4 }] }));
    expect(original.usb.map(usbKey)).toEqual(['046d:c52b', 'bus 1 address 4']);
    expect(usbDiff(original.usb, original.usb)).toEqual({ remove: [], add: [] });
    const next = [original.usb[1]!, { vendorId: '0781', productId: '5581', label: 'SanDisk Ultra' }];
    expect(usbDiff(next, original.usb)).toEqual({ remove: [{ vendorId: '046d', productId: 'c52b' }], add: [{ vendorId: '0781', productId: '5581', label: 'SanDisk Ultra' }] });
    expect(usbDiff([], original.usb).remove).toEqual([{ vendorId: '046d', productId: 'c52b' }, { bus: 1, addr: 4 }]);
    // Not a vm.update field: the patch stays empty.
    expect(toPatch({ ...original, usb: next }, original)).toEqual({});
  });
});
