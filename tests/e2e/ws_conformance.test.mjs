/*
 * WebSocket protocol conformance (RFC 6455, RFC 7692) against GET /ws/echo (--ws-echo), grouped
 * like the Autobahn|Testsuite sections: 1 framing, 2 pings/pongs, 3 reserved bits, 4 opcodes,
 * 5 fragmentation, 6 UTF-8, 7 close handling, 9 limits (bounded), 12/13 compression with the
 * npm ws client under different offers. docs/conformance.md maps every test to the Autobahn
 * case numbers and lists what is not covered.
 *
 * The frames are built here (wslib.mjs encodeFrame: masking, any bits, any opcode) and sent on
 * raw sockets; every frame the server sends back is checked (unmasked, no reserved bits
 * unless compressed, control frames FIN and <= 125 bytes). A violation must be answered with a
 * close frame carrying the RFC code (1002, 1007, 1009) and the server must then end the TCP
 * connection (EOF within ~2 s). After each group, GET /healthz proves the server survived.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { assertAlive, prng, sharedServer } from './lib.mjs';
import { OP, RawWS, closePayload, deflateMessage, encodeFrame, openWs, parseExtensions } from './wslib.mjs';

const MAX = 2000000;
const echo = sharedServer(before, after, ['--ws-echo', '--max-message-size', String(MAX)]);

/** Opens a raw connection to /ws/echo (101 asserted). */
async function conn(t, opts = {}) {
    const ws = await RawWS.open(echo.srv.port, '/ws/echo', { t, ...opts });
    assert.equal(ws.status, 101, `${ws.statusLine} ${ws.text}`);
    return ws;
}

/** The server must close with `code`, then end the TCP connection within ~2 s. */
async function expectClose(ws, code, what = '') {
    const c = await ws.waitClosed(5000);
    assert.equal(c.code, code, `${what}: close code ${c.code} (${c.reason}), expected ${code}; ${ws.summary()}`);
    assert.ok(c.eofMs <= 2500, `${what}: the TCP connection ended ${c.eofMs} ms after the close frame`);
    assert.deepEqual(ws.protocolErrors, [], what);
    return c;
}

/** Sends a message and waits for its echo; returns the echoed message. */
async function roundTrip(ws, opcode, payload, { compress = false, timeoutMs = 10000 } = {}) {
    const before = ws.messages.length;
    ws.frame({ opcode, payload: compress ? deflateMessage(payload) : payload, rsv1: compress });
    const m = await ws.waitFor(() => ws.messages[before], timeoutMs, `the echo of a ${payload.length}-byte ${opcode === OP.TEXT ? 'text' : 'binary'} message`);
    return m;
}

function assertEcho(m, opcode, payload, what) {
    assert.equal(m.opcode, opcode, `${what}: echoed as opcode ${m.opcode}`);
    assert.equal(m.data.length, payload.length, `${what}: echoed length`);
    assert.ok(m.data.equals(payload), `${what}: echoed bytes differ`);
}

/** Valid UTF-8 text of about n bytes (mixed 1-4 byte characters), as a Buffer of exactly n bytes. */
function utf8Text(n) {
    const unit = Buffer.from('aé€😀Hello κόσμε ', 'utf8');
    const out = Buffer.alloc(n);
    let i = 0;
    while (i < n) {
        /* Copy whole characters only. */
        for (const ch of unit.toString('utf8')) {
            const b = Buffer.from(ch, 'utf8');
            if (i + b.length > n) {
                out.fill(0x61, i);
                return out;
            }
            b.copy(out, i);
            i += b.length;
        }
    }
    return out;
}

/* ------------------------------------------------------------------------------------------ */

describe('1 framing', () => {
    const sizes = [0, 1, 125, 126, 127, 128, 65535, 65536, 65537, 1 << 20];
    for (const [opcode, kind] of [[OP.TEXT, 'text'], [OP.BINARY, 'binary']]) {
        it(`1.${opcode}.x ${kind} messages of ${sizes.join(', ')} bytes are echoed byte for byte as ${kind}`, { timeout: 20000 }, async (t) => {
            const ws = await conn(t);
            for (const n of sizes) {
                const payload = opcode === OP.TEXT ? utf8Text(n) : crypto.randomBytes(n);
                assertEcho(await roundTrip(ws, opcode, payload), opcode, payload, `${kind} ${n}`);
            }
            assert.deepEqual(ws.protocolErrors, []);
            /* The server's frames use the minimal length encoding and are not fragmented needlessly. */
            assert.ok(ws.frames.every((f) => !f.masked));
        });

        it(`1.${opcode}.8 a 65536-byte ${kind} frame written in chunks of 997 bytes`, { timeout: 10000 }, async (t) => {
            const ws = await conn(t);
            const payload = opcode === OP.TEXT ? utf8Text(65536) : crypto.randomBytes(65536);
            const frame = encodeFrame({ opcode, payload });
            for (let i = 0; i < frame.length; i += 997)
                ws.write(frame.subarray(i, i + 997));
            const m = await ws.waitFor(() => ws.messages[0], 10000, 'the echo');
            assertEcho(m, opcode, payload, 'chopped');
        });
    }

    it('a frame written one byte at a time, and several frames in one write', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        const f = encodeFrame({ opcode: OP.TEXT, payload: 'byte by byte' });
        for (let i = 0; i < f.length; i++)
            ws.write(f.subarray(i, i + 1));
        assert.equal((await ws.waitFor(() => ws.messages[0], 5000, 'the echo')).text, 'byte by byte');
        ws.write(Buffer.concat(['one', 'two', 'three'].map((s) => encodeFrame({ opcode: OP.TEXT, payload: s }))));
        await ws.waitFor(() => ws.messages.length >= 4, 5000, 'three echoes');
        assert.deepEqual(ws.messages.slice(1).map((m) => m.text), ['one', 'two', 'three']);
    });

    it('an unmasked client frame: close 1002', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.frame({ opcode: OP.TEXT, payload: 'unmasked', mask: false });
        await expectClose(ws, 1002, 'unmasked text');
        const ws2 = await conn(t);
        ws2.frame({ opcode: OP.PING, payload: 'x', mask: false });
        await expectClose(ws2, 1002, 'unmasked ping');
    });

    it('a 64-bit length with the most significant bit set: close 1002 (RFC 6455 5.2: the bit must be 0)', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        const hdr = Buffer.from([0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]);
        ws.write(hdr);
        const c = await ws.waitClosed(5000);
        assert.equal(c.code, 1002, `close ${c.code}`);
        await assertAlive(echo.srv, '1 framing');
    });
});

/* ------------------------------------------------------------------------------------------ */

describe('2 pings and pongs', () => {
    it('2.1-2.4 a ping (empty, text, binary, 125 bytes) is answered by a pong with the same payload', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        const payloads = [Buffer.alloc(0), Buffer.from('Hello, world!'), Buffer.from([0, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0, 0xff]), crypto.randomBytes(125)];
        for (const [i, p] of payloads.entries()) {
            ws.frame({ opcode: OP.PING, payload: p });
            await ws.waitFor(() => ws.pongs.length > i, 5000, `pong ${i}`);
            assert.ok(ws.pongs[i].equals(p), `pong ${i} payload`);
        }
        assert.deepEqual(ws.protocolErrors, []);
    });

    it('2.5 a ping with a 126-byte payload: close 1002', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.frame({ opcode: OP.PING, payload: Buffer.alloc(126, 0xfe) });
        await expectClose(ws, 1002, 'ping 126');
        assert.equal(ws.pongs.length, 0);
    });

    it('2.6 a 125-byte ping written one byte at a time', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        const p = crypto.randomBytes(125);
        const f = encodeFrame({ opcode: OP.PING, payload: p });
        for (let i = 0; i < f.length; i++)
            ws.write(f.subarray(i, i + 1));
        await ws.waitFor(() => ws.pongs.length >= 1, 5000, 'the pong');
        assert.ok(ws.pongs[0].equals(p));
    });

    it('2.7-2.9 unsolicited pongs are ignored; a ping after them gets exactly one pong', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.frame({ opcode: OP.PONG });
        ws.frame({ opcode: OP.PONG, payload: 'unsolicited' });
        ws.frame({ opcode: OP.PING, payload: 'ping after pongs' });
        ws.frame({ opcode: OP.TEXT, payload: 'after' });
        await ws.waitFor(() => ws.messages.length >= 1, 5000, 'the echo after');
        assert.deepEqual(ws.pongs.map((p) => p.toString()), ['ping after pongs']);
        assert.equal(ws.messages[0].text, 'after');
        /* The pong came before the echo of the message sent after the ping. */
        const iPong = ws.frames.findIndex((f) => f.opcode === OP.PONG);
        const iText = ws.frames.findIndex((f) => f.opcode === OP.TEXT);
        assert.ok(iPong < iText);
    });

    it('2.10/2.11 ten pings (also written in chopped pieces) get ten pongs, in order', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        const frames = Buffer.concat(Array.from({ length: 10 }, (_, i) => encodeFrame({ opcode: OP.PING, payload: `payload-${i}` })));
        ws.write(frames);
        for (let i = 0; i < frames.length; i += 7)
            ws.write(frames.subarray(i, i + 7));
        await ws.waitFor(() => ws.pongs.length >= 20, 5000, '20 pongs');
        assert.deepEqual(ws.pongs.map((p) => p.toString()), [...Array.from({ length: 10 }, (_, i) => `payload-${i}`), ...Array.from({ length: 10 }, (_, i) => `payload-${i}`)]);
        await assertAlive(echo.srv, '2 pings and pongs');
    });
});

/* ------------------------------------------------------------------------------------------ */

describe('3 reserved bits', () => {
    const cases = [
        ['3.1 RSV2 on a text frame', { opcode: OP.TEXT, payload: 'x', rsv2: true }],
        ['3.3 RSV3 on a text frame', { opcode: OP.TEXT, payload: 'x', rsv3: true }],
        ['3.4 RSV1+RSV2+RSV3 on a text frame', { opcode: OP.TEXT, payload: 'x', rsv1: true, rsv2: true, rsv3: true }],
        ['3.2 RSV1 on a text frame without permessage-deflate', { opcode: OP.TEXT, payload: 'x', rsv1: true }],
        ['3.5 RSV1+RSV3 on a binary frame', { opcode: OP.BINARY, payload: Buffer.from([1, 2, 3]), rsv1: true, rsv3: true }],
        ['3.6 RSV2+RSV3 on a ping', { opcode: OP.PING, payload: 'p', rsv2: true, rsv3: true }],
        ['3.7 all reserved bits on a close', { opcode: OP.CLOSE, payload: closePayload(1000), rsv1: true, rsv2: true, rsv3: true }],
    ];
    for (const [name, frame] of cases) {
        it(`${name}: close 1002 (after echoing the message sent before it)`, { timeout: 10000 }, async (t) => {
            const ws = await conn(t);
            ws.frame({ opcode: OP.TEXT, payload: 'before' });
            await ws.waitFor(() => ws.messages.length >= 1, 5000, 'the echo of the message before');
            ws.frame(frame);
            ws.frame({ opcode: OP.PING, payload: 'after' });
            await expectClose(ws, 1002, name);
            assert.deepEqual(ws.messages.map((m) => m.text), ['before']);
            assert.equal(ws.pongs.length, 0, 'nothing after the violation is processed');
        });
    }

    it('with permessage-deflate: RSV1 on a continuation frame, on a ping, and RSV2 on a compressed frame: close 1002', { timeout: 10000 }, async (t) => {
        const ext = 'permessage-deflate';
        const a = await conn(t, { extensions: ext });
        assert.equal(a.deflate, true);
        a.frame({ opcode: OP.TEXT, payload: deflateMessage(Buffer.from('first part')), rsv1: true, fin: false });
        a.frame({ opcode: OP.CONT, payload: Buffer.alloc(0), rsv1: true });
        await expectClose(a, 1002, 'RSV1 on a continuation');
        const b = await conn(t, { extensions: ext });
        b.frame({ opcode: OP.PING, payload: 'x', rsv1: true });
        await expectClose(b, 1002, 'RSV1 on a ping');
        const c = await conn(t, { extensions: ext });
        c.frame({ opcode: OP.TEXT, payload: deflateMessage(Buffer.from('x')), rsv1: true, rsv2: true });
        await expectClose(c, 1002, 'RSV2 on a compressed frame');
        await assertAlive(echo.srv, '3 reserved bits');
    });
});

/* ------------------------------------------------------------------------------------------ */

describe('4 opcodes', () => {
    for (const opcode of [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]) {
        const section = opcode < 8 ? `4.1.${opcode - 2}` : `4.2.${opcode - 10}`;
        it(`${section} reserved opcode ${opcode}: close 1002, with and without payload, after a valid message`, { timeout: 10000 }, async (t) => {
            for (const payload of [Buffer.alloc(0), Buffer.from('reserved')]) {
                const ws = await conn(t);
                ws.frame({ opcode: OP.TEXT, payload: 'valid' });
                await ws.waitFor(() => ws.messages.length >= 1, 5000, 'the echo of the valid message');
                ws.frame({ opcode, payload });
                ws.frame({ opcode: OP.PING });
                await expectClose(ws, 1002, `opcode ${opcode}`);
                assert.deepEqual(ws.messages.map((m) => m.text), ['valid']);
                assert.equal(ws.pongs.length, 0);
            }
        });
    }

    it('3.2/4.1.2 (strict) messages that arrived in the same read as a violation are still echoed before the close', { timeout: 10000 }, async (t) => {
        for (const bad of [{ opcode: 5 }, { opcode: OP.TEXT, payload: 'x', rsv2: true }]) {
            const ws = await conn(t);
            ws.write(Buffer.concat([encodeFrame({ opcode: OP.TEXT, payload: 'valid' }), encodeFrame({ opcode: OP.PING, payload: 'p' }), encodeFrame(bad)]));
            await expectClose(ws, 1002, `one write with ${JSON.stringify(bad)}`);
            assert.deepEqual(ws.messages.map((m) => m.text), ['valid'], 'Autobahn counts a missing echo as NON-STRICT');
            assert.equal(ws.pongs.length, 1, 'the ping before the violation is answered');
        }
    });

    it('(the server survived)', { timeout: 5000 }, async () => {
        await assertAlive(echo.srv, '4 opcodes');
    });
});

/* ------------------------------------------------------------------------------------------ */

describe('5 fragmentation', () => {
    it('5.1/5.2 a fragmented ping or pong (FIN=0): close 1002', { timeout: 10000 }, async (t) => {
        for (const opcode of [OP.PING, OP.PONG]) {
            const ws = await conn(t);
            ws.frame({ opcode, payload: 'frag', fin: false });
            ws.frame({ opcode: OP.CONT, payload: 'ment' });
            await expectClose(ws, 1002, `fragmented opcode ${opcode}`);
        }
    });

    it('5.3-5.5 text in two fragments (one write, separate writes, byte by byte) is echoed as one message', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        const f1 = encodeFrame({ opcode: OP.TEXT, payload: 'fragment1', fin: false });
        const f2 = encodeFrame({ opcode: OP.CONT, payload: 'fragment2' });
        ws.write(Buffer.concat([f1, f2]));
        ws.write([f1, f2]);
        const both = Buffer.concat([f1, f2]);
        for (let i = 0; i < both.length; i++)
            ws.write(both.subarray(i, i + 1));
        await ws.waitFor(() => ws.messages.length >= 3, 5000, 'three echoes');
        assert.deepEqual(ws.messages.map((m) => m.text), ['fragment1fragment2', 'fragment1fragment2', 'fragment1fragment2']);
    });

    it('5.6-5.8 / 5.19-5.20 pings interleaved with fragments: pongs in order, then the whole message', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.frame({ opcode: OP.TEXT, payload: 'frag1 ', fin: false });
        ws.frame({ opcode: OP.PING, payload: 'ping-1' });
        ws.frame({ opcode: OP.CONT, payload: 'frag2 ', fin: false });
        ws.frame({ opcode: OP.PING, payload: 'ping-2' });
        ws.frame({ opcode: OP.PONG, payload: 'unsolicited' });
        ws.frame({ opcode: OP.CONT, payload: 'frag3 ', fin: false });
        ws.frame({ opcode: OP.PING, payload: 'ping-3' });
        ws.frame({ opcode: OP.CONT, payload: 'frag4' });
        await ws.waitFor(() => ws.messages.length >= 1, 5000, 'the echo');
        assert.deepEqual(ws.pongs.map((p) => p.toString()), ['ping-1', 'ping-2', 'ping-3']);
        assert.equal(ws.messages[0].text, 'frag1 frag2 frag3 frag4');
        const order = ws.frames.map((f) => f.opcode);
        assert.ok(order.lastIndexOf(OP.PONG) < order.indexOf(OP.TEXT), 'every pong before the echo');
    });

    it('binary in 1000 fragments of 10 bytes is echoed as one 10000-byte message; empty fragments are fine', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        const payload = crypto.randomBytes(10000);
        const frames = [];
        for (let i = 0; i < 1000; i++)
            frames.push(encodeFrame({ opcode: i === 0 ? OP.BINARY : OP.CONT, payload: payload.subarray(i * 10, i * 10 + 10), fin: i === 999 }));
        ws.write(Buffer.concat(frames));
        assertEcho(await ws.waitFor(() => ws.messages[0], 5000, 'the echo'), OP.BINARY, payload, '1000 fragments');
        ws.frame({ opcode: OP.TEXT, payload: '', fin: false });
        ws.frame({ opcode: OP.CONT, payload: '', fin: false });
        ws.frame({ opcode: OP.CONT, payload: 'x', fin: false });
        ws.frame({ opcode: OP.CONT, payload: '' });
        assert.equal((await ws.waitFor(() => ws.messages[1], 5000, 'the second echo')).text, 'x');
    });

    const bad = [
        ['5.9 a continuation (FIN) without a message', [{ opcode: OP.CONT, payload: 'cont' }]],
        ['5.10 a continuation (not FIN) without a message', [{ opcode: OP.CONT, payload: 'cont', fin: false }]],
        ['5.12 a continuation without a message, after a complete message', [{ opcode: OP.TEXT, payload: 'ok' }, { opcode: OP.CONT, payload: 'x' }]],
        ['5.15 a new text frame inside a fragmented message', [{ opcode: OP.TEXT, payload: 'a', fin: false }, { opcode: OP.CONT, payload: 'b', fin: false }, { opcode: OP.TEXT, payload: 'c' }]],
        ['5.17 a new binary frame (not FIN) inside a fragmented text message', [{ opcode: OP.TEXT, payload: 'a', fin: false }, { opcode: OP.BINARY, payload: 'b', fin: false }]],
        ['5.18 two text frames without FIN', [{ opcode: OP.TEXT, payload: 'a', fin: false }, { opcode: OP.TEXT, payload: 'b' }]],
    ];
    for (const [name, frames] of bad) {
        it(`${name}: close 1002`, { timeout: 10000 }, async (t) => {
            const ws = await conn(t);
            for (const f of frames)
                ws.frame(f);
            await expectClose(ws, 1002, name);
            assert.ok(ws.messages.every((m) => m.text === 'ok'), 'no partial message echoed');
        });
    }

    it('(the server survived)', { timeout: 5000 }, async () => {
        await assertAlive(echo.srv, '5 fragmentation');
    });
});

/* ------------------------------------------------------------------------------------------ */

describe('6 UTF-8 handling', () => {
    const valid = [
        ['6.2 κόσμε', Buffer.from('κόσμε', 'utf8')],
        ['6.5 boundaries: U+007F, U+0080, U+07FF, U+0800, U+FFFF, U+10000, U+10FFFF', Buffer.from('\u007f\u0080\u07ff\u0800\uffff\u{10000}\u{10ffff}', 'utf8')],
        ['6.3 noncharacters U+FFFE, U+FDD0 are valid', Buffer.from('\ufffe\ufdd0', 'utf8')],
        ['6.1 empty', Buffer.alloc(0)],
    ];
    it('6.1-6.5 valid UTF-8 is echoed, whole and split at every byte across fragments', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        for (const [name, p] of valid)
            assertEcho(await roundTrip(ws, OP.TEXT, p), OP.TEXT, p, name);
        const p = Buffer.from('Hello-µ@ßöäüàá-UTF-8!! κόσμε 😀', 'utf8');
        for (let cut = 1; cut < p.length; cut++) {
            const before = ws.messages.length;
            ws.frame({ opcode: OP.TEXT, payload: p.subarray(0, cut), fin: false });
            ws.frame({ opcode: OP.CONT, payload: p.subarray(cut) });
            assertEcho(await ws.waitFor(() => ws.messages[before], 5000, `the echo split at ${cut}`), OP.TEXT, p, `split at ${cut}`);
        }
        /* A character in three fragments of one byte and one of the rest. */
        const emoji = Buffer.from('😀', 'utf8');
        const before = ws.messages.length;
        ws.frame({ opcode: OP.TEXT, payload: emoji.subarray(0, 1), fin: false });
        ws.frame({ opcode: OP.CONT, payload: emoji.subarray(1, 2), fin: false });
        ws.frame({ opcode: OP.CONT, payload: emoji.subarray(2, 3), fin: false });
        ws.frame({ opcode: OP.CONT, payload: emoji.subarray(3) });
        assertEcho(await ws.waitFor(() => ws.messages[before], 5000, 'the emoji echo'), OP.TEXT, emoji, 'emoji in 4 fragments');
        assert.deepEqual(ws.protocolErrors, []);
    });

    const invalid = [
        ['6.3.1 invalid sequence inside text', Buffer.from('cebae1bdb9cf83cebcceb5eda080656469746564', 'hex')],
        ['6.6 truncated 2-byte sequence at the end', Buffer.from('cebae1bdb9cf83cebcce', 'hex')],
        ['6.8 code point above U+10FFFF (f4 90 80 80)', Buffer.from('f4908080', 'hex')],
        ['6.8 5-byte sequence', Buffer.from('f888808080', 'hex')],
        ['6.9 overlong "/" (c0 af)', Buffer.from('c0af', 'hex')],
        ['6.9 overlong 3-byte (e0 80 af)', Buffer.from('e080af', 'hex')],
        ['6.10 overlong NUL (c0 80)', Buffer.from('c080', 'hex')],
        ['6.12 lone continuation byte', Buffer.from('61806162', 'hex')],
        ['6.14 lone start byte followed by space', Buffer.from('c020', 'hex')],
        ['6.17 0xfe / 0xff', Buffer.from('fe', 'hex')],
        ['6.19 UTF-16 surrogate U+D800 (ed a0 80)', Buffer.from('eda080', 'hex')],
        ['6.20 surrogate pair as two 3-byte sequences', Buffer.from('eda0bdedb2a9', 'hex')],
    ];
    for (const [name, p] of invalid) {
        it(`${name}: close 1007`, { timeout: 10000 }, async (t) => {
            const ws = await conn(t);
            ws.frame({ opcode: OP.TEXT, payload: p });
            await expectClose(ws, 1007, name);
            assert.equal(ws.messages.length, 0);
        });
    }

    it('6.3.2 invalid UTF-8 split across fragments (valid parts, invalid join): close 1007', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        /* ed | a0 80: each fragment on its own could still become valid. */
        ws.frame({ opcode: OP.TEXT, payload: Buffer.from('61ed', 'hex'), fin: false });
        ws.frame({ opcode: OP.CONT, payload: Buffer.from('a080', 'hex') });
        await expectClose(ws, 1007, 'surrogate split across fragments');
        const ws2 = await conn(t);
        /* A message whose last fragment ends inside a character. */
        ws2.frame({ opcode: OP.TEXT, payload: Buffer.from('ceba', 'hex'), fin: false });
        ws2.frame({ opcode: OP.CONT, payload: Buffer.from('e1bd', 'hex') });
        await expectClose(ws2, 1007, 'message ends inside a character');
    });

    it('6.4.x fail fast: invalid UTF-8 in the first fragment closes 1007 before the message is complete', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.frame({ opcode: OP.TEXT, payload: Buffer.from('cebae1bdb9cf83cebcceb5f4908080', 'hex'), fin: false });
        /* The rest never comes. */
        await expectClose(ws, 1007, 'invalid first fragment');
        const ws2 = await conn(t);
        ws2.frame({ opcode: OP.TEXT, payload: Buffer.from('cebae1bdb9cf83cebcceb5', 'hex'), fin: false });
        ws2.frame({ opcode: OP.CONT, payload: Buffer.from('f4908080', 'hex'), fin: false });
        await expectClose(ws2, 1007, 'invalid second fragment');
    });

    it('binary messages are not UTF-8 checked', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        const p = Buffer.from('c0afeda080fffe', 'hex');
        assertEcho(await roundTrip(ws, OP.BINARY, p), OP.BINARY, p, 'binary with invalid UTF-8');
    });

    it('compressed text that inflates to invalid UTF-8: close 1007; a corrupt compressed payload: close 1007', { timeout: 10000 }, async (t) => {
        const ws = await conn(t, { extensions: 'permessage-deflate' });
        ws.frame({ opcode: OP.TEXT, payload: deflateMessage(Buffer.from('abc\xc0\xafdef', 'latin1')), rsv1: true });
        await expectClose(ws, 1007, 'compressed invalid UTF-8');
        const ws2 = await conn(t, { extensions: 'permessage-deflate' });
        ws2.frame({ opcode: OP.BINARY, payload: Buffer.from([0xff, 0xff, 0xff, 0xff, 0x00, 0x12]), rsv1: true });
        await expectClose(ws2, 1007, 'corrupt deflate data');
        await assertAlive(echo.srv, '6 UTF-8 handling');
    });
});

/* ------------------------------------------------------------------------------------------ */

describe('7 close handling', () => {
    it('7.1.1 a message then close 1000: the message is echoed, the close answered with 1000, then EOF', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        /* One write: the server must answer what came before the close before closing. */
        ws.write(Buffer.concat([encodeFrame({ opcode: OP.TEXT, payload: 'Hello World!' }), encodeFrame({ opcode: OP.CLOSE, payload: closePayload(1000) })]));
        ws.closeSent = true;
        await expectClose(ws, 1000, '7.1.1');
        assert.deepEqual(ws.messages.map((m) => m.text), ['Hello World!'], 'the message before the close is echoed');
    });

    it('7.1.2-7.1.4 after the close frame, nothing is processed (a second close, a ping, a message)', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.write(Buffer.concat([
            encodeFrame({ opcode: OP.CLOSE, payload: closePayload(1000) }),
            encodeFrame({ opcode: OP.CLOSE, payload: closePayload(1000) }),
            encodeFrame({ opcode: OP.PING, payload: 'ping' }),
            encodeFrame({ opcode: OP.TEXT, payload: 'text' }),
        ]));
        await expectClose(ws, 1000, '7.1.2-7.1.4');
        assert.equal(ws.pongs.length, 0);
        assert.equal(ws.messages.length, 0);
        assert.equal(ws.frames.filter((f) => f.opcode === OP.CLOSE).length, 1);
    });

    it('7.1.5 a fragmented message interrupted by a close: the close is answered, nothing echoed', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.frame({ opcode: OP.TEXT, payload: 'fragment1', fin: false });
        ws.sendClose(1000);
        ws.frame({ opcode: OP.CONT, payload: 'fragment2' });
        await expectClose(ws, 1000, '7.1.5');
        assert.equal(ws.messages.length, 0);
    });

    it('7.1.6 a large message, then close: the message is echoed completely before the close', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        const p = crypto.randomBytes(256 << 10);
        ws.write(Buffer.concat([
            encodeFrame({ opcode: OP.BINARY, payload: p }),
            encodeFrame({ opcode: OP.PING, payload: 'ping' }),
            encodeFrame({ opcode: OP.CLOSE, payload: closePayload(1000) }),
        ]));
        ws.closeSent = true;
        await expectClose(ws, 1000, '7.1.6');
        assert.equal(ws.messages.length, 1, 'the message before the close is echoed');
        assertEcho(ws.messages[0], OP.BINARY, p, '7.1.6');
        assert.deepEqual(ws.pongs.map((x) => x.toString()), ['ping'], 'the ping before the close is answered');
    });

    it('7.3.1 an empty close payload is answered with a close (empty or 1000)', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.sendClose(null);
        const c = await ws.waitClosed(5000);
        assert.ok(c.code === null || c.code === 1000, `close ${c.code}`);
        assert.ok(c.eofMs <= 2500);
    });

    it('7.3.2 a close payload of 1 byte: close 1002', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.frame({ opcode: OP.CLOSE, payload: Buffer.from([0x03]) });
        await expectClose(ws, 1002, '7.3.2');
    });

    it('7.3.3-7.3.5 close 1000 with no reason, a short reason, and a 123-byte reason is answered with 1000', { timeout: 10000 }, async (t) => {
        for (const reason of ['', 'Hello World!', 'ü'.repeat(61) + 'x']) {
            const ws = await conn(t);
            assert.ok(Buffer.byteLength(reason) <= 123);
            ws.sendClose(1000, reason);
            await expectClose(ws, 1000, `reason of ${Buffer.byteLength(reason)} bytes`);
        }
    });

    it('7.3.6 a close with a 124-byte reason (payload 126 > 125): close 1002', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.frame({ opcode: OP.CLOSE, payload: closePayload(1000, 'r'.repeat(124)) });
        await expectClose(ws, 1002, '7.3.6');
    });

    it('7.5.1 a close reason that is not UTF-8: close 1007', { timeout: 10000 }, async (t) => {
        const ws = await conn(t);
        ws.frame({ opcode: OP.CLOSE, payload: Buffer.concat([closePayload(1000), Buffer.from('cebae1bdb9cf83cebcceb5eda080656469746564', 'hex')]) });
        await expectClose(ws, 1007, '7.5.1');
    });

    const validCodes = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999];
    it(`7.7.x valid close codes ${validCodes.join(', ')} are echoed back`, { timeout: 15000 }, async (t) => {
        for (const code of validCodes) {
            const ws = await conn(t);
            ws.sendClose(code, 'bye');
            await expectClose(ws, code, `code ${code}`);
        }
    });

    const invalidCodes = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535];
    it(`7.9.x invalid close codes ${invalidCodes.join(', ')}: close 1002`, { timeout: 15000 }, async (t) => {
        for (const code of invalidCodes) {
            const ws = await conn(t);
            ws.sendClose(code);
            await expectClose(ws, 1002, `code ${code}`);
        }
    });

    it('a client that closes the TCP connection without a close frame is cleaned up', { timeout: 10000 }, async (t) => {
        for (let i = 0; i < 20; i++) {
            const ws = await conn(t);
            ws.frame({ opcode: OP.TEXT, payload: 'x'.repeat(1000), fin: false });
            ws.destroy();
        }
        await assertAlive(echo.srv, '7 close handling');
    });
});

/* ------------------------------------------------------------------------------------------ */

describe('9 limits and performance (bounded)', () => {
    it('9.1/9.2 text and binary messages of 64 KiB, 256 KiB, 1 MiB and 1,999,999 bytes are echoed', { timeout: 30000 }, async (t) => {
        const ws = await conn(t);
        for (const n of [64 << 10, 256 << 10, 1 << 20, MAX - 1]) {
            const tp = utf8Text(n);
            assertEcho(await roundTrip(ws, OP.TEXT, tp), OP.TEXT, tp, `text ${n}`);
            const bp = crypto.randomBytes(n);
            assertEcho(await roundTrip(ws, OP.BINARY, bp), OP.BINARY, bp, `binary ${n}`);
        }
    });

    it('9.3/9.4 a 1 MiB message in fragments of 64 B .. 64 KiB is echoed as one message', { timeout: 30000 }, async (t) => {
        const ws = await conn(t);
        const p = crypto.randomBytes(1 << 20);
        for (const size of [64, 256, 1024, 4096, 16384, 65536]) {
            const frames = [];
            for (let off = 0; off < p.length; off += size)
                frames.push(encodeFrame({ opcode: off === 0 ? OP.BINARY : OP.CONT, payload: p.subarray(off, off + size), fin: off + size >= p.length }));
            const before = ws.messages.length;
            ws.write(Buffer.concat(frames));
            assertEcho(await ws.waitFor(() => ws.messages[before], 15000, `the echo in fragments of ${size}`), OP.BINARY, p, `fragments of ${size}`);
        }
    });

    it('9.7/9.8 1000 small text and 1000 small binary messages round-trip in order', { timeout: 30000 }, async (t) => {
        const ws = await conn(t);
        const t0 = Date.now();
        const frames = [];
        for (let i = 0; i < 1000; i++)
            frames.push(encodeFrame({ opcode: OP.TEXT, payload: `message ${i}` }), encodeFrame({ opcode: OP.BINARY, payload: Buffer.from([i & 0xff, i >> 8]) }));
        ws.write(Buffer.concat(frames));
        await ws.waitFor(() => ws.messages.length >= 2000, 20000, '2000 echoes');
        for (let i = 0; i < 1000; i++) {
            assert.equal(ws.messages[2 * i].text, `message ${i}`);
            assert.ok(ws.messages[2 * i + 1].data.equals(Buffer.from([i & 0xff, i >> 8])));
        }
        t.diagnostic(`2000 round trips in ${Date.now() - t0} ms`);
    });

    it('a message of exactly --max-message-size is accepted; one byte more: close 1009 (whole, and across fragments)', { timeout: 30000 }, async (t) => {
        const ws = await conn(t);
        const p = crypto.randomBytes(MAX);
        assertEcho(await roundTrip(ws, OP.BINARY, p), OP.BINARY, p, 'exactly the maximum');
        ws.frame({ opcode: OP.BINARY, payload: Buffer.alloc(MAX + 1) });
        await expectClose(ws, 1009, 'maximum + 1');
        const ws2 = await conn(t);
        /* Frames of 100 KB each: the 21st goes over; the server need not wait for FIN. */
        for (let i = 0; i < 21; i++)
            ws2.frame({ opcode: i === 0 ? OP.BINARY : OP.CONT, payload: Buffer.alloc(100000), fin: false });
        await expectClose(ws2, 1009, 'maximum + 1 across fragments');
        const ws3 = await conn(t);
        /* A frame header announcing more than the maximum: closed without waiting for the payload. */
        ws3.write(encodeFrame({ opcode: OP.BINARY, payload: Buffer.alloc(MAX + 1) }).subarray(0, 1000));
        await expectClose(ws3, 1009, 'a header announcing maximum + 1');
        await assertAlive(echo.srv, '9 limits');
    });
});

/* ------------------------------------------------------------------------------------------ */

describe('12/13 permessage-deflate with the ws client', () => {
    const offers = [
        ['12.1 default offer (permessage-deflate; client_max_window_bits)', {}],
        ['13.3 client_no_context_takeover', { clientNoContextTakeover: true }],
        ['13.2 server_no_context_takeover', { serverNoContextTakeover: true }],
        ['13.4 server_no_context_takeover + client_no_context_takeover', { serverNoContextTakeover: true, clientNoContextTakeover: true }],
        ...[9, 10, 11, 12, 13, 14, 15].map((b) => [`13.5 server_max_window_bits=${b}`, { serverMaxWindowBits: b }]),
        ...[9, 12, 15].map((b) => [`13.6 client_max_window_bits=${b}`, { clientMaxWindowBits: b }]),
        ['13.7 server_max_window_bits=9 + client_max_window_bits=9', { serverMaxWindowBits: 9, clientMaxWindowBits: 9 }],
    ];
    const sizes = [0, 16, 64, 256, 1024, 4096, 8192, 65536, 131072];
    for (const [name, pmd] of offers) {
        it(`${name}: text and binary of ${sizes.join(', ')} bytes echo exactly`, { timeout: 20000 }, async (t) => {
            const c = await openWs(echo.srv.url, '/ws/echo', { t, perMessageDeflate: { threshold: 0, ...pmd }, maxPayload: 4 << 20 });
            const resp = c.upgradeHeaders['sec-websocket-extensions'];
            assert.equal(c.ws.extensions, 'permessage-deflate', `offer ${JSON.stringify(pmd)} -> ${resp}`);
            const ext = parseExtensions(resp);
            assert.equal(ext.length, 1, `offer ${JSON.stringify(pmd)} -> ${resp}`);
            assert.equal(ext[0].params.server_no_context_takeover, true, resp);
            assert.equal(ext[0].params.client_no_context_takeover, true, resp);
            if (pmd.serverMaxWindowBits)
                assert.ok(Number(ext[0].params.server_max_window_bits) <= pmd.serverMaxWindowBits, resp);
            const rnd = prng(sizes.length + name.length);
            const expected = [];
            for (let round = 0; round < 3; round++) {
                for (const n of sizes) {
                    /* Compressible text, and binary that is half random. */
                    const text = 'pushedge echo '.repeat(Math.ceil(n / 14)).slice(0, n);
                    const bin = Buffer.alloc(n);
                    for (let i = 0; i < n; i++)
                        bin[i] = i % 2 ? Math.floor(rnd() * 256) : i & 0xff;
                    c.send(text, { compress: true });
                    c.send(bin, { binary: true, compress: true });
                    expected.push({ text }, { bin });
                }
            }
            await c.waitFor(() => c.messages.length >= expected.length, 15000, `${expected.length} echoes`);
            for (const [i, e] of expected.entries()) {
                const m = c.messages[i];
                if (e.text !== undefined) {
                    assert.equal(m.binary, false, `message ${i} must be text`);
                    assert.equal(m.text, e.text, `message ${i}`);
                } else {
                    assert.equal(m.binary, true, `message ${i} must be binary`);
                    assert.ok(Buffer.from(m.data).equals(e.bin), `message ${i}: binary differs`);
                }
            }
            assert.equal(c.closed, null);
        });
    }

    it('the raw client sees RSV1 on echoes of 256 bytes and more and inflates them; 1 MiB compressed both ways', { timeout: 20000 }, async (t) => {
        const ws = await conn(t, { extensions: 'permessage-deflate; client_max_window_bits' });
        assert.equal(ws.deflate, true);
        const ext = parseExtensions(ws.headers['sec-websocket-extensions'])[0];
        assert.equal(ext.params.server_no_context_takeover, true);
        assert.equal(ext.params.client_no_context_takeover, true);
        for (const [n, compress] of [[0, true], [1, false], [100, true], [125, false], [126, true], [1000, false], [65535, true], [65536, false], [1 << 20, true]]) {
            const tp = utf8Text(n);
            const m = await roundTrip(ws, OP.TEXT, tp, { compress });
            assertEcho(m, OP.TEXT, tp, `text ${n} (client ${compress ? 'compressed' : 'plain'})`);
            /* (Below 256 bytes the echo may or may not compress: RFC 7692 lets it choose per message.) */
            if (n >= 256)
                assert.equal(m.compressed, true, `an echo of ${n} bytes must be compressed`);
            const bp = crypto.randomBytes(n);
            assertEcho(await roundTrip(ws, OP.BINARY, bp, { compress }), OP.BINARY, bp, `binary ${n}`);
        }
        /* A compressed message in fragments (RSV1 only on the first). */
        const p = Buffer.from('fragmented and compressed '.repeat(100));
        const z = deflateMessage(p);
        const before = ws.messages.length;
        ws.frame({ opcode: OP.TEXT, payload: z.subarray(0, 10), rsv1: true, fin: false });
        ws.frame({ opcode: OP.CONT, payload: z.subarray(10, 20), fin: false });
        ws.frame({ opcode: OP.CONT, payload: z.subarray(20) });
        assertEcho(await ws.waitFor(() => ws.messages[before], 5000, 'the echo'), OP.TEXT, p, 'compressed fragments');
        assert.deepEqual(ws.protocolErrors, []);
    });

    it('13.3/13.5 an offer of server_max_window_bits=8 is accepted; echoes go uncompressed', { timeout: 10000 }, async (t) => {
        const ws = await conn(t, { extensions: 'permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=8' });
        assert.equal(parseExtensions(ws.headers['sec-websocket-extensions'])[0].params.server_max_window_bits, '8');
        const p = utf8Text(1000);
        const m = await roundTrip(ws, OP.TEXT, p);
        assertEcho(m, OP.TEXT, p, 'no extension');
        assert.equal(m.compressed, false);
    });

    it('a compressed message that inflates past --max-message-size: close 1009', { timeout: 15000 }, async (t) => {
        const c = await openWs(echo.srv.url, '/ws/echo', { t, perMessageDeflate: { threshold: 0 } });
        c.send(Buffer.alloc(MAX + 1, 0x20), { compress: true });
        assert.equal((await c.waitClose(10000)).code, 1009);
        await assertAlive(echo.srv, '12/13 compression');
    });
});
