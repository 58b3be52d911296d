/*
 * WebSocket helpers for the pushedge end-to-end tests (ws.test.mjs, ws_conformance.test.mjs).
 *
 * - RawWS: a WebSocket client written from RFC 6455 on a plain net socket, for the cases a
 *   real client refuses to produce: it writes whatever frames a test builds (masked or not,
 *   any bits, any opcode, split anywhere) and records, in order, every frame the server sends
 *   (with its bits), the messages they assemble to (inflated when permessage-deflate is in
 *   use), the close frame, and how the TCP connection ended (EOF, reset).
 * - encodeFrame(): the frame builder (client frames are masked unless told otherwise).
 * - openWs(): the npm `ws` client (a real, independent implementation) wrapped with the same
 *   bounded waits, for the JSON ops.
 *
 * Every wait is bounded; nothing sleeps for a fixed time.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import zlib from 'node:zlib';
import WebSocket from 'ws';
import { tlsClientOptions } from './lib.mjs';

export { WebSocket };

const HOST = '127.0.0.1';
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };

/** A fresh Sec-WebSocket-Key (base64 of 16 random bytes). */
export function wsKey() {
    return crypto.randomBytes(16).toString('base64');
}

/** The Sec-WebSocket-Accept a server must answer to `key` (RFC 6455 4.2.2). */
export function acceptFor(key) {
    return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

/**
 * One client frame. payload: Buffer or string (UTF-8). mask: true (random key), false
 * (unmasked: a violation), or a 4-byte Buffer. len: the length to put in the header when it
 * must lie (default: the payload's).
 */
export function encodeFrame({ opcode, payload = Buffer.alloc(0), fin = true, rsv1 = false, rsv2 = false, rsv3 = false, mask = true } = {}) {
    const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8');
    const n = body.length;
    let hdr;
    if (n < 126) {
        hdr = Buffer.alloc(2);
        hdr[1] = n;
    } else if (n < 65536) {
        hdr = Buffer.alloc(4);
        hdr[1] = 126;
        hdr.writeUInt16BE(n, 2);
    } else {
        hdr = Buffer.alloc(10);
        hdr[1] = 127;
        hdr.writeBigUInt64BE(BigInt(n), 2);
    }
    hdr[0] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (rsv2 ? 0x20 : 0) | (rsv3 ? 0x10 : 0) | (opcode & 0x0f);
    if (!mask)
        return Buffer.concat([hdr, body]);
    hdr[1] |= 0x80;
    const key = Buffer.isBuffer(mask) ? mask : crypto.randomBytes(4);
    const masked = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++)
        masked[i] = body[i] ^ key[i & 3];
    return Buffer.concat([hdr, key, masked]);
}

/** A close frame's payload: 2-byte code and a reason (string or Buffer). */
export function closePayload(code, reason = '') {
    const r = Buffer.isBuffer(reason) ? reason : Buffer.from(reason, 'utf8');
    const b = Buffer.alloc(2);
    b.writeUInt16BE(code, 0);
    return Buffer.concat([b, r]);
}

/** permessage-deflate of one message as a client sends it (RFC 7692 7.2.1: tail removed). */
export function deflateMessage(buf) {
    const out = zlib.deflateRawSync(buf, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
    if (out.length >= 4 && out.subarray(out.length - 4).equals(Buffer.from([0, 0, 0xff, 0xff])))
        return out.subarray(0, out.length - 4);
    return out;
}

/** Inflates one permessage-deflate message (RFC 7692 7.2.2). */
export function inflateMessage(buf) {
    return zlib.inflateRawSync(Buffer.concat([buf, Buffer.from([0, 0, 0xff, 0xff])]), {
        finishFlush: zlib.constants.Z_SYNC_FLUSH,
    });
}

/** Parses a Sec-WebSocket-Extensions value into [{name, params: {k: v|true}}]. */
export function parseExtensions(value) {
    if (!value)
        return [];
    return String(value)
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
        .map((ext) => {
            const [name, ...ps] = ext.split(';').map((s) => s.trim());
            const params = {};
            for (const p of ps) {
                const eq = p.indexOf('=');
                if (eq < 0)
                    params[p] = true;
                else
                    params[p.slice(0, eq).trim()] = p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
            }
            return { name, params };
        });
}

function parseHead(text) {
    const lines = text.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    const headers = {};
    for (const l of lines.slice(1)) {
        const c = l.indexOf(':');
        if (c <= 0)
            continue;
        const k = l.slice(0, c).trim().toLowerCase();
        const v = l.slice(c + 1).trim();
        headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
    }
    return { status: m ? Number(m[1]) : null, statusLine: lines[0], headers };
}

function dechunk(buf) {
    const parts = [];
    let rest = buf;
    for (;;) {
        const le = rest.indexOf('\r\n');
        if (le < 0)
            break;
        const size = parseInt(rest.subarray(0, le).toString('latin1'), 16);
        if (!Number.isFinite(size) || size === 0)
            break;
        parts.push(rest.subarray(le + 2, le + 2 + size));
        rest = rest.subarray(le + 2 + size + 2);
    }
    return Buffer.concat(parts);
}

/**
 * A raw WebSocket client connection. Use RawWS.open(); see the file comment.
 *
 * Recorded: frames [{fin, rsv1, rsv2, rsv3, opcode, masked, payload, t}], messages
 * [{opcode, data (Buffer), text, compressed, frames}], pings/pongs (payload Buffers, in order),
 * close ({code, reason, payload} of the first close frame, code null when empty), eof (the
 * server ended the TCP stream), reset, ended (either), protocolErrors (what the server sent
 * that a client must reject: masked frames, bad lengths...).
 */
export class RawWS {
    constructor(label) {
        this.label = label;
        this.status = null;
        this.headers = {};
        this.body = Buffer.alloc(0);
        this.frames = [];
        this.messages = [];
        this.pings = [];
        this.pongs = [];
        this.close = null;
        this.closeAt = null;
        this.eof = false;
        this.reset = false;
        this.ended = false;
        this.endedAt = null;
        this.error = null;
        this.protocolErrors = [];
        this.deflate = false;
        this.autoPong = false;
        this.bytesIn = 0;
        this._buf = Buffer.alloc(0);
        this._msg = null;
        this._waiters = new Set();
        this._cursor = 0;
        this.sock = null;
    }

    /**
     * Connects, sends the handshake for `path` and resolves once the response head arrived
     * (for a non-101 answer: once its body is complete or the connection closed). Options:
     * headers (extra request headers; a value of null removes a default one), key, extensions
     * (Sec-WebSocket-Extensions offer), protocol (Sec-WebSocket-Protocol offer), autoPong,
     * request (a complete raw request to send instead), t (node:test context: closed after).
     */
    static open(port, path = '/ws', opts = {}) {
        const { headers = {}, key = wsKey(), extensions, protocol, autoPong = false, request, timeoutMs = 5000, t } = opts;
        const ws = new RawWS(`RawWS ${path}`);
        ws.key = key;
        ws.autoPong = autoPong;
        if (t)
            t.after(() => ws.destroy());
        const hdrs = {
            Host: `${HOST}:${port}`,
            Upgrade: 'websocket',
            Connection: 'Upgrade',
            'Sec-WebSocket-Version': '13',
            'Sec-WebSocket-Key': key,
        };
        if (extensions !== undefined)
            hdrs['Sec-WebSocket-Extensions'] = extensions;
        if (protocol !== undefined)
            hdrs['Sec-WebSocket-Protocol'] = protocol;
        for (const [k, v] of Object.entries(headers)) {
            const existing = Object.keys(hdrs).find((h) => h.toLowerCase() === k.toLowerCase());
            if (existing)
                delete hdrs[existing];
            if (v !== null)
                hdrs[k] = v;
        }
        const req = request ??
            `GET ${path} HTTP/1.1\r\n` + Object.entries(hdrs).map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n';
        return new Promise((resolve, reject) => {
            const sock = net.connect({ host: HOST, port });
            sock.setNoDelay(true);
            ws.sock = sock;
            let head = null;
            let pre = Buffer.alloc(0);
            let settled = false;
            const settle = (err) => {
                if (settled)
                    return;
                settled = true;
                clearTimeout(timer);
                if (err) {
                    ws.destroy();
                    reject(err);
                } else {
                    resolve(ws);
                }
            };
            const timer = setTimeout(() => settle(new Error(`${ws.label}: no complete handshake response within ${timeoutMs} ms; got ${JSON.stringify(pre.toString('latin1').slice(0, 300))}`)), timeoutMs);
            const bodyDone = () => {
                const cl = ws.headers['content-length'];
                if (cl !== undefined)
                    return ws.body.length >= Number(cl);
                if (/chunked/i.test(ws.headers['transfer-encoding'] || '') && /(^|\r\n)0\r\n\r\n$/.test(ws.body.toString('latin1'))) {
                    ws.body = dechunk(ws.body);
                    return true;
                }
                return false;
            };
            sock.on('data', (c) => {
                ws.bytesIn += c.length;
                if (head === null) {
                    pre = Buffer.concat([pre, c]);
                    const end = pre.indexOf('\r\n\r\n');
                    if (end < 0)
                        return;
                    head = parseHead(pre.subarray(0, end).toString('latin1'));
                    ws.status = head.status;
                    ws.statusLine = head.statusLine;
                    ws.headers = head.headers;
                    const rest = pre.subarray(end + 4);
                    if (ws.status === 101) {
                        const ext = parseExtensions(ws.headers['sec-websocket-extensions']);
                        ws.deflate = ext.some((e) => e.name === 'permessage-deflate');
                        settle(null);
                        if (rest.length)
                            ws._feed(rest);
                    } else {
                        ws.body = rest;
                        if (bodyDone())
                            settle(null);
                    }
                    return;
                }
                if (ws.status === 101) {
                    ws._feed(c);
                } else {
                    ws.body = Buffer.concat([ws.body, c]);
                    if (bodyDone())
                        settle(null);
                }
            });
            sock.on('end', () => {
                ws.eof = true;
                ws._end();
                settle(head ? null : new Error(`${ws.label}: connection closed before a response; got ${JSON.stringify(pre.toString('latin1'))}`));
            });
            sock.on('error', (e) => {
                ws.error = e;
                if (/ECONNRESET|EPIPE/.test(e.code || ''))
                    ws.reset = true;
                ws._end();
                settle(head ? null : e);
            });
            sock.on('close', () => {
                ws._end();
                settle(head ? null : new Error(`${ws.label}: connection closed before a response`));
            });
            sock.on('connect', () => sock.write(req));
        });
    }

    get text() {
        return this.body.toString('utf8');
    }

    get json() {
        try {
            return JSON.parse(this.text);
        } catch {
            return undefined;
        }
    }

    _end() {
        if (this.ended)
            return;
        this.ended = true;
        this.endedAt = Date.now();
        this._notify();
    }

    _feed(chunk) {
        this._buf = this._buf.length ? Buffer.concat([this._buf, chunk]) : chunk;
        for (;;) {
            const b = this._buf;
            if (b.length < 2)
                break;
            const masked = (b[1] & 0x80) !== 0;
            let len = b[1] & 0x7f;
            let off = 2;
            if (len === 126) {
                if (b.length < 4)
                    break;
                len = b.readUInt16BE(2);
                off = 4;
                if (len < 126)
                    this.protocolErrors.push(`non-minimal 16-bit length ${len}`);
            } else if (len === 127) {
                if (b.length < 10)
                    break;
                const big = b.readBigUInt64BE(2);
                if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
                    this.protocolErrors.push(`absurd frame length ${big}`);
                    this._buf = Buffer.alloc(0);
                    break;
                }
                len = Number(big);
                off = 10;
                if (len < 65536)
                    this.protocolErrors.push(`non-minimal 64-bit length ${len}`);
            }
            if (masked)
                off += 4;
            if (b.length < off + len)
                break;
            let payload = Buffer.from(b.subarray(off, off + len));
            if (masked) {
                this.protocolErrors.push('the server masked a frame');
                const key = b.subarray(off - 4, off);
                for (let i = 0; i < payload.length; i++)
                    payload[i] ^= key[i & 3];
            }
            this._buf = b.subarray(off + len);
            const f = {
                fin: (b[0] & 0x80) !== 0,
                rsv1: (b[0] & 0x40) !== 0,
                rsv2: (b[0] & 0x20) !== 0,
                rsv3: (b[0] & 0x10) !== 0,
                opcode: b[0] & 0x0f,
                masked,
                payload,
                t: Date.now(),
            };
            this.frames.push(f);
            this._onFrame(f);
        }
        this._notify();
    }

    _onFrame(f) {
        if (f.rsv2 || f.rsv3 || (f.rsv1 && (!this.deflate || f.opcode === OP.CONT || f.opcode >= 8)))
            this.protocolErrors.push(`reserved bits on a server frame (opcode ${f.opcode})`);
        if (f.opcode >= 8) {
            if (!f.fin || f.payload.length > 125)
                this.protocolErrors.push(`bad control frame (opcode ${f.opcode}, fin ${f.fin}, ${f.payload.length} bytes)`);
            if (f.opcode === OP.PING) {
                this.pings.push(f.payload);
                if (this.autoPong && !this.closeSent && !this.sock.destroyed)
                    this.sock.write(encodeFrame({ opcode: OP.PONG, payload: f.payload }));
            } else if (f.opcode === OP.PONG) {
                this.pongs.push(f.payload);
            } else if (f.opcode === OP.CLOSE) {
                if (this.close === null) {
                    const p = f.payload;
                    this.close = {
                        code: p.length >= 2 ? p.readUInt16BE(0) : null,
                        reason: p.length > 2 ? p.subarray(2).toString('utf8') : '',
                        payload: p,
                    };
                    this.closeAt = Date.now();
                } else {
                    this.protocolErrors.push('a second close frame');
                }
            } else {
                this.protocolErrors.push(`unknown opcode ${f.opcode}`);
            }
            return;
        }
        if (this.close !== null)
            this.protocolErrors.push('a data frame after the close frame');
        if (f.opcode === OP.CONT) {
            if (!this._msg) {
                this.protocolErrors.push('a continuation without a message');
                return;
            }
        } else if (f.opcode === OP.TEXT || f.opcode === OP.BINARY) {
            if (this._msg)
                this.protocolErrors.push('a new message inside a fragmented one');
            this._msg = { opcode: f.opcode, compressed: f.rsv1, parts: [], frames: 0 };
        } else {
            this.protocolErrors.push(`unknown opcode ${f.opcode}`);
            return;
        }
        this._msg.parts.push(f.payload);
        this._msg.frames++;
        if (!f.fin)
            return;
        const m = this._msg;
        this._msg = null;
        let data = Buffer.concat(m.parts);
        if (m.compressed) {
            try {
                data = inflateMessage(data);
            } catch (e) {
                this.protocolErrors.push(`a compressed message that does not inflate: ${e.message}`);
            }
        }
        const msg = { opcode: m.opcode, data, compressed: m.compressed, frames: m.frames, t: Date.now() };
        if (m.opcode === OP.TEXT) {
            try {
                msg.text = new TextDecoder('utf-8', { fatal: true }).decode(data);
            } catch {
                this.protocolErrors.push('a text message that is not UTF-8');
                msg.text = data.toString('utf8');
            }
            try {
                msg.json = JSON.parse(msg.text);
            } catch {
                msg.json = undefined;
            }
        }
        this.messages.push(msg);
    }

    _notify() {
        for (const w of [...this._waiters])
            w();
    }

    /** Writes raw bytes (a Buffer, or an array written one by one). */
    write(data) {
        if (this.sock.destroyed)
            return;
        for (const d of Array.isArray(data) ? data : [data])
            this.sock.write(d);
    }

    /** Builds (encodeFrame options) and writes one frame. */
    frame(opts) {
        if (opts.opcode === OP.CLOSE)
            this.closeSent = true;
        this.write(encodeFrame(opts));
    }

    /** Sends a complete text message (string or object as JSON), compressed when asked. */
    sendText(s, { compress = false } = {}) {
        const buf = Buffer.from(typeof s === 'string' ? s : JSON.stringify(s), 'utf8');
        this.frame({ opcode: OP.TEXT, payload: compress ? deflateMessage(buf) : buf, rsv1: compress });
    }

    sendBinary(buf, { compress = false } = {}) {
        this.frame({ opcode: OP.BINARY, payload: compress ? deflateMessage(buf) : buf, rsv1: compress });
    }

    /** Sends a close frame with code (null: empty payload) and reason. */
    sendClose(code = 1000, reason = '') {
        this.frame({ opcode: OP.CLOSE, payload: code === null ? Buffer.alloc(0) : closePayload(code, reason) });
    }

    summary(max = 8) {
        const fr = this.frames.slice(-max).map((f) =>
            `${f.fin ? 'F' : '-'}${f.rsv1 ? '1' : '-'}op${f.opcode}:${f.payload.length}${
                f.opcode === OP.CLOSE && f.payload.length >= 2 ? '(' + f.payload.readUInt16BE(0) + ')' : ''}` +
            (f.opcode === OP.TEXT && f.payload.length < 200 && !f.rsv1 ? ' ' + f.payload.toString('utf8') : ''));
        return `${this.label}: status ${this.status}, ${this.frames.length} frames, ${this.messages.length} messages, ` +
            `close ${this.close ? this.close.code : '-'}, eof ${this.eof}, reset ${this.reset}, ended ${this.ended}` +
            `${this.error ? ' (' + this.error.message + ')' : ''}; last frames: [${fr.join(', ')}]`;
    }

    /**
     * Resolves with cond()'s first truthy value, re-checked whenever bytes arrive or the
     * connection ends; rejects after timeoutMs, or when the connection ended and cond() is
     * still false.
     */
    waitFor(cond, timeoutMs = 5000, what = 'condition') {
        return new Promise((resolve, reject) => {
            const check = () => {
                let v;
                try {
                    v = cond();
                } catch (e) {
                    done();
                    reject(e);
                    return;
                }
                if (v) {
                    done();
                    resolve(v);
                } else if (this.ended) {
                    done();
                    reject(new Error(`connection ended before ${what}; ${this.summary()}`));
                }
            };
            const timer = setTimeout(() => {
                done();
                reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${this.summary()}`));
            }, timeoutMs);
            const done = () => {
                clearTimeout(timer);
                this._waiters.delete(check);
            };
            this._waiters.add(check);
            check();
        });
    }

    /** The next not yet consumed message matching predicate (skipped ones are consumed). */
    next(predicate = () => true, timeoutMs = 5000, what = 'a matching message') {
        return this.waitFor(() => {
            while (this._cursor < this.messages.length) {
                const m = this.messages[this._cursor++];
                if (predicate(m))
                    return m;
            }
            return null;
        }, timeoutMs, what);
    }

    /** The next JSON op message with op === name (and matching pred). */
    nextOp(name, pred = () => true, timeoutMs = 5000) {
        return this.next((m) => m.json && m.json.op === name && pred(m.json), timeoutMs, `op ${name}`).then((m) => m.json);
    }

    /**
     * Waits for the server's close frame and then for the end of the TCP connection; returns
     * {code, reason, eofMs (from the close frame to the end)}.
     */
    async waitClosed(timeoutMs = 5000) {
        await this.waitForEnd(timeoutMs);
        if (!this.close)
            throw new Error(`the connection ended without a close frame; ${this.summary()}`);
        return { ...this.close, eofMs: this.endedAt - this.closeAt };
    }

    /** Resolves once the TCP connection ended (EOF or reset), bounded. */
    waitForEnd(timeoutMs = 5000) {
        return new Promise((resolve, reject) => {
            const check = () => {
                if (this.ended) {
                    done();
                    resolve(this);
                }
            };
            const timer = setTimeout(() => {
                done();
                reject(new Error(`the connection did not end within ${timeoutMs} ms; ${this.summary()}`));
            }, timeoutMs);
            const done = () => {
                clearTimeout(timer);
                this._waiters.delete(check);
            };
            this._waiters.add(check);
            check();
        });
    }

    destroy() {
        if (this.sock && !this.sock.destroyed)
            this.sock.destroy();
    }
}

/**
 * The npm `ws` client with recording and bounded waits. Resolves once open (rejects with the
 * handshake failure, including the HTTP status when there was one). Records messages
 * [{text, json, binary, t}] and the close {code, reason}. opts: protocols, any `ws` option
 * (perMessageDeflate, headers, maxPayload...), t.
 */
export function openWs(base, path = '/ws', opts = {}) {
    const { protocols, t, timeoutMs = 5000, ...wsOpts } = opts;
    const url = base.replace(/^http/, 'ws') + path;
    const ws = new WebSocket(url, protocols, { perMessageDeflate: false, handshakeTimeout: timeoutMs, ...tlsClientOptions(), ...wsOpts });
    const c = {
        ws,
        label: `ws ${path}`,
        messages: [],
        closed: null,
        error: null,
        upgradeHeaders: null,
        _waiters: new Set(),
        _cursor: 0,
    };
    if (t)
        t.after(() => ws.terminate());
    const notify = () => {
        for (const w of [...c._waiters])
            w();
    };
    ws.on('upgrade', (res) => (c.upgradeHeaders = res.headers));
    ws.on('message', (data, isBinary) => {
        const m = { binary: isBinary, data, t: Date.now() };
        if (!isBinary) {
            m.text = data.toString('utf8');
            try {
                m.json = JSON.parse(m.text);
            } catch {
                m.json = undefined;
            }
        }
        c.messages.push(m);
        notify();
    });
    ws.on('close', (code, reason) => {
        c.closed = { code, reason: reason.toString('utf8'), t: Date.now() };
        notify();
    });
    ws.on('error', (e) => {
        c.error = e;
        notify();
    });
    c.ops = () => c.messages.filter((m) => m.json).map((m) => m.json);
    c.send = (obj, o = {}) => ws.send(typeof obj === 'string' || Buffer.isBuffer(obj) ? obj : JSON.stringify(obj), o);
    c.summary = () => {
        const tail = c.messages.slice(-8).map((m) => (m.binary ? `binary(${m.data.length})` : m.text.slice(0, 160)));
        return `${c.label}: ${c.messages.length} messages, closed ${c.closed ? c.closed.code : '-'}` +
            `${c.error ? ' (' + c.error.message + ')' : ''}; last: [${tail.join(', ')}]`;
    };
    c.waitFor = (cond, ms = 5000, what = 'condition') =>
        new Promise((resolve, reject) => {
            const check = () => {
                let v;
                try {
                    v = cond();
                } catch (e) {
                    done();
                    reject(e);
                    return;
                }
                if (v) {
                    done();
                    resolve(v);
                } else if (c.closed) {
                    done();
                    reject(new Error(`connection closed before ${what}; ${c.summary()}`));
                }
            };
            const timer = setTimeout(() => {
                done();
                reject(new Error(`timed out after ${ms} ms waiting for ${what}; ${c.summary()}`));
            }, ms);
            const done = () => {
                clearTimeout(timer);
                c._waiters.delete(check);
            };
            c._waiters.add(check);
            check();
        });
    /** The next not yet consumed JSON op satisfying pred (skipped ones are consumed). */
    c.next = (pred = () => true, ms = 5000, what = 'a matching op') =>
        c.waitFor(() => {
            while (c._cursor < c.messages.length) {
                const m = c.messages[c._cursor++];
                if (m.json && pred(m.json))
                    return m.json;
            }
            return null;
        }, ms, what);
    /** Marks every message received so far as consumed (next() only looks at later ones). */
    c.skip = () => {
        c._cursor = c.messages.length;
    };
    c.nextOp = (op, pred = () => true, ms = 5000) => c.next((j) => j.op === op && pred(j), ms, `op ${op}`);
    /** Sends obj and returns the reply carrying its ref (obj gets a fresh ref if it has none). */
    let refSeq = 0;
    c.request = (obj, ms = 5000) => {
        const ref = obj.ref ?? `r${++refSeq}`;
        c.send({ ...obj, ref });
        return c.waitFor(() => c.messages.find((m) => m.json && m.json.ref === ref)?.json, ms, `the reply to ref ${ref} (${JSON.stringify(obj).slice(0, 100)})`);
    };
    c.waitClose = (ms = 5000) =>
        new Promise((resolve, reject) => {
            const check = () => {
                if (c.closed) {
                    done();
                    resolve(c.closed);
                }
            };
            const timer = setTimeout(() => {
                done();
                reject(new Error(`no close within ${ms} ms; ${c.summary()}`));
            }, ms);
            const done = () => {
                clearTimeout(timer);
                c._waiters.delete(check);
            };
            c._waiters.add(check);
            check();
        });
    c.close = () => ws.terminate();
    return new Promise((resolve, reject) => {
        ws.once('open', () => resolve(c));
        ws.once('unexpected-response', (req, res) => {
            const parts = [];
            res.on('data', (d) => parts.push(d));
            res.on('end', () => {
                const e = new Error(`${c.label}: handshake answered ${res.statusCode}`);
                e.status = res.statusCode;
                e.body = Buffer.concat(parts).toString('utf8');
                e.headers = res.headers;
                reject(e);
                req.destroy();
            });
        });
        ws.once('error', (e) => reject(e));
    });
}
