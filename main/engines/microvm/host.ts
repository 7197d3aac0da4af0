// The micro-VM host process: owns one guest (the native VM and its vCPU threads), serves the control socket,
// fans serial output out to clients and logs/serial.log, and records why the guest stopped in last-exit.json.
import { writeFileAtomicSync as writeFileAtomic } from '../../platform/atomic.js';
import { appendFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { isAbsolute, join } from 'node:path';
import type { ExitRecord } from '../../api/schema.js';
import { ErrorCode, VmdeskError } from '../../api/errors.js';
import { asVmdeskError, loadNative, type NativeExit, type NativeVm, type NativeVmOptions } from './native.js';
import { bundlePaths, runtimePaths, type ControlEvent, type ControlReply, type ControlRequest, type HostRecord, type HostState, type LaunchSpec } from './protocol.js';

const LOG_TAIL_LINES = 20;
/** Serial output kept in memory for the exit record's tail. */
const TAIL_BYTES = 8192;

export class MicrovmHost {
  private vm: NativeVm | undefined;
  private state: HostState = 'starting';
  private readonly control: Set<Socket> = new Set();
  private readonly serialClients: Set<Socket> = new Set();
  private server: Server | undefined;
  private tail = '';
  private readonly rt;
  private readonly bundle;
  /** Set while one guest is replaced by another (reset, snapshot-load): its exit is not the host's exit. */
  private replacing = false;
  private exitReason: { reason: string; detail: string } | undefined;
  private finished = false;
  private shutdownTimer: NodeJS.Timeout | undefined;

  constructor(private readonly spec: LaunchSpec) {
    this.rt = runtimePaths(spec.runtimeDir);
    this.bundle = bundlePaths(spec.bundleDir);
  }

  async run(): Promise<void> {
    mkdirSync(this.bundle.logs, { recursive: true });
    writeFileAtomic(this.bundle.serialLog, '');
    try {
      this.vm = this.createVm(this.spec.restoreFrom);
      await this.listen();
      const record: HostRecord = { pid: process.pid, startedAt: new Date().toISOString(), accel: this.spec.accel, vmId: this.spec.config.id };
      writeFileAtomic(this.rt.record, JSON.stringify(record));
      this.vm.start(this.spec.paused);
      this.setState(this.spec.paused ? 'paused' : 'running');
    } catch (e) {
      const err = asVmdeskError(e);
      writeFileAtomic(this.rt.startError, JSON.stringify({ code: err.code, message: err.message, details: err.details }));
      this.writeExit({ reason: 'crashed', detail: `the micro-VM did not start: ${err.message}` });
      this.cleanup();
      process.exitCode = 1;
      return;
    }
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      process.on(sig, () => this.stopGuest('host-signal', `the micro-VM host received ${sig}`));
    }
  }

  private diskOptions(): NativeVmOptions['disks'] {
    return this.spec.config.disks.map((d) => ({
      path: isAbsolute(d.path) ? d.path : join(this.spec.bundleDir, d.path),
      readOnly: d.readOnly,
    }));
  }

  private createVm(restoreFrom: string | undefined): NativeVm {
    const native = loadNative();
    const common = {
      onSerial: (chunk: Buffer) => this.onSerial(chunk),
      onExit: (exit: NativeExit) => this.onExit(vm, exit),
    };
    let vm: NativeVm;
    try {
      if (restoreFrom) {
        vm = new native.Vm({ restoreFrom, disks: this.diskOptions(), ...common });
      } else {
        const dk = this.spec.config.directKernel;
        if (!dk) throw new VmdeskError(ErrorCode.invalid, 'the microvm engine needs a kernel (direct kernel boot)');
        vm = new native.Vm({
          cpus: this.spec.config.cpus,
          memoryMiB: this.spec.config.memoryMiB,
          kernel: dk.kernel,
          initrd: dk.initrd,
          cmdline: dk.cmdline,
          disks: this.diskOptions(),
          ...common,
        });
      }
    } catch (e) {
      throw asVmdeskError(e);
    }
    return vm;
  }

  private onSerial(chunk: Buffer): void {
    try {
      appendFileSync(this.bundle.serialLog, chunk);
    } catch {
      /* a full disk must not stop the guest */
    }
    this.tail = (this.tail + chunk.toString('utf8')).slice(-TAIL_BYTES);
    for (const s of this.serialClients) s.write(chunk);
  }

  private onExit(vm: NativeVm, exit: NativeExit): void {
    if (vm !== this.vm) return; // a replaced guest
    if (this.replacing) return;
    if (this.shutdownTimer) clearTimeout(this.shutdownTimer);
    const reason = this.exitReason ?? { reason: exit.reason === 'stopped' ? 'shutdown' : exit.reason, detail: exit.detail };
    const record = this.writeExit(reason);
    this.setState('stopped');
    this.broadcast({ event: 'exit', data: record });
    this.cleanup();
  }

  private writeExit(r: { reason: string; detail: string }): ExitRecord {
    const record: ExitRecord = {
      at: new Date().toISOString(),
      reason: r.reason,
      detail: r.detail,
      exitCode: null,
      signal: null,
      logTail: this.tail.split('\n').map((l) => l.trimEnd()).filter(Boolean).slice(-LOG_TAIL_LINES),
    };
    try {
      writeFileAtomic(this.bundle.lastExit, JSON.stringify(record, null, 2));
    } catch {
      /* nothing more we can do */
    }
    return record;
  }

  private cleanup(): void {
    if (this.finished) return;
    this.finished = true;
    for (const s of [...this.control, ...this.serialClients]) s.end();
    this.server?.close();
    rmSync(this.rt.control, { force: true });
    rmSync(this.rt.record, { force: true });
    // Let replies and events flush, then leave: the guest is gone and nothing else keeps us.
    setTimeout(() => process.exit(process.exitCode ?? 0), 200).unref();
  }

  private stopGuest(reason: string, detail: string): void {
    if (!this.vm || this.state === 'stopped') return;
    if (this.shutdownTimer) clearTimeout(this.shutdownTimer);
    this.exitReason = { reason, detail };
    this.setState('stopping');
    this.vm.stop(reason, detail);
  }

  private setState(s: HostState): void {
    if (this.state === s) return;
    this.state = s;
    this.broadcast({ event: 'state', data: { state: s } });
  }

  private broadcast(ev: ControlEvent): void {
    const line = JSON.stringify(ev) + '\n';
    for (const s of this.control) s.write(line);
  }

  private listen(): Promise<void> {
    rmSync(this.rt.control, { force: true });
    this.server = createServer((sock) => this.onConnection(sock));
    return new Promise((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.rt.control, () => resolve());
    });
  }

  private onConnection(sock: Socket): void {
    this.control.add(sock);
    let buf = '';
    let raw = false;
    sock.on('error', () => {});
    sock.on('close', () => {
      this.control.delete(sock);
      this.serialClients.delete(sock);
    });
    sock.on('data', (data: Buffer) => {
      if (raw) {
        this.vm?.writeSerial(data);
        return;
      }
      buf += data.toString('utf8');
      let nl: number;
      while (!raw && (nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        let req: ControlRequest;
        try {
          req = JSON.parse(line) as ControlRequest;
        } catch {
          sock.write(JSON.stringify({ id: -1, ok: false, error: { code: 'EINVAL', message: 'malformed request line' } }) + '\n');
          continue;
        }
        if (req.cmd === 'serial') {
          // From here on this connection is a raw serial stream; leftover bytes are input.
          raw = true;
          this.control.delete(sock);
          sock.write(JSON.stringify({ id: req.id, ok: true, result: { serial: true } }) + '\n');
          this.serialClients.add(sock);
          if (buf.length) this.vm?.writeSerial(Buffer.from(buf, 'utf8'));
          buf = '';
          return;
        }
        this.handle(req).then(
          (result) => sock.write(JSON.stringify({ id: req.id, ok: true, result } satisfies ControlReply) + '\n'),
          (e) => {
            const err = asVmdeskError(e);
            sock.write(JSON.stringify({ id: req.id, ok: false, error: { code: err.code, message: err.message, details: err.details } } satisfies ControlReply) + '\n');
          },
        );
      }
    });
  }

  private requireVm(): NativeVm {
    if (!this.vm || this.state === 'stopped' || this.state === 'stopping') throw new VmdeskError(ErrorCode.state, 'the micro-VM is not running');
    return this.vm;
  }

  private async handle(req: ControlRequest): Promise<unknown> {
    const args = req.args ?? {};
    switch (req.cmd) {
      case 'state':
        return { state: this.state };
      case 'info':
        return { state: this.state, pid: process.pid, accel: this.spec.accel, vm: this.vm && this.state !== 'stopped' ? this.vm.info() : undefined };
      case 'pause':
        this.requireVm().pause();
        this.setState('paused');
        return { state: this.state };
      case 'resume':
        this.requireVm().resume();
        this.setState('running');
        return { state: this.state };
      case 'shutdown': {
        // No ACPI in a micro-VM: Ctrl-Alt-Del is the request (Linux reboots on it; with reboot=k that resets
        // through the i8042, which powers the micro-VM off). Forced off when the guest ignores it.
        const vm = this.requireVm();
        const timeoutMs = typeof args.timeoutMs === 'number' && args.timeoutMs >= 0 ? args.timeoutMs : 10_000;
        if (this.shutdownTimer) return { state: this.state };
        this.exitReason = { reason: 'shutdown', detail: 'the guest powered off after a Ctrl-Alt-Del shutdown request' };
        vm.sendCtrlAltDel();
        this.shutdownTimer = setTimeout(() => {
          this.exitReason = { reason: 'shutdown', detail: `the guest did not power off within ${timeoutMs} ms of Ctrl-Alt-Del: forced off` };
          this.setState('stopping');
          vm.stop('shutdown', this.exitReason.detail);
        }, timeoutMs);
        return { state: this.state };
      }
      case 'kill':
        this.requireVm();
        this.stopGuest('killed', 'killed by the user');
        return { state: this.state };
      case 'snapshot-save': {
        const path = args.path;
        if (typeof path !== 'string' || !isAbsolute(path)) throw new VmdeskError(ErrorCode.invalid, 'snapshot-save needs an absolute "path"');
        const r = await this.requireVm().snapshot(path);
        return { path, bytes: r.bytes, millis: r.nanos / 1e6 };
      }
      case 'snapshot-load': {
        const path = args.path;
        if (typeof path !== 'string' || !isAbsolute(path)) throw new VmdeskError(ErrorCode.invalid, 'snapshot-load needs an absolute "path"');
        const t0 = process.hrtime.bigint();
        await this.replaceGuest(path, args.paused === true);
        return { path, millis: Number(process.hrtime.bigint() - t0) / 1e6, state: this.state };
      }
      case 'reset':
        // A micro-VM has no firmware reset; a reset boots the kernel afresh in the same host.
        await this.replaceGuest(undefined, false);
        return { state: this.state };
      default:
        throw new VmdeskError(ErrorCode.invalid, `unknown micro-VM command "${req.cmd}"`);
    }
  }

  private async replaceGuest(restoreFrom: string | undefined, paused: boolean): Promise<void> {
    this.requireVm();
    // Build the new guest first: a bad snapshot file leaves the current guest untouched.
    const next = this.createVm(restoreFrom);
    const old = this.vm!;
    this.replacing = true;
    this.vm = next;
    try {
      old.close();
    } finally {
      this.replacing = false;
    }
    this.tail = '';
    next.start(paused);
    this.setState(paused ? 'paused' : 'running');
  }
}

export async function hostMain(launchFile: string): Promise<void> {
  const spec = JSON.parse(readFileSync(launchFile, 'utf8')) as LaunchSpec;
  process.title = `vmdesk-microvm ${spec.config.name}`;
  process.on('uncaughtException', (e) => {
    try {
      const logs = bundlePaths(spec.bundleDir);
      const record: ExitRecord = { at: new Date().toISOString(), reason: 'crashed', detail: `micro-VM host failed: ${e.stack ?? e.message}`, exitCode: null, signal: null, logTail: [] };
      writeFileAtomic(logs.lastExit, JSON.stringify(record, null, 2));
      rmSync(runtimePaths(spec.runtimeDir).record, { force: true });
      rmSync(runtimePaths(spec.runtimeDir).control, { force: true });
    } finally {
      process.exit(70);
    }
  });
  await new MicrovmHost(spec).run();
}
