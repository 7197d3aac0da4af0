// The form model turns what the user typed into exactly what the server's schemas accept, and says why when it cannot.
import { describe, expect, it } from 'vitest';
import { RpcMethods } from '../../../main/api/rpc';
import { emptyForm, errorsForStep, formFromInfo, toCreateRequest, toPatch, validateCreate, validateSettings } from './vm-form';
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
