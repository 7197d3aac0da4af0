// The KVM probe, the accelerator self-test and kvmReport() return sane, schema-shaped values.
import { describe, expect, it } from 'vitest';
import { AcceleratorReport } from '../../main/api/schema.js';
import { addon, kvmSkipReason } from '../native-guests/harness.js';

const skip = kvmSkipReason();
if (skip) console.log(`[native-probe] skipped: ${skip}`);

describe.skipIf(!!skip)('native KVM probe and self-test', () => {
  it('probe reports API version 12, the capabilities we use and a vCPU limit', async () => {
    const p = (await addon()).probe();
    expect(p.available).toBe(true);
    expect(p.apiVersion).toBe(12);
    expect(p.maxVcpus).toBeGreaterThanOrEqual(1);
    expect(p.caps?.irqchip).toBe(true);
    expect(p.caps?.immediateExit).toBe(true);
    expect(p.missing).toBe('');
    expect(p.reason).toMatch(/KVM API 12/);
  });

  it('selfTest runs the tiny guest, times it and classifies the accelerator', async () => {
    const st = await (await addon()).selfTest();
    expect(st.ok).toBe(true);
    expect(['hardware', 'slow']).toContain(st.class);
    expect(st.nanos).toBeGreaterThan(0);
    expect(st.loops).toBeGreaterThan(0);
    expect(st.loopsPerSecond).toBeGreaterThan(1000);
    expect(st.loopsPerSecond).toBeLessThan(1e11);
    const { existsSync } = await import('node:fs');
    if (existsSync('/sys/module/kvm_pvm')) {
      expect(st.class).toBe('slow');
      expect(st.reason).toMatch(/kvm_pvm/);
    }
  });

  it('kvmReport() matches the AcceleratorReport schema', async () => {
    const { kvmReport } = await import('../../main/engines/microvm/native.js');
    const r = await kvmReport({ fresh: true });
    expect(AcceleratorReport.parse(r)).toEqual(r);
    expect(r.available).toBe(true);
    expect(r.apiVersion).toBe(12);
    expect(r.selfTest?.ok).toBe(true);
    expect(r.selfTest?.loopsPerSecond).toBeGreaterThan(0);
    expect(r.class).toMatch(/^(hardware|slow)$/);
  });
});

describe('native loader without the addon', () => {
  it('explains how to build the addon when it is missing', async () => {
    const prev = process.env.VMDESK_NATIVE_ADDON;
    process.env.VMDESK_NATIVE_ADDON = '/nonexistent/vmdesk_native.node';
    try {
      const mod = await import('../../main/engines/microvm/native.js?missing' as string);
      expect(() => mod.loadNative()).toThrow(/not built.*missing/);
      try { mod.loadNative(); } catch (e) { expect((e as { code: string }).code).toBe('EHOST'); }
    } finally {
      if (prev === undefined) delete process.env.VMDESK_NATIVE_ADDON;
      else process.env.VMDESK_NATIVE_ADDON = prev;
    }
  });
});
