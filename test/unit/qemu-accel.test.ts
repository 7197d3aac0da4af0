// Accelerator choice: kvm_pvm and unopenable /dev/kvm fall back to TCG with a reason; explicit requests fail loudly.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { chooseAccel, detectKvm, hostAccelerators, PVM_REASON, resolveAccel, setKvmProbe, TCG_REPORT } from '../../main/engines/qemu/accel.js';

const dir = mkdtempSync(join(tmpdir(), 'vmdesk-accel-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => setKvmProbe(undefined));

// A regular file stands in for /dev/kvm: what matters is that it opens read-write.
const devKvm = join(dir, 'kvm');
writeFileSync(devKvm, '');
const pvm = join(dir, 'kvm_pvm');
const paths = (extra: Partial<{ devKvm: string; kvmPvmModule: string }> = {}) => ({
  devKvm,
  kvmPvmModule: join(dir, 'no-such-module'),
  platform: 'linux' as const,
  ...extra,
});

describe('accelerator choice', () => {
  it('uses KVM when /dev/kvm opens and it is not kvm_pvm', async () => {
    const choice = await resolveAccel('auto', paths());
    expect(choice.used).toBe('kvm');
  });

  it('falls back to TCG on kvm_pvm with the reason, and refuses explicit kvm', async () => {
    mkdirSync(pvm, { recursive: true });
    const choice = await resolveAccel('auto', paths({ kvmPvmModule: pvm }));
    expect(choice).toEqual({ requested: 'auto', used: 'tcg', reason: PVM_REASON });
    await expect(resolveAccel('kvm', paths({ kvmPvmModule: pvm }))).rejects.toMatchObject({ code: 'EHOST' });
  });

  it('explains a missing /dev/kvm', async () => {
    const r = await detectKvm(paths({ devKvm: join(dir, 'absent') }));
    expect(r.available).toBe(false);
    const choice = await resolveAccel('auto', paths({ devKvm: join(dir, 'absent') }));
    expect(choice.used).toBe('tcg');
    expect(choice.reason).toMatch(/does not exist.*using TCG/);
  });

  it('lets the native probe veto KVM', async () => {
    setKvmProbe(() => ({ available: true, class: 'slow', reason: 'self-test: 40x slower than expected' }));
    const choice = await resolveAccel('auto', paths());
    expect(choice.used).toBe('tcg');
    expect(choice.reason).toContain('40x slower');
    setKvmProbe(async () => ({ available: true, class: 'hardware', reason: 'self-test ok' }));
    expect((await resolveAccel('kvm', paths())).used).toBe('kvm');
  });

  it('honours explicit tcg and reports all accelerators', async () => {
    expect((await resolveAccel('tcg', paths())).used).toBe('tcg');
    const reports = await hostAccelerators(paths());
    expect(reports.tcg).toEqual(TCG_REPORT);
    expect(reports.hvf.available).toBe(false);
    expect(() => chooseAccel('hvf', reports, 'linux')).toThrow(/HVF/);
  });

  it.runIf(existsSync('/sys/module/kvm_pvm'))('on a kvm_pvm host picks TCG', async () => {
    const choice = await resolveAccel('auto');
    expect(choice.used).toBe('tcg');
  });
});
