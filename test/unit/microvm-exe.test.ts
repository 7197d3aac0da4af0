// vmdesk-microvm and the micro-VM engine module without /dev/kvm:
// - the executable itself: argv errors, files it checks before KVM (missing kernel, a disk another process
//   holds), and no /dev/kvm: a clear EHOST on stderr and on the ready pipe, exit status 7, nothing left behind;
// - the control protocol's input side through the addon's __test hooks (the same framing and parsing code the
//   executable runs): hostile and malformed lines, split at any byte, fuzzed; JSON and exit-record output;
// - the engine module: validation, argv, check/start failing clearly, adopt and reapOrphan against runtime
//   records (pid and process start time), the runtime's client side against a scripted peer speaking the
//   protocol (state tracking, exit records, the SIGKILL fallback), snapshot bookkeeping and raw disks.
// Guests really run only in test/integration/microvm-runtime.test.ts (KVM).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { ErrorCode, EXIT_CODES, VmdeskError } from '../../main/api/errors.js';
import { ExitRecord, VmConfig } from '../../main/api/schema.js';
import type { EngineContext, VmRuntime } from '../../main/engines/engine.js';
import { processStartTime } from '../../main/platform/process.js';
import { microvmExeFile, microvmNative, microvmNativeSkipReason, runExe, type MicrovmHooks } from '../native-guests/microvm.js';
import { ensureTestGuest } from '../native-guests/harness.js';

const skip = microvmNativeSkipReason();
if (skip) console.log(`[microvm-exe] skipped: ${skip}`);
const noKvm = !existsSync('/dev/kvm');

let work: string;
let hooks: MicrovmHooks;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'vmd-mvx-'));
  if (!skip) hooks = microvmNative().__test;
});
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

function context(name: string, extra: Partial<VmConfig> = {}, cmdline = 'mode=echo'): EngineContext {
  const now = new Date().toISOString();
  const config = VmConfig.parse({
    schemaVersion: 1, id: randomUUID(), name, engine: 'microvm', cpus: 1, memoryMiB: 32, network: [],
    directKernel: { kernel: ensureTestGuest(), cmdline }, createdAt: now, modifiedAt: now, ...extra,
  });
  const bundleDir = join(work, name);
  mkdirSync(join(bundleDir, 'logs'), { recursive: true });
  return { config, bundleDir, runtimeDir: join(work, `${name}.run`) };
}

/** The flags the engine gives, for a VM in dir, with overrides. */
function exeArgs(dir: string, over: Record<string, string | undefined> = {}): string[] {
  mkdirSync(dir, { recursive: true });
  const flags: Record<string, string | undefined> = {
    '--kernel': ensureTestGuest(),
    '--memory': '32',
    '--control': join(dir, 'c.sock'),
    '--serial': join(dir, 's.sock'),
    '--serial-log': join(dir, 'serial.log'),
    '--exit-record': join(dir, 'last-exit.json'),
    '--record': join(dir, 'microvm.json'),
    ...over,
  };
  return Object.entries(flags).flatMap(([k, v]) => (v === undefined ? [] : [k, v]));
}

/** A child process that just lives: a pid (with a start time) for runtime records. */
function liveProcess(): ChildProcess {
  const c = spawn('sleep', ['120'], { stdio: 'ignore' });
  children.push(c);
  return c;
}

async function deadPid(): Promise<number> {
  const c = spawn('true', [], { stdio: 'ignore' });
  await new Promise((r) => c.on('exit', r));
  return c.pid!;
}

describe.skipIf(!!skip)('vmdesk-microvm: the executable without KVM', () => {
  it('prints its usage for --help and exits 0', () => {
    const r = runExe(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/usage: vmdesk-microvm --kernel PATH \| --restore SNAPSHOT/);
  });

  it('refuses bad command lines with EINVAL (exit 2), naming the flag', () => {
    const d = join(work, 'argv');
    const cases: [string[], RegExp][] = [
      [[], /give --kernel .* or --restore/],
      [['--bogus', 'x'], /unknown flag --bogus/],
      [exeArgs(d, { '--cpus': '0' }), /--cpus must be between 1 and 255, got 0/],
      [exeArgs(d, { '--cpus': '256' }), /--cpus must be between 1 and 255/],
      [exeArgs(d, { '--cpus': '1x' }), /--cpus needs a decimal number/],
      [exeArgs(d, { '--memory': '15' }), /--memory must be between 16 and 1048576/],
      [exeArgs(d, { '--memory': '99999999999999999999999' }), /--memory needs a decimal number|out of range/],
      [exeArgs(d, { '--kernel': 'relative/bzImage' }), /--kernel needs an absolute path/],
      [exeArgs(d, { '--kernel': '/tmp/a\nb' }), /--kernel path contains control characters/],
      [exeArgs(d, { '--record': undefined }), /--record is required/],
      [[...exeArgs(d), '--control', join(d, 'x.sock')], /--control is given twice/],
      [exeArgs(d, { '--control': join(d, 's.sock') }), /--control and --serial must be different sockets/],
      [exeArgs(d, { '--control': `/${'x'.repeat(120)}` }), /--control path is longer than 107 bytes/],
      [exeArgs(d, { '--ready-fd': '2' }), /--ready-fd must be between 3 and 65535/],
      [exeArgs(d, { '--cmdline': 'a\tb' }), /--cmdline contains control characters/],
      [exeArgs(d, { '--cmdline': 'x'.repeat(2049) }), /--cmdline is longer than 2048 bytes/],
      [exeArgs(d, { '--vm-id': 'a/b' }), /--vm-id may contain letters, digits and '-' only/],
      [exeArgs(d, { '--kernel': undefined, '--initrd': '/x' }), /give --kernel|--initrd and --cmdline need --kernel/],
      [[...exeArgs(d), 'stray'], /unexpected argument "stray"/],
      [[...exeArgs(d), '--paused=yes'], /--paused takes no value/],
      [[...exeArgs(d), ...Array.from({ length: 9 }, (_, i) => ['--disk', `/d${i}`]).flat()], /at most 8 disks/],
    ];
    for (const [args, message] of cases) {
      const r = runExe(args);
      expect(r.status, `${args.join(' ')}\n${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/vmdesk-microvm: EINVAL: /);
      expect(r.stderr).toMatch(message);
    }
  });

  it('parses what the engine passes exactly as given (hostArgs is the executable\'s parser)', async () => {
    const { microvmArgv } = await import('../../main/engines/microvm/argv.js');
    const ctx = context('argv-vm', {
      cpus: 3, memoryMiB: 96,
      disks: [
        { id: 'root', path: 'disks/root.img', format: 'raw', owned: true, readOnly: false },
        { id: 'data', path: '/srv/data, with comma.img', format: 'raw', owned: false, readOnly: true },
      ],
    }, 'console=ttyS0 reboot=k');
    const a = hooks.hostArgs(microvmArgv(ctx, { paused: true, accelReason: 'built-in micro-VMM on KVM (slow:\nkvm_pvm)', readyFd: 3 }));
    expect(a).toMatchObject({
      cpus: 3, memoryMiB: 96, kernel: ctx.config.directKernel!.kernel, cmdline: 'console=ttyS0 reboot=k', paused: true, readyFd: 3,
      control: join(ctx.runtimeDir, 'microvm-control.sock'), serial: join(ctx.runtimeDir, 'microvm-serial.sock'),
      serialLog: join(ctx.bundleDir, 'logs', 'serial.log'), exitRecord: join(ctx.bundleDir, 'logs', 'last-exit.json'),
      record: join(ctx.runtimeDir, 'microvm.json'), vmId: ctx.config.id, accelReason: 'built-in micro-VMM on KVM (slow: kvm_pvm)',
    });
    expect(a.disks).toEqual([
      { path: join(ctx.bundleDir, 'disks/root.img'), readOnly: false },
      { path: '/srv/data, with comma.img', readOnly: true },
    ]);
    expect(() => hooks.hostArgs(['--kernel', '/k'])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(hooks.hostArgs(['--restore', '/s', '--control', '/c', '--serial', '/s2', '--serial-log', '/l', '--exit-record', '/e', '--record', '/r'])).toMatchObject({ restore: '/s', kernel: '' });
  });

  it('checks files before KVM: a missing kernel is EINVAL with its name, on stderr and the ready pipe', () => {
    const d = join(work, 'nokernel');
    const r = runExe(exeArgs(d, { '--kernel': join(d, 'missing.bzImage') }), { readyFd: true });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/the micro-VM did not start: EINVAL: kernel .*missing\.bzImage does not exist/);
    expect(r.ready).toEqual({ ok: false, error: { code: 'EINVAL', message: `kernel ${join(d, 'missing.bzImage')} does not exist` } });
    const dirKernel = runExe(exeArgs(d, { '--kernel': d }), { readyFd: true });
    expect(dirKernel.status).toBe(2);
    expect(dirKernel.ready?.error?.message).toMatch(/is a directory/);
    const noDisk = runExe([...exeArgs(d), '--disk', join(d, 'nodisk.img')], { readyFd: true });
    expect(noDisk.status).toBe(2);
    expect(noDisk.ready?.error?.message).toMatch(/disk image .*nodisk\.img does not exist/);
    for (const f of ['c.sock', 's.sock', 'microvm.json', 'last-exit.json']) expect(existsSync(join(d, f)), f).toBe(false);
  });

  it('refuses a disk another process holds (flock) with EBUSY, exit 5', () => {
    const d = join(work, 'busydisk');
    const args = exeArgs(d);
    const disk = join(d, 'disk.img');
    writeFileSync(disk, Buffer.alloc(1 << 20));
    const native = microvmNative();
    const fd = openSync(disk, 'r');
    try {
      expect(native.flockFile(fd, false, false)).toBe(true); // a reader: a writable attach must wait
      const r = runExe([...args, '--disk', disk], { readyFd: true });
      expect(r.status).toBe(5);
      expect(r.ready?.error).toEqual({ code: 'EBUSY', message: `disk image ${disk} is in use by another process (a running VM?)` });
    } finally {
      closeSync(fd);
    }
  });

  it.skipIf(!noKvm)('without /dev/kvm: EHOST saying how to get KVM, exit 7, no sockets, record or exit record left', () => {
    const d = join(work, 'nokvm');
    const r = runExe(exeArgs(d, { '--cpus': '2' }), { readyFd: true });
    expect(r.status).toBe(7);
    expect(r.ready?.ok).toBe(false);
    expect(r.ready?.error?.code).toBe('EHOST');
    expect(r.ready?.error?.message).toMatch(/\/dev\/kvm does not exist: enable virtualization/);
    expect(r.stderr).toMatch(/vmdesk-microvm\[\d+\]: the micro-VM did not start: EHOST: \/dev\/kvm does not exist/);
    for (const f of ['c.sock', 's.sock', 'microvm.json', 'last-exit.json']) expect(existsSync(join(d, f)), f).toBe(false);
  });

  it('exit statuses follow main/api/errors.ts', () => {
    for (const code of Object.values(ErrorCode)) expect(hooks.exitStatusFor(code), code).toBe(EXIT_CODES[code]);
    expect(hooks.exitStatusFor('ENONSENSE')).toBe(1);
  });

  it('reads process start times as the TypeScript side does (pid reuse checks agree)', () => {
    expect(hooks.processStartTime(process.pid)).toBe(processStartTime(process.pid));
    expect(hooks.processStartTime(0x3fffff)).toBe('');
  });
});

describe.skipIf(!!skip)('vmdesk-microvm control protocol: input side', () => {
  type Item = ReturnType<MicrovmHooks['controlInput']>['items'][number];
  const feed = (...chunks: (string | Buffer)[]) => hooks.controlInput(chunks.map((c) => (typeof c === 'string' ? Buffer.from(c, 'latin1') : c)));
  const replies = (items: Item[]) => items.flatMap((i) => ('reply' in i ? [JSON.parse(i.reply.toString('utf8')) as { id: number | null; ok: boolean; error: { code: string; message: string } }] : []));
  const requests = (items: Item[]) => items.flatMap((i) => ('request' in i ? [i.request] : []));

  it('parses every command and its argument', () => {
    const { items } = feed(
      '1 state\n2 info\n3 pause\n4 resume\n5 reset\n6 shutdown\n7 shutdown 0\n8 shutdown 86400000\n9 kill\n',
      '10 snapshot-save /a b/c.vmstate\n11 snapshot-load /x\n12 quit\n9007199254740991 state\n',
    );
    expect(replies(items)).toEqual([]);
    expect(requests(items).map((r) => [r.id, r.cmd, r.path, r.number])).toEqual([
      [1, 'state', '', 0], [2, 'info', '', 0], [3, 'pause', '', 0], [4, 'resume', '', 0], [5, 'reset', '', 0],
      [6, 'shutdown', '', 10000], [7, 'shutdown', '', 0], [8, 'shutdown', '', 86400000], [9, 'kill', '', 0],
      [10, 'snapshot-save', '/a b/c.vmstate', 0], [11, 'snapshot-load', '/x', 0], [12, 'quit', '', 0], [9007199254740991, 'state', '', 0],
    ]);
  });

  it('answers hostile and malformed lines with EINVAL (under their id when one is readable) and reads on', () => {
    const cases: [string | Buffer, number | null, RegExp][] = [
      ['garbage', null, /starts with an id/],
      ['0 state', null, /starts with an id/],
      ['01 state', null, /starts with an id/],
      ['9007199254740992 state', null, /starts with an id/],
      ['-1 state', null, /starts with an id/],
      ['1', 1, /needs a command/],
      ['2 ', 2, /needs a command/],
      ['3 nope', 3, /unknown command "nope"/],
      ['4 STATE', 4, /unknown command/],
      ['5  state', 5, /unknown command ""/],
      ['6 state now', 6, /state takes no argument/],
      ['7 pause ', 7, /pause takes no argument/],
      ['8 shutdown -1', 8, /timeout in milliseconds/],
      ['9 shutdown 1e3', 9, /timeout in milliseconds/],
      ['10 shutdown 86400001', 10, /at most 86400000 ms/],
      ['11 shutdown 9999999999999', 11, /timeout in milliseconds/],
      ['12 snapshot-save', 12, /needs an absolute path/],
      ['13 snapshot-save relative/x', 13, /needs an absolute path/],
      ['14 snapshot-load /dir/', 14, /not a directory/],
      [`15 snapshot-save /${'p'.repeat(4095)}`, 15, /longer than 4095 bytes/],
      ['16 state\r', 16, /control characters/],
      [Buffer.from('17 snapshot-save /a\u0000b', 'latin1'), 17, /control characters/],
      [Buffer.from('18 snapshot-save /a\u001b[2Jb', 'latin1'), 18, /control characters/],
      [Buffer.from([0x31, 0x39, 0x20, 0x73, 0x74, 0x61, 0x74, 0x65, 0xff]), 19, /UTF-8/],
      [Buffer.from([0x32, 0x30, 0x20, 0xc0, 0x80]), 20, /UTF-8/], // overlong NUL
      [Buffer.from([0x32, 0x31, 0x20, 0x2f, 0xed, 0xa0, 0x80]), 21, /UTF-8/], // a surrogate
      [Buffer.from([0x32, 0x32, 0x20, 0xf4, 0x90, 0x80, 0x80]), 22, /UTF-8/], // past U+10FFFF
      ['23 kill\u007f', 23, /control characters/],
    ];
    for (const [line, id, message] of cases) {
      const { items } = feed(Buffer.concat([Buffer.isBuffer(line) ? line : Buffer.from(line, 'latin1'), Buffer.from('\n77 state\n')]));
      const r = replies(items);
      expect(r, String(line).slice(0, 60)).toHaveLength(1);
      expect(r[0]).toMatchObject({ id, ok: false, error: { code: 'EINVAL' } });
      expect(r[0]!.error.message, String(line).slice(0, 60)).toMatch(message);
      expect(requests(items).map((q) => q.id)).toEqual([77]); // the next line is read normally
    }
    // A path may hold any printable UTF-8, spaces and quotes included; the reply escapes them.
    const { items } = feed(Buffer.from('1 snapshot-save /tmp/é "quoted" \\ x\n', 'utf8'));
    expect(requests(items)[0]!.path).toBe('/tmp/é "quoted" \\ x');
  });

  it('bounds a line: one error for an over-long line, skipped to its newline, even across many chunks', () => {
    const long = 'x'.repeat(5000);
    let r = feed(`${long}\n1 state\n`);
    expect(replies(r.items)).toEqual([{ id: null, ok: false, error: { code: 'EINVAL', message: 'request line longer than 4352 bytes: ignored' } }]);
    expect(requests(r.items).map((q) => q.cmd)).toEqual(['state']);
    // 1 MiB without a newline, in 4 KiB chunks: one error, and nothing of it is kept.
    const chunks = Array.from({ length: 256 }, () => 'y'.repeat(4096));
    r = feed(...chunks);
    expect(replies(r.items)).toHaveLength(1);
    expect(r.buffered).toBe(0);
    r = feed(...chunks, 'still the same line\n2 info\n');
    expect(replies(r.items)).toHaveLength(1);
    expect(requests(r.items).map((q) => q.id)).toEqual([2]);
    // Exactly the limit is a line; one byte more is not.
    r = feed(`3 snapshot-save /${'z'.repeat(4352 - 17)}\n`);
    expect(replies(r.items)).toHaveLength(1);
    expect(replies(r.items)[0]!.error.message).toMatch(/longer than 4095 bytes/);
    r = feed(`3 snapshot-save /${'z'.repeat(4352 - 16)}\n`);
    expect(replies(r.items)[0]!.error.message).toMatch(/request line longer than 4352 bytes/);
  });

  it('parses the same however the bytes are split; empty lines are no requests', () => {
    const text = '1 state\n\n\n2 snapshot-save /a/b\n3 shutdown 500\nbad\n4 kill\n';
    const whole = feed(text).items.map((i) => ('reply' in i ? i.reply.toString() : JSON.stringify(i.request)));
    const bytes = [...Buffer.from(text)].map((b) => Buffer.from([b]));
    const split = hooks.controlInput(bytes).items.map((i) => ('reply' in i ? i.reply.toString() : JSON.stringify(i.request)));
    expect(split).toEqual(whole);
    expect(whole).toHaveLength(5);
  });

  it('fuzz: any bytes, split anywhere, give valid JSON error replies or well-formed requests, never more buffered than a line', () => {
    const commands = ['state', 'info', 'pause', 'resume', 'reset', 'shutdown', 'kill', 'snapshot-save', 'snapshot-load', 'quit'];
    const token = fc.oneof(
      fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
      fc.constantFrom(...commands, ' ', '\n', '\r', '1 ', '12 ', '/', '\u0000', 'é', '\xff').map((s) => Buffer.from(s, 'utf8')),
      fc.integer({ min: 0, max: 6000 }).map((n) => Buffer.alloc(n, 0x61)),
    );
    fc.assert(
      fc.property(fc.array(token, { maxLength: 40 }), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 8 }), (parts, cuts) => {
        const all = Buffer.concat(parts);
        const chunks: Buffer[] = [];
        for (let pos = 0, i = 0; pos < all.length; i++) {
          const n = cuts[i % cuts.length]!;
          chunks.push(all.subarray(pos, pos + n));
          pos += n;
        }
        const r = hooks.controlInput(chunks);
        expect(r.buffered).toBeLessThanOrEqual(4352);
        for (const item of r.items) {
          if ('reply' in item) {
            const text = item.reply.toString('utf8');
            expect(text.endsWith('\n') && text.indexOf('\n') === text.length - 1).toBe(true);
            const j = JSON.parse(text) as { ok: boolean; error: { code: string } };
            expect(j.ok).toBe(false);
            expect(j.error.code).toBe('EINVAL');
          } else {
            expect(commands).toContain(item.request.cmd);
            expect(Number.isSafeInteger(item.request.id) && item.request.id > 0).toBe(true);
            expect(/[\u0000-\u001f\u007f]/.test(item.request.path)).toBe(false);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe.skipIf(!!skip)('vmdesk-microvm output: JSON and exit records', () => {
  it('encodes any bytes as a JSON string: valid UTF-8 round-trips, anything else becomes U+FFFD', () => {
    const every = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const decoded = JSON.parse(hooks.jsonString(every).toString('utf8')) as string;
    expect(decoded.slice(0, 128)).toBe(every.subarray(0, 128).toString('latin1'));
    expect(decoded.slice(128)).toBe('\ufffd'.repeat(128));
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.string({ unit: 'grapheme', maxLength: 50 }), (bytes, text) => {
        const j = hooks.jsonString(Buffer.from(bytes));
        expect(() => JSON.parse(j.toString('utf8'))).not.toThrow();
        expect(j.equals(Buffer.from(j.toString('utf8'), 'utf8'))).toBe(true); // the output itself is valid UTF-8
        expect(JSON.parse(hooks.jsonString(Buffer.from(text, 'utf8')).toString('utf8'))).toBe(text);
      }),
      { numRuns: 300 },
    );
  });

  it('writes exit records the schema accepts: the last 20 non-empty lines of output, trimmed, bounded', () => {
    const out = [Buffer.from('\u001b[1mboot\u001b[0m\r\n'), ...Array.from({ length: 30 }, (_, i) => Buffer.from(`line ${i}  \r\n\n`)), Buffer.from([0xff, 0xfe, 0x41, 0x0a]), Buffer.from('partial')];
    const rec = ExitRecord.parse(JSON.parse(hooks.exitRecord(out, { reason: 'crashed', detail: 'triple fault "here"\n' }).toString('utf8')));
    expect(rec).toMatchObject({ reason: 'crashed', detail: 'triple fault "here"\n', exitCode: null, signal: null });
    expect(rec.logTail).toHaveLength(20);
    expect(rec.logTail.at(-1)).toBe('partial');
    expect(rec.logTail.at(-2)).toBe('\ufffd\ufffdA');
    expect(rec.logTail.at(-3)).toBe('line 29');
    expect(rec.logTail[0]).toBe('line 12');
    expect(Date.parse(rec.at)).toBeGreaterThan(Date.now() - 60_000);
    // A guest printing megabytes without a newline leaves at most 8 KiB of it in the record.
    const flood = ExitRecord.parse(JSON.parse(hooks.exitRecord([Buffer.alloc(3 << 20, 0x7a)], { reason: 'killed', detail: '' }).toString('utf8')));
    expect(flood.logTail).toEqual(['z'.repeat(8192)]);
  });
});

describe.skipIf(!!skip)('micro-VM engine module', () => {
  it('declares what it can do', async () => {
    const { microvmEngine } = await import('../../main/engines/microvm/module.js');
    expect(microvmEngine.kind).toBe('microvm');
    expect(microvmEngine.capabilities).toMatchObject({
      display: false, liveSnapshots: 'memory', offlineSnapshots: false, diskFormats: ['raw'], nativeDiskFormat: 'raw',
      linkedClones: false, directKernelOnly: true, acpi: false, diskBuses: ['virtio'], nicModels: [], networkModes: ['none'],
      // One host process per guest: the core caps and pins it; nothing that needs a device model.
      limits: { cpuCap: true, cpuPinning: true, memoryTarget: false, diskIo: false, live: ['cpuCap', 'cpuPinning'] },
      guest: { clipboard: false, resize: false, shares: [], agent: false },
    });
    const { engine } = await import('../../main/engines/registry.js');
    expect(await engine('microvm')).toBe(microvmEngine);
  });

  it('validates configurations without I/O', async () => {
    const { microvmEngine } = await import('../../main/engines/microvm/module.js');
    const base = context('valid-vm').config;
    expect(() => microvmEngine.validate(base)).not.toThrow();
    expect(() => microvmEngine.validate({ ...base, directKernel: { kernel: '/nonexistent/is/fine/here', cmdline: '' } })).not.toThrow();
    const bad: [Partial<VmConfig>, RegExp][] = [
      [{ accel: 'tcg' }, /KVM only; accel "tcg" needs the qemu engine/],
      [{ directKernel: undefined }, /boots a kernel directly/],
      [{ firmware: 'uefi' }, /no firmware/],
      [{ cdrom: '/x.iso' }, /no CD-ROM/],
      [{ cpus: 256 }, /at most 255 vCPUs/],
      [{ disks: [{ id: 'd0', path: 'disk.qcow2', format: 'qcow2', owned: true, readOnly: false }] }, /raw images only/],
      [{ disks: [{ id: 'd0', path: 'disk.img', format: 'raw', owned: true, readOnly: false, bus: 'sata' }] }, /virtio disks only/],
      [{ disks: [{ id: 'd0', path: 'disk.img', format: 'raw', owned: true, readOnly: false, base: '/b.qcow2' }] }, /linked clone/],
      [{ network: [{ mode: 'nat', forwards: [] }] }, /no network device yet: set the network to none/],
    ];
    for (const [patch, message] of bad) {
      expect(() => microvmEngine.validate({ ...base, ...patch }), JSON.stringify(patch)).toThrow(message);
      expect(() => microvmEngine.validate({ ...base, ...patch })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    }
  });

  it('check: missing files are EINVAL, an over-long runtime dir EHOST, and without KVM EHOST saying why', async () => {
    const { microvmEngine } = await import('../../main/engines/microvm/module.js');
    const missing = context('check-kernel');
    missing.config.directKernel!.kernel = join(work, 'nope.bzImage');
    await expect(microvmEngine.check(missing)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/kernel .*nope\.bzImage does not exist/) });
    const disk = context('check-disk', { disks: [{ id: 'd0', path: 'disks/d0.img', format: 'raw', owned: true, readOnly: false }] });
    await expect(microvmEngine.check(disk)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/disk "d0" .* does not exist/) });
    const long = context('check-long');
    long.runtimeDir = join(work, 'r'.repeat(100));
    await expect(microvmEngine.check(long)).rejects.toMatchObject({ code: 'EHOST', message: expect.stringMatching(/too long for unix sockets/) });
    if (noKvm) await expect(microvmEngine.check(context('check-kvm'))).rejects.toMatchObject({ code: 'EHOST', message: expect.stringMatching(/KVM is not usable here: \/dev\/kvm does not exist/) });
  });

  it.skipIf(!noKvm)('start without KVM: the executable\'s EHOST comes back as the error, with its log lines, and nothing is left', async () => {
    const { MicrovmRuntime } = await import('../../main/engines/microvm/runtime.js');
    const ctx = context('nokvm-start');
    const err = await MicrovmRuntime.launch(ctx, { accel: { requested: 'auto', used: 'kvm', reason: 'test' }, warnings: [] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmdeskError);
    expect(err).toMatchObject({ code: 'EHOST', message: expect.stringMatching(/^\/dev\/kvm does not exist: enable virtualization/) });
    expect((err as VmdeskError).details.join('\n')).toMatch(/the micro-VM did not start: EHOST/);
    expect(readFileSync(join(ctx.bundleDir, 'logs', 'microvm.log'), 'utf8')).toMatch(/=== .* starting .*vmdesk-microvm/);
    for (const f of ['microvm-control.sock', 'microvm-serial.sock', 'microvm.json']) expect(existsSync(join(ctx.runtimeDir, f)), f).toBe(false);
    expect(existsSync(join(ctx.bundleDir, 'logs', 'last-exit.json'))).toBe(false);
    // The same through Node's spawn, where the addon's posix_spawn is not used.
    process.env.VMDESK_MICROVM_NODE_SPAWN = '1';
    try {
      await expect(MicrovmRuntime.launch(ctx, { accel: { requested: 'auto', used: 'kvm', reason: 'test' }, warnings: [] })).rejects.toMatchObject({ code: 'EHOST' });
    } finally {
      delete process.env.VMDESK_MICROVM_NODE_SPAWN;
    }
  });

  it('start refuses a VM whose recorded executable still runs (ESTATE), before any host check', async () => {
    const { microvmEngine } = await import('../../main/engines/microvm/module.js');
    const ctx = context('already');
    const p = liveProcess();
    writeRecord(ctx, { pid: p.pid!, startTime: processStartTime(p.pid!)! });
    await expect(microvmEngine.start(ctx)).rejects.toMatchObject({ code: 'ESTATE', message: '"already" is already running' });
  });
});

/** Writes <runtimeDir>/microvm.json as the executable would. */
function writeRecord(ctx: EngineContext, over: Record<string, unknown> = {}): void {
  mkdirSync(ctx.runtimeDir, { recursive: true, mode: 0o700 });
  writeFileSync(join(ctx.runtimeDir, 'microvm.json'), JSON.stringify({
    protocol: 1, vmId: ctx.config.id, pid: process.pid, startTime: processStartTime(process.pid), startedAt: new Date().toISOString(),
    accel: 'kvm', accelReason: 'built-in micro-VMM on KVM (recorded)', control: join(ctx.runtimeDir, 'microvm-control.sock'),
    serial: join(ctx.runtimeDir, 'microvm-serial.sock'), serialLogStart: 0, ...over,
  }));
}

/**
 * A peer speaking vmdesk-microvm's protocol on the runtime dir's sockets, scripted by the test: the client side
 * of the engine is tested against it (no VM behind it; the executable's side is tested above and under KVM).
 */
class ScriptedPeer {
  readonly lines: string[] = [];
  readonly serialIn: Buffer[] = [];
  readonly controls = new Set<Socket>();
  serialSock: Socket | undefined;
  answer: (id: number, cmd: string, arg: string, sock: Socket) => void = (id, cmd, _arg, sock) => {
    const state = cmd === 'pause' ? 'paused' : 'running';
    this.send(sock, { id, ok: true, result: { state } });
    if (cmd === 'pause' || cmd === 'resume') this.broadcast({ event: 'state', data: { state } });
  };
  private servers: Server[] = [];

  constructor(private readonly ctx: EngineContext, private readonly pid: number, private readonly state = 'running') {}

  async listen(): Promise<this> {
    mkdirSync(this.ctx.runtimeDir, { recursive: true, mode: 0o700 });
    const control = createServer((s) => {
      this.controls.add(s);
      s.on('error', () => {});
      s.on('close', () => this.controls.delete(s));
      this.send(s, { event: 'hello', data: { protocol: 1, pid: this.pid, startTime: processStartTime(this.pid), state: this.state } });
      let buf = '';
      s.on('data', (d) => {
        buf += d.toString('utf8');
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          this.lines.push(line);
          const m = /^(\d+) (\S+)(?: (.*))?$/.exec(line);
          if (m) this.answer(Number(m[1]), m[2]!, m[3] ?? '', s);
        }
      });
    });
    const serial = createServer((s) => {
      this.serialSock = s;
      s.on('error', () => {});
      s.on('data', (d) => this.serialIn.push(d));
    });
    this.servers = [control, serial];
    await Promise.all([
      new Promise<void>((r) => control.listen(join(this.ctx.runtimeDir, 'microvm-control.sock'), r)),
      new Promise<void>((r) => serial.listen(join(this.ctx.runtimeDir, 'microvm-serial.sock'), r)),
    ]);
    return this;
  }

  send(s: Socket, obj: unknown): void {
    s.write(`${typeof obj === 'string' ? obj : JSON.stringify(obj)}\n`);
  }

  broadcast(obj: unknown): void {
    for (const s of this.controls) this.send(s, obj);
  }

  close(): void {
    for (const s of this.controls) s.destroy();
    this.serialSock?.destroy();
    for (const srv of this.servers) srv.close();
  }
}

describe.skipIf(!!skip)('micro-VM runtime: adopt, reap and the client side (scripted peer)', () => {
  let saved: Record<string, number>;
  beforeAll(async () => {
    const { microvmTimeouts } = await import('../../main/engines/microvm/runtime.js');
    saved = { ...microvmTimeouts };
    Object.assign(microvmTimeouts, { killReplyMs: 300, stopGraceMs: 600, helloMs: 500, goneMs: 3000, replyMs: 2000 });
  });
  afterAll(async () => {
    const { microvmTimeouts } = await import('../../main/engines/microvm/runtime.js');
    Object.assign(microvmTimeouts, saved);
  });
  const peers: ScriptedPeer[] = [];
  const runtimes: VmRuntime[] = [];
  afterEach(() => {
    for (const r of runtimes.splice(0)) r.detach();
    for (const p of peers.splice(0)) p.close();
  });
  const adopt = async (ctx: EngineContext) => {
    const { microvmEngine } = await import('../../main/engines/microvm/module.js');
    const rt = await microvmEngine.adopt(ctx);
    if (rt) runtimes.push(rt);
    return rt;
  };

  it('adopts nothing without a record that names a live process of this VM with the same start time', async () => {
    const ctx = context('adopt-none');
    expect(await adopt(ctx)).toBeNull();
    mkdirSync(ctx.runtimeDir, { recursive: true });
    writeFileSync(join(ctx.runtimeDir, 'microvm.json'), '{ not json');
    expect(await adopt(ctx)).toBeNull();
    writeRecord(ctx, { vmId: randomUUID() });
    expect(await adopt(ctx)).toBeNull();
    writeRecord(ctx, { pid: await deadPid() });
    expect(await adopt(ctx)).toBeNull();
    writeRecord(ctx, { startTime: '1' }); // our pid, another process's start time: a reused pid
    expect(await adopt(ctx)).toBeNull();
    writeRecord(ctx, { control: '/tmp/elsewhere.sock' });
    expect(await adopt(ctx)).toBeNull();
    writeRecord(ctx, { pid: 'x' });
    expect(await adopt(ctx)).toBeNull();
    // A live process, but nothing listens / something that does not greet / greets as another pid.
    writeRecord(ctx);
    expect(await adopt(ctx)).toBeNull();
    const silent = createServer((s) => s.on('error', () => {}));
    await new Promise<void>((r) => silent.listen(join(ctx.runtimeDir, 'microvm-control.sock'), r));
    try {
      expect(await adopt(ctx)).toBeNull();
    } finally {
      silent.close();
    }
    const imposter = await new ScriptedPeer(ctx, 1).listen();
    peers.push(imposter);
    expect(await adopt(ctx)).toBeNull();
  });

  it('adopts a live executable: state from its greeting and events, requests, serial both ways', async () => {
    const ctx = context('adopt-live');
    const p = liveProcess();
    writeRecord(ctx, { pid: p.pid!, startTime: processStartTime(p.pid!) });
    const peer = await new ScriptedPeer(ctx, p.pid!, 'paused').listen();
    peers.push(peer);
    const rt = (await adopt(ctx))!;
    expect(rt).not.toBeNull();
    expect(rt).toMatchObject({ pid: p.pid, adopted: true, state: 'paused', warnings: [] });
    expect(rt.accel).toEqual({ requested: 'auto', used: 'kvm', reason: 'built-in micro-VMM on KVM (recorded)' });
    const states: string[] = [];
    rt.onState((s) => states.push(s));
    await rt.resume();
    expect(rt.state).toBe('running');
    await rt.pause();
    expect(states).toEqual(['running', 'paused']);
    expect(peer.lines).toEqual(['1 resume', '2 pause']);
    // A refusal comes back as the executable's error; a code we do not know is an engine error.
    peer.answer = (id, _cmd, _arg, s) => peer.send(s, { id, ok: false, error: { code: 'ESTATE', message: 'the guest is stopping' } });
    await expect(rt.resume()).rejects.toMatchObject({ code: 'ESTATE', message: 'the guest is stopping' });
    peer.answer = (id, _cmd, _arg, s) => peer.send(s, { id, ok: false, error: { code: 'EWHAT', message: 'odd' } });
    await expect(rt.reset()).rejects.toMatchObject({ code: 'EENGINE', message: 'odd' });
    // Serial: what the guest prints reaches every subscriber; input reaches the executable.
    const got: string[] = [];
    rt.serial.onData((d) => got.push(d.toString()));
    const off = rt.serial.onData(() => { throw new Error('a broken subscriber'); });
    for (let i = 0; i < 100 && !peer.serialSock; i++) await new Promise((r) => setTimeout(r, 10));
    peer.serialSock!.write('hello from the guest');
    expect(rt.serial.write(Buffer.from('typed'))).toBe(true);
    await expect.poll(() => got.join(''), { timeout: 5000 }).toBe('hello from the guest');
    await expect.poll(() => Buffer.concat(peer.serialIn).toString(), { timeout: 5000 }).toBe('typed');
    off();
    expect(rt.serial.logFile).toBe(join(ctx.bundleDir, 'logs', 'serial.log'));
    expect(rt.serial.logStart).toBe(0);
    await new Promise<void>((r) => rt.serial.onceDrain(r));
    // Detached, the handle watches nothing: it refuses rather than wait for an exit it would never see.
    rt.detach();
    await expect(rt.kill()).rejects.toMatchObject({ code: 'ESTATE', message: expect.stringMatching(/was detached/) });
    await expect(rt.pause()).rejects.toMatchObject({ code: 'ESTATE' });
    expect(p.exitCode).toBeNull(); // and the process was left alone
  });

  it('ignores what is not a reply or event of ours, and a peer that sends an endless line is dropped', async () => {
    const ctx = context('adopt-noise');
    const p = liveProcess();
    writeRecord(ctx, { pid: p.pid!, startTime: processStartTime(p.pid!) });
    const peer = await new ScriptedPeer(ctx, p.pid!).listen();
    peers.push(peer);
    const rt = (await adopt(ctx))!;
    peer.answer = (id, _cmd, _arg, s) => {
      for (const junk of ['not json', '[]', 'null', '{"id":"1","ok":true}', `{"id":${id + 1000},"ok":true,"result":{}}`, '{"event":"state","data":{"state":"exploded"}}', '{"event":"exit","data":{"reason":1}}']) peer.send(s, junk);
      peer.send(s, { id, ok: true, result: { state: 'paused' } });
    };
    await rt.pause();
    expect(rt.state).toBe('paused');
    peer.answer = (_id, _cmd, _arg, s) => s.write('x'.repeat(2 * 1024 * 1024));
    await expect(rt.resume()).rejects.toMatchObject({ code: 'ESTATE', message: expect.stringMatching(/closed its control connection before answering "resume"/) });
  });

  it('settles exited with the executable\'s exit event once the process is gone, and clears the runtime files', async () => {
    const ctx = context('adopt-exit');
    const p = liveProcess();
    writeRecord(ctx, { pid: p.pid!, startTime: processStartTime(p.pid!) });
    const peer = await new ScriptedPeer(ctx, p.pid!).listen();
    peers.push(peer);
    const rt = (await adopt(ctx))!;
    const record: ExitRecord = { at: new Date().toISOString(), reason: 'guest-poweroff', detail: 'the guest powered off', exitCode: null, signal: null, logTail: ['DONE'] };
    peer.broadcast({ event: 'exit', data: record });
    await expect.poll(() => rt.state, { timeout: 5000 }).toBe('stopping');
    for (const s of peer.controls) s.end();
    let settled = false;
    void rt.exited.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 200));
    expect(settled).toBe(false); // the process still runs: not gone yet
    p.kill('SIGKILL');
    expect(await rt.exited).toEqual(record);
    expect(rt.state).toBe('stopped');
    expect(existsSync(join(ctx.runtimeDir, 'microvm.json'))).toBe(false);
    await expect(rt.pause()).rejects.toMatchObject({ code: 'ESTATE' });
  });

  it('kill falls back to SIGKILL by pid when the executable does not answer, and writes the record itself', async () => {
    const ctx = context('adopt-kill');
    const p = liveProcess();
    writeRecord(ctx, { pid: p.pid!, startTime: processStartTime(p.pid!) });
    const peer = await new ScriptedPeer(ctx, p.pid!).listen();
    peers.push(peer);
    peer.answer = () => {}; // hung
    const rt = (await adopt(ctx))!;
    const exited = new Promise<NodeJS.Signals | null>((r) => p.on('exit', (_c, sig) => r(sig)));
    const rec = await rt.kill();
    expect(await exited).toBe('SIGKILL');
    expect(rec).toMatchObject({ reason: 'killed', detail: 'the micro-VM process did not answer; SIGKILL sent', signal: 'SIGKILL' });
    expect(ExitRecord.parse(JSON.parse(readFileSync(join(ctx.bundleDir, 'logs', 'last-exit.json'), 'utf8')))).toMatchObject({ reason: 'killed', signal: 'SIGKILL' });
    expect(peer.lines).toEqual(['1 kill']);
    expect(await rt.kill()).toBe(rec);
  });

  it('shutdown sends the timeout; a refusal for a snapshot in progress is passed on, not turned into a kill', async () => {
    const ctx = context('adopt-shutdown');
    const p = liveProcess();
    writeRecord(ctx, { pid: p.pid!, startTime: processStartTime(p.pid!) });
    const peer = await new ScriptedPeer(ctx, p.pid!).listen();
    peers.push(peer);
    const rt = (await adopt(ctx))!;
    peer.answer = (id, _c, _a, s) => peer.send(s, { id, ok: false, error: { code: 'EBUSY', message: 'a snapshot is being saved; try again when it is done' } });
    await expect(rt.shutdown(1234.7)).rejects.toMatchObject({ code: 'EBUSY' });
    expect(peer.lines).toEqual(['1 shutdown 1234']);
    peer.answer = (id, _c, _a, s) => {
      peer.send(s, { id, ok: true, result: { state: 'stopping' } });
      peer.broadcast({ event: 'state', data: { state: 'stopping' } });
      peer.broadcast({ event: 'exit', data: { at: new Date().toISOString(), reason: 'shutdown', detail: 'the guest powered off after a Ctrl-Alt-Del shutdown request', exitCode: null, signal: null, logTail: [] } });
      setTimeout(() => { s.end(); p.kill('SIGKILL'); }, 20);
    };
    expect(await rt.shutdown(5000)).toMatchObject({ reason: 'shutdown' });
    expect(peer.lines.at(-1)).toBe('2 shutdown 5000');
  });

  it('refuses requests with control characters in their argument (a newline would be a second request)', async () => {
    const { ControlClient } = await import('../../main/engines/microvm/control.js');
    const ctx = context('client-args');
    const peer = await new ScriptedPeer(ctx, process.pid).listen();
    peers.push(peer);
    const c = await ControlClient.connect(join(ctx.runtimeDir, 'microvm-control.sock'));
    try {
      expect(await c.waitHello(1000)).toMatchObject({ pid: process.pid, state: 'running' });
      await expect(c.request('snapshot-save', '/a\n1 kill')).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(c.request('snapshot-save', `/${'x'.repeat(5000)}`)).rejects.toMatchObject({ code: 'EINVAL' });
      expect(await c.request('state')).toEqual({ state: 'running' });
      expect(peer.lines).toEqual(['1 state']);
      peer.answer = () => {};
      await expect(c.request('info', undefined, 100)).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    } finally {
      c.close();
    }
  });

  it('reapOrphan: the exit record the executable wrote in that run, or one for a process that ended without, once', async () => {
    const { microvmEngine } = await import('../../main/engines/microvm/module.js');
    const ctx = context('reap');
    expect(await microvmEngine.reapOrphan!(ctx)).toBeUndefined();
    const p = liveProcess();
    const startedAt = new Date().toISOString();
    writeRecord(ctx, { pid: p.pid!, startTime: processStartTime(p.pid!), startedAt });
    expect(await microvmEngine.reapOrphan!(ctx)).toBeUndefined(); // still running
    p.kill('SIGKILL');
    await new Promise((r) => p.on('exit', r));
    const written: ExitRecord = { at: new Date(Date.now() + 5).toISOString(), reason: 'host-signal', detail: 'the micro-VM process received SIGTERM', exitCode: null, signal: null, logTail: ['bye'] };
    writeFileSync(join(ctx.bundleDir, 'logs', 'last-exit.json'), JSON.stringify(written));
    expect(await microvmEngine.reapOrphan!(ctx)).toEqual(written);
    expect(existsSync(join(ctx.runtimeDir, 'microvm.json'))).toBe(false);
    expect(await microvmEngine.reapOrphan!(ctx)).toBeUndefined();

    // Killed with SIGKILL: the exit record is an older run's. One is written for this run, with the serial tail.
    writeFileSync(join(ctx.bundleDir, 'logs', 'serial.log'), 'boot\nlast words\n');
    writeRecord(ctx, { pid: await deadPid(), startedAt: new Date(Date.now() + 10).toISOString() });
    const reaped = await microvmEngine.reapOrphan!(ctx);
    expect(reaped).toMatchObject({ reason: 'unknown', logTail: ['boot', 'last words'], detail: expect.stringMatching(/ended while no VMDesk daemon watched it/) });
    expect(JSON.parse(readFileSync(join(ctx.bundleDir, 'logs', 'last-exit.json'), 'utf8'))).toEqual(reaped);
  });
});

describe.skipIf(!!skip)('micro-VM snapshots and disks', () => {
  const ref = (ctx: EngineContext, id: string) => ({ id, tag: `vmdesk-${id}`, stateFile: join(ctx.bundleDir, 'snapshots', `${id}.vmstate`) });

  it('has no snapshot targets: every disk is unsupported with the reason; offline snapshots are refused', async () => {
    const { microvmSnapshots } = await import('../../main/engines/microvm/snapshots.js');
    const ctx = context('snap-targets', { disks: [{ id: 'root', path: 'disks/root.img', format: 'raw', owned: true, readOnly: false }] });
    expect(microvmSnapshots.targets(ctx)).toEqual({
      targets: [],
      unsupported: [{ diskId: 'root', format: 'raw', hint: expect.stringMatching(/raw disks are not captured by snapshots: .* memory and CPU state only/) }],
    });
    await expect(microvmSnapshots.saveOffline(ctx, ref(ctx, 'abcd1234'), () => {})).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/need a running guest/) });
    await expect(microvmSnapshots.applyOffline(ctx, ref(ctx, 'abcd1234'), () => {})).rejects.toMatchObject({ code: 'EINVAL' });
    expect(await microvmSnapshots.busy({} as VmRuntime)).toEqual([]);
  });

  it('lists state files by tag with their size and the time their header records; deletes them', async () => {
    const { microvmSnapshots } = await import('../../main/engines/microvm/snapshots.js');
    const ctx = context('snap-stored');
    expect(await microvmSnapshots.stored(ctx, false)).toEqual(new Map());
    const dir = join(ctx.bundleDir, 'snapshots');
    mkdirSync(join(dir, 'bases'), { recursive: true });
    const header = Buffer.alloc(8192);
    header.write('VMDSNAP\0', 0, 'latin1');
    header.writeBigUInt64LE(1_700_000_000_123_456_789n, 48);
    writeFileSync(join(dir, 'aaaa1111.vmstate'), header);
    writeFileSync(join(dir, 'bbbb2222.vmstate'), 'not a snapshot header');
    for (const junk of ['cccc3333.vmstate.tmp', 'tree.json', 'x.vmstate', 'UPPER123.vmstate', 'dddd4444.png']) writeFileSync(join(dir, junk), 'x');
    mkdirSync(join(dir, 'eeee5555.vmstate'));
    const stored = await microvmSnapshots.stored(ctx, true);
    expect([...stored.keys()].sort()).toEqual(['vmdesk-aaaa1111', 'vmdesk-bbbb2222']);
    expect(stored.get('vmdesk-aaaa1111')).toEqual(new Map([['vmstate', { vmStateBytes: 8192, dateSec: 1_700_000_000 }]]));
    expect(stored.get('vmdesk-bbbb2222')!.get('vmstate')!.dateSec).toBe(Math.floor(statSync(join(dir, 'bbbb2222.vmstate')).mtimeMs / 1000));
    await microvmSnapshots.deleteOffline(ctx, ref(ctx, 'aaaa1111'));
    expect(existsSync(join(dir, 'aaaa1111.vmstate'))).toBe(false);
    await microvmSnapshots.deleteOffline(ctx, ref(ctx, 'aaaa1111')); // already gone: fine
    await expect(microvmSnapshots.deleteOffline(ctx, { ...ref(ctx, 'bbbb2222'), stateFile: join(work, 'elsewhere.vmstate') })).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('saves and loads through the executable (scripted peer): the file size as RAM size, the guest ends paused', async () => {
    const { microvmSnapshots } = await import('../../main/engines/microvm/snapshots.js');
    const { microvmEngine } = await import('../../main/engines/microvm/module.js');
    const ctx = context('snap-live');
    const p = liveProcess();
    writeRecord(ctx, { pid: p.pid!, startTime: processStartTime(p.pid!) });
    const peer = await new ScriptedPeer(ctx, p.pid!).listen();
    try {
      peer.answer = (id, cmd, arg, s) => {
        if (cmd === 'snapshot-save') {
          writeFileSync(arg, Buffer.alloc(12345));
          peer.send(s, { id, ok: true, result: { path: arg, bytes: 12345, micros: 10 } });
        } else if (cmd === 'snapshot-load') {
          peer.send(s, { id, ok: true, result: { path: arg, micros: 10, state: 'paused' } });
        } else if (cmd === 'info') {
          peer.send(s, { id, ok: true, result: { state: 'running', job: 'snapshot-save' } });
        }
      };
      const rt = (await microvmEngine.adopt(ctx))!;
      mkdirSync(join(ctx.bundleDir, 'snapshots'), { recursive: true });
      const phases: [string, number | undefined][] = [];
      const r = await microvmSnapshots.saveLive(rt, ctx, ref(ctx, 'ffff6666'), (ph, f) => phases.push([ph, f]));
      expect(r).toEqual({ vmStateBytes: 12345, targets: ['vmstate'] });
      expect(phases).toEqual([['saving memory and CPU state', 0], ['saving memory and CPU state', 1]]);
      await microvmSnapshots.loadLive(rt, ctx, ref(ctx, 'ffff6666'), () => {});
      expect(rt.state).toBe('paused');
      expect(peer.lines).toEqual([`1 snapshot-save ${ref(ctx, 'ffff6666').stateFile}`, `2 snapshot-load ${ref(ctx, 'ffff6666').stateFile}`]);
      expect(await microvmSnapshots.busy(rt)).toEqual(['snapshot-save']);
      await microvmSnapshots.deleteLive(rt, ctx, ref(ctx, 'ffff6666'));
      expect(existsSync(ref(ctx, 'ffff6666').stateFile)).toBe(false);
      await expect(microvmSnapshots.saveLive({} as VmRuntime, ctx, ref(ctx, 'ffff6666'), () => {})).rejects.toMatchObject({ code: 'EENGINE' });
      rt.detach();
    } finally {
      peer.close();
    }
  });

  it('creates sparse raw disks (never over a file), grows them only, reports sizes and busy files', async () => {
    const { microvmDisks } = await import('../../main/engines/microvm/disks.js');
    const file = join(work, 'disk-a.img');
    await microvmDisks.create(file, 10 * 1024 * 1024 + 1);
    expect(statSync(file).size).toBe(10 * 1024 * 1024 + 512);
    expect(await microvmDisks.info(file, 'raw')).toEqual({ virtualSize: 10 * 1024 * 1024 + 512, actualSize: statSync(file).blocks * 512 });
    expect(statSync(file).blocks * 512).toBeLessThan(1024 * 1024);
    await expect(microvmDisks.create(file, 2 * 1024 * 1024)).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(microvmDisks.create(join(work, 'tiny.img'), 1000)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(microvmDisks.create(join(work, 'no', 'dir.img'), 2 * 1024 * 1024)).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await microvmDisks.resize(file, 'raw', 20 * 1024 * 1024);
    expect(statSync(file).size).toBe(20 * 1024 * 1024);
    await expect(microvmDisks.resize(file, 'raw', 4 * 1024 * 1024)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/shrinking a disk is refused/) });
    await expect(microvmDisks.resize(file, 'qcow2', 40 * 1024 * 1024)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/raw images only/) });
    await microvmDisks.checkFree(file, 'raw');
    const native = microvmNative();
    const fd = openSync(file, 'r+');
    try {
      expect(native.flockFile(fd, true, false)).toBe(true); // as vmdesk-microvm holds a writable disk
      await expect(microvmDisks.checkFree(file, 'raw')).rejects.toMatchObject({ code: 'EBUSY' });
      await expect(microvmDisks.resize(file, 'raw', 30 * 1024 * 1024)).rejects.toMatchObject({ code: 'EBUSY' });
    } finally {
      closeSync(fd);
    }
    await microvmDisks.checkFree(file, 'raw');
    await microvmDisks.checkFree(join(work, 'absent.img'), 'raw');
  });
});
