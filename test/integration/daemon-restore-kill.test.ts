// A CLI killed in the middle of a snapshot restore no longer leaves "you are here" on the safety snapshot:
// the restore is the daemon's job and finishes (or fails whole) whatever happens to the client that asked.
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestPaths, GUEST_READY_MARKER } from '../guest/guest.js';
import { connectDaemon } from '../../main/client/daemon-client.js';
import { BIN, ConsoleSession, tempHome, vmdesk, vmdeskJson } from '../helpers/cli.js';

describe('a restore outlives the client that asked for it', () => {
  let home: string;
  const { kernel, initrd } = guestPaths();

  beforeAll(async () => {
    home = await tempHome();
  });

  afterAll(async () => {
    await vmdesk(home, ['kill', 'rk']).catch(() => {});
    await vmdesk(home, ['daemon', 'stop']).catch(() => {});
    await rm(home, { recursive: true, force: true });
  });

  it('finishes the restore and moves "current" to the restored snapshot after SIGKILL of the CLI', async () => {
    await vmdeskJson(home, ['create', 'rk', '--memory', '256', '--disk', '32M', '--net', 'none', '--kernel', kernel, '--initrd', initrd, '--cmdline', 'console=ttyS0 quiet']);
    expect((await vmdesk(home, ['start', 'rk'])).code).toBe(0);
    const con = new ConsoleSession(home, 'rk');
    await con.waitFor(new RegExp(GUEST_READY_MARKER), 90_000);
    await con.close();
    const a = await vmdeskJson(home, ['snapshot', 'take', 'rk', 'A']);
    await vmdeskJson(home, ['snapshot', 'take', 'rk', 'B']);

    // The CLI asks for the restore and is killed once the daemon has started the job. The job is watched on one
    // connection of the test's own (a CLI per poll is too slow on a loaded machine to see a short job).
    const client = await connectDaemon(home);
    try {
      const cli = spawn(process.execPath, [BIN, '--home', home, 'snapshot', 'restore', 'rk', 'A'], { stdio: 'ignore' });
      const exited = new Promise((r) => cli.once('exit', r));
      let deadline = Date.now() + 60_000;
      while ((await client.call('vm.get', { id: 'rk' })).job?.method !== 'snapshot.restore') {
        if (cli.exitCode !== null) throw new Error(`the CLI ended (code ${cli.exitCode}) before the daemon was seen restoring`);
        if (Date.now() > deadline) throw new Error('the daemon never started the restore');
        await new Promise((r) => setTimeout(r, 10));
      }
      cli.kill('SIGKILL');
      await exited;

      // The job goes on in the daemon and ends; afterwards the tree says we are at A.
      deadline = Date.now() + 120_000;
      while ((await client.call('vm.get', { id: 'rk' })).job) {
        if (Date.now() > deadline) throw new Error('the restore did not end in 2 minutes');
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      client.close();
    }
    const list = await vmdeskJson(home, ['snapshot', 'list', 'rk']);
    expect(list.current).toBe(a.id);
    // The safety snapshot taken before restoring exists, and is not "current".
    const safety = list.snapshots.find((s: { name: string }) => s.name.startsWith('Before restoring A'));
    expect(safety).toBeDefined();
    expect(list.current).not.toBe(safety.id);
    expect((await vmdeskJson(home, ['info', 'rk'])).state).toBe('running');
  }, 240_000);
});
