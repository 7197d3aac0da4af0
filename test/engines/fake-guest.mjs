// The "guest" of the fakevm test engine (fake-engine.ts): a real process that outlives whoever started it, with
// a serial console on a unix socket (output also appended to the serial log, as QEMU does, so history survives
// any gap in watching), a control socket speaking JSON lines (a QMP of its own: status, stop, cont, save, load,
// powerdown, reset, quit; events STOP, RESUME, SHUTDOWN, RESET), and raw disks it keeps open and writes to.
//
// Its memory is a small JSON object (variables set from the console, a boot flag, a counter). While paused
// it reads no console input (queued until cont), like a stopped vCPU. The power button is only heard once the
// guest has booted (as acpid is started late in a real one). How it ended is left in a note file for the
// engine: powerdown (the power button), poweroff (from its console) or quit (the host asked).
import { appendFileSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';

const spec = JSON.parse(process.argv[2]);
/** @type {{ serialSock: string; controlSock: string; serialLog: string; note: string; disks: string[]; paused: boolean; bootMs: number }} */
const cfg = spec;

let mem = { booted: false, vars: {}, counter: 0 };
let paused = cfg.paused;
let stopping = false;
const serialClients = new Set();
const controlClients = new Set();
const pendingInput = [];
let lineBuf = '';
const diskFds = cfg.disks.map((d) => openSync(d, 'r+'));

function out(text) {
  const data = Buffer.from(text.replace(/\n/g, '\r\n'));
  try {
    appendFileSync(cfg.serialLog, data);
  } catch {
    /* the log is the engine's replay; the live stream still goes out */
  }
  for (const c of serialClients) c.write(data);
}

function event(name, data = {}) {
  const line = JSON.stringify({ event: name, data }) + '\n';
  for (const c of controlClients) c.write(line);
}

function leave(how, code = 0) {
  if (stopping) return;
  stopping = true;
  writeFileSync(cfg.note, JSON.stringify({ how, at: new Date().toISOString() }) + '\n');
  event('SHUTDOWN', { how });
  // Let the last console bytes and the event reach the host.
  setTimeout(() => process.exit(code), 30);
}

let bootTimer;
function boot() {
  if (mem.booted || paused || bootTimer) return;
  out('fakevm: booting\n');
  bootTimer = setTimeout(() => {
    bootTimer = undefined;
    if (paused) return;
    mem.booted = true;
    out('FAKEVM-READY\n# ');
    drain();
  }, cfg.bootMs);
}

function drain() {
  while (!paused && mem.booted && pendingInput.length) run(pendingInput.shift());
}

function diskIndex(word) {
  const n = Number(word);
  if (!Number.isInteger(n) || n < 0 || n >= diskFds.length) throw new Error(`no disk ${word}`);
  return n;
}

function run(line) {
  out(`${line}\n`);
  const [cmd, ...args] = line.trim().split(/\s+/);
  try {
    switch (cmd) {
      case undefined:
      case '':
        break;
      case 'echo':
        out(`${args.join(' ')}\n`);
        break;
      case 'set':
        mem.vars[args[0]] = args.slice(1).join(' ');
        out('ok\n');
        break;
      case 'get':
        out(`${args[0]}=${mem.vars[args[0]] ?? ''}\n`);
        break;
      case 'count':
        mem.counter++;
        out(`count=${mem.counter}\n`);
        break;
      case 'disk': {
        const fd = diskFds[diskIndex(args[1])];
        if (args[0] === 'write') {
          const buf = Buffer.alloc(64);
          buf.write(args.slice(2).join(' ').slice(0, 64));
          writeSync(fd, buf, 0, 64, 0);
          out('ok\n');
        } else {
          const buf = Buffer.alloc(64);
          const n = readFileSync(cfg.disks[diskIndex(args[1])]).subarray(0, 64).copy(buf);
          out(`disk${args[1]}=${buf.subarray(0, n).toString().replace(/\0+$/, '')}\n`);
        }
        break;
      }
      case 'poweroff':
        out('fakevm: powering off\n');
        leave('poweroff');
        return;
      case 'crash':
        // A guest that takes its VMM down: no note, a signal.
        process.kill(process.pid, 'SIGSEGV');
        return;
      default:
        out(`sh: ${cmd}: not found\n`);
    }
  } catch (e) {
    out(`error: ${e.message}\n`);
  }
  out('# ');
}

function onInput(chunk) {
  lineBuf += chunk.toString('utf8').replace(/\r/g, '\n');
  let nl;
  while ((nl = lineBuf.indexOf('\n')) >= 0) {
    const line = lineBuf.slice(0, nl);
    lineBuf = lineBuf.slice(nl + 1);
    if (!line.trim()) continue;
    pendingInput.push(line);
  }
  drain();
}

function setPaused(p) {
  if (paused === p) return;
  paused = p;
  event(p ? 'STOP' : 'RESUME');
  if (!p) {
    boot();
    drain();
  }
}

function control(req) {
  switch (req.cmd) {
    case 'status':
      return { running: !paused && !stopping, paused, booted: mem.booted, stopping };
    case 'stop':
      setPaused(true);
      return {};
    case 'cont':
      setPaused(false);
      return {};
    case 'save': {
      // The guest's whole memory, as a VMM writes it into a snapshot.
      const tmp = `${req.file}.tmp-${process.pid}`;
      writeFileSync(tmp, JSON.stringify({ mem, saved: new Date().toISOString() }) + '\n');
      renameSync(tmp, req.file);
      return { bytes: readFileSync(req.file).length };
    }
    case 'load': {
      const state = JSON.parse(readFileSync(req.file, 'utf8'));
      clearTimeout(bootTimer);
      bootTimer = undefined;
      mem = state.mem;
      pendingInput.length = 0;
      setPaused(true);
      return {};
    }
    case 'powerdown':
      // Nobody listens for the button before the guest has booted, or while its vCPU is stopped.
      if (mem.booted && !paused) {
        out('fakevm: power button pressed, powering off\n');
        leave('powerdown');
      }
      return {};
    case 'reset':
      clearTimeout(bootTimer);
      bootTimer = undefined;
      mem = { booted: false, vars: {}, counter: 0 };
      pendingInput.length = 0;
      event('RESET');
      out('\nfakevm: reset\n');
      boot();
      return {};
    case 'quit':
      leave('quit');
      return {};
    default:
      throw new Error(`unknown command ${req.cmd}`);
  }
}

function listen(path, onConn) {
  rmSync(path, { force: true });
  const srv = createServer(onConn);
  srv.listen(path);
  return srv;
}

listen(cfg.serialSock, (sock) => {
  serialClients.add(sock);
  sock.on('data', onInput);
  sock.on('error', () => {});
  sock.on('close', () => serialClients.delete(sock));
});

listen(cfg.controlSock, (sock) => {
  controlClients.add(sock);
  sock.on('error', () => {});
  sock.on('close', () => controlClients.delete(sock));
  sock.write(JSON.stringify({ hello: 'fakevm', pid: process.pid }) + '\n');
  let buf = '';
  sock.on('data', (chunk) => {
    buf += chunk.toString('utf8');
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let req;
      try {
        req = JSON.parse(text);
      } catch {
        continue;
      }
      let reply;
      try {
        reply = { id: req.id, ok: true, result: control(req) };
      } catch (e) {
        reply = { id: req.id, ok: false, error: e.message };
      }
      sock.write(JSON.stringify(reply) + '\n');
    }
  });
});

process.on('SIGTERM', () => leave('host-signal', 0));
// Started paused: it boots when continued. Else it boots now.
boot();
