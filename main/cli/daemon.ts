// `vmdesk daemon status|stop|run`: the library's daemon seen from the command line.
import { spawn } from 'node:child_process';
import { ErrorCode, VmdeskError } from '../api/errors.js';
import { connectDaemon } from '../client/daemon-client.js';
import { nodeEntryCommand } from '../platform/node-entry.js';
import type { CliIo } from './main.js';
import { Rpc } from './rpc.js';

const USAGE = 'usage: vmdesk daemon status [--json] | stop | run [--idle-ms N]';

function mib(n: number): string {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export async function runDaemonCli(home: string, args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  const json = rest.includes('--json');
  switch (sub) {
    case 'status': {
      let rpc: Rpc;
      try {
        rpc = new Rpc(await connectDaemon(home, { autostart: false, anyBuild: true }));
      } catch (e) {
        if (e instanceof VmdeskError && e.code === ErrorCode.notFound) {
          io.stdout.write(json ? JSON.stringify({ daemon: false, home }) + '\n' : `no VMDesk daemon runs for ${home} (any vmdesk command starts one)\n`);
          return 0;
        }
        throw e;
      }
      try {
        const s = await rpc.call('daemon.status', {});
        io.stdout.write(
          json
            ? JSON.stringify({ daemon: true, ...s }, null, 2) + '\n'
            : [
                `daemon:   pid ${s.pid}, VMDesk ${s.version} (build ${s.build}, protocol ${s.protocol}), since ${s.startedAt}`,
                `library:  ${s.home}: ${s.vms} VM(s), ${s.running} running`,
                `clients:  ${s.clients} connected (this one included)`,
                `jobs:     ${s.jobs.length ? s.jobs.map((j) => `${j.method} on ${j.vmId.slice(0, 8)} since ${j.startedAt}`).join('; ') : 'none'}`,
                `memory:   ${mib(s.rssBytes)} resident`,
                `locks:    ${s.locks}`,
                `idle exit: ${s.idleExitMs ? `after ${s.idleExitMs / 1000} s with no VM running and no client` : 'never'}`,
              ].join('\n') + '\n',
        );
        return 0;
      } finally {
        rpc.client.close();
      }
    }
    case 'stop': {
      let rpc: Rpc;
      try {
        rpc = new Rpc(await connectDaemon(home, { autostart: false, anyBuild: true }));
      } catch (e) {
        if (e instanceof VmdeskError && e.code === ErrorCode.notFound) {
          io.stdout.write(`no VMDesk daemon runs for ${home}\n`);
          return 0;
        }
        throw e;
      }
      const s = await rpc.call('daemon.status', {});
      await rpc.call('daemon.stop', {});
      await new Promise<void>((r) => (rpc.client.isClosed ? r() : rpc.client.onClosed(r)));
      io.stdout.write(`stopped the VMDesk daemon (pid ${s.pid})${s.running ? `; ${s.running} VM(s) keep running and are adopted by the next daemon` : ''}\n`);
      return 0;
    }
    case 'run': {
      // The daemon in the foreground, its log on this terminal (debugging); it stays until Ctrl-C.
      const i = rest.indexOf('--idle-ms');
      const idle = i >= 0 ? rest[i + 1] : '0';
      if (!/^\d+$/.test(idle ?? '')) throw new VmdeskError(ErrorCode.invalid, '--idle-ms must be a whole number of milliseconds');
      const cmd = nodeEntryCommand('daemon/main');
      const child = spawn(cmd.command, [...cmd.args, '--home', home, '--idle-ms', idle!], { stdio: 'inherit', env: cmd.env });
      const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
      process.on('SIGINT', forward('SIGINT'));
      process.on('SIGTERM', forward('SIGTERM'));
      return new Promise((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
    }
    default:
      throw new VmdeskError(ErrorCode.invalid, sub ? `unknown daemon command "${sub}"; ${USAGE}` : USAGE);
  }
}
