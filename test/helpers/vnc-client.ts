// A minimal RFB 3.8 client for tests, speaking what noVNC speaks to QEMU's VNC server on a VM's unix socket:
// the extended clipboard pseudo-encoding (0xC0A1E5CE: notify/request/provide, zlib-compressed text, CRLF and a
// trailing NUL as noVNC sends it) and ExtendedDesktopSize (SetDesktopSize requests, resize replies).
import { connect, type Socket } from 'node:net';
import { deflateSync, inflateSync } from 'node:zlib';

const ENC_RAW = 0;
const ENC_DESKTOP_SIZE = -223;
const ENC_EXT_DESKTOP_SIZE = -308;
const ENC_EXT_CLIPBOARD = 0xc0a1e5ce | 0;
const CB_TEXT = 1 << 0;
const CB_CAPS = 1 << 24;
const CB_REQUEST = 1 << 25;
const CB_NOTIFY = 1 << 27;
const CB_PROVIDE = 1 << 28;

export interface DesktopResize {
  width: number;
  height: number;
  /** ExtendedDesktopSize: 0 a server-side change, 1 the reply to this client's request. */
  reason?: number;
  /** 0 ok, 1 prohibited, 2 out of resources, 3 invalid layout (the display cannot resize), 4 forwarded to the guest. */
  status?: number;
}

export class VncTestClient {
  width = 0;
  height = 0;
  readonly resizes: DesktopResize[] = [];
  readonly clipboardFromServer: string[] = [];
  serverCaps = false;
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private offered: string | undefined;
  private closed = false;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    sock.on('error', () => {});
  }

  static async connect(path: string): Promise<VncTestClient> {
    const sock = connect(path);
    await new Promise<void>((res, rej) => {
      sock.once('connect', res);
      sock.once('error', rej);
    });
    const c = new VncTestClient(sock);
    await c.handshake();
    void c.loop();
    return c;
  }

  private async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error('VNC connection closed');
      await new Promise<void>((r) => (this.wake = r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  private async handshake(): Promise<void> {
    const version = (await this.read(12)).toString('latin1');
    if (!version.startsWith('RFB 003.')) throw new Error(`not an RFB server: ${JSON.stringify(version)}`);
    this.sock.write('RFB 003.008\n');
    const n = (await this.read(1))[0]!;
    const types = [...(await this.read(n))];
    if (!types.includes(1)) throw new Error(`no "None" security type offered: ${types.join(',')}`);
    this.sock.write(Buffer.from([1]));
    if ((await this.read(4)).readUInt32BE(0) !== 0) throw new Error('VNC security handshake failed');
    this.sock.write(Buffer.from([1])); // shared: the GUI's own connection stays
    const init = await this.read(24);
    this.width = init.readUInt16BE(0);
    this.height = init.readUInt16BE(2);
    await this.read(init.readUInt32BE(20));
    const encs = [ENC_RAW, ENC_DESKTOP_SIZE, ENC_EXT_DESKTOP_SIZE, ENC_EXT_CLIPBOARD];
    const msg = Buffer.alloc(4 + 4 * encs.length);
    msg.writeUInt8(2, 0);
    msg.writeUInt16BE(encs.length, 2);
    encs.forEach((e, i) => msg.writeInt32BE(e, 4 + 4 * i));
    this.sock.write(msg);
  }

  /** Asks for a framebuffer update (QEMU reports size changes inside updates). */
  requestUpdate(incremental = true): void {
    const m = Buffer.alloc(10);
    m.writeUInt8(3, 0);
    m.writeUInt8(incremental ? 1 : 0, 1);
    m.writeUInt16BE(this.width, 6);
    m.writeUInt16BE(this.height, 8);
    this.sock.write(m);
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        const type = (await this.read(1))[0]!;
        if (type === 0) await this.onUpdate();
        else if (type === 2) continue; // bell
        else if (type === 3) await this.onCutText();
        else if (type === 1) {
          const h = await this.read(5);
          await this.read(h.readUInt16BE(3) * 6);
        } else throw new Error(`unexpected server message ${type}`);
      }
    } catch {
      // closed
    }
  }

  private async onUpdate(): Promise<void> {
    const h = await this.read(3);
    const rects = h.readUInt16BE(1);
    for (let i = 0; i < rects; i++) {
      const r = await this.read(12);
      const [x, y, w, hgt, enc] = [r.readUInt16BE(0), r.readUInt16BE(2), r.readUInt16BE(4), r.readUInt16BE(6), r.readInt32BE(8)];
      if (enc === ENC_RAW) await this.read(w * hgt * 4);
      else if (enc === ENC_DESKTOP_SIZE) {
        this.width = w;
        this.height = hgt;
        this.resizes.push({ width: w, height: hgt });
      } else if (enc === ENC_EXT_DESKTOP_SIZE) {
        const screens = (await this.read(4))[0]!;
        await this.read(16 * screens);
        this.width = w;
        this.height = hgt;
        this.resizes.push({ width: w, height: hgt, reason: x, status: y });
      } else throw new Error(`unexpected encoding ${enc}`);
    }
  }

  private async onCutText(): Promise<void> {
    const h = await this.read(7);
    const len = h.readInt32BE(3);
    if (len >= 0) {
      this.clipboardFromServer.push((await this.read(len)).toString('latin1'));
      return;
    }
    const body = await this.read(-len);
    const flags = body.readUInt32BE(0);
    if (flags & CB_CAPS) this.serverCaps = true;
    else if (flags & CB_REQUEST && flags & CB_TEXT && this.offered !== undefined) this.provide(this.offered);
    else if (flags & CB_NOTIFY && flags & CB_TEXT) this.cut(CB_REQUEST | CB_TEXT);
    else if (flags & CB_PROVIDE && flags & CB_TEXT) {
      const data = inflateSync(body.subarray(4));
      const size = data.readUInt32BE(0);
      let text = data.subarray(4, 4 + size).toString('utf8');
      if (text.endsWith('\0')) text = text.slice(0, -1);
      this.clipboardFromServer.push(text.replaceAll('\r\n', '\n'));
    }
  }

  private cut(flags: number, payload = Buffer.alloc(0)): void {
    const m = Buffer.alloc(8 + 4);
    m.writeUInt8(6, 0);
    m.writeInt32BE(-(4 + payload.length), 4);
    m.writeUInt32BE(flags >>> 0, 8);
    this.sock.write(Buffer.concat([m, payload]));
  }

  private provide(text: string): void {
    const utf8 = Buffer.from(text.replace(/\r\n|\r|\n/g, '\r\n') + '\0', 'utf8');
    const size = Buffer.alloc(4);
    size.writeUInt32BE(utf8.length, 0);
    this.cut(CB_PROVIDE | CB_TEXT, deflateSync(Buffer.concat([size, utf8])));
  }

  /** Offers text as this client's clipboard (noVNC's clipboardPasteFrom): notify now, provide when asked, and at once. */
  setClipboard(text: string): void {
    this.offered = text;
    this.cut(CB_NOTIFY | CB_TEXT);
    this.provide(text);
  }

  /** SetDesktopSize with one screen covering the whole framebuffer (what noVNC's resizeSession sends). */
  requestSize(width: number, height: number): void {
    const m = Buffer.alloc(8 + 16);
    m.writeUInt8(251, 0);
    m.writeUInt16BE(width, 2);
    m.writeUInt16BE(height, 4);
    m.writeUInt8(1, 6);
    m.writeUInt16BE(width, 8 + 8);
    m.writeUInt16BE(height, 8 + 10);
    this.sock.write(m);
  }

  close(): void {
    this.sock.destroy();
  }
}
