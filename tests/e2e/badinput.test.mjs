/*
 * Hostile and malformed input. Each case expects a clear 4xx with the JSON error body where
 * the request reached pushedge's own handlers (or a 4xx / a closed connection where the
 * HTTP layer rejects it), and the server answering GET /healthz afterwards.
 *
 * Covered: SSE requests without or with invalid channels and malformed cursors (since and
 * Last-Event-ID-free); wrong methods; oversized header, header count, URL; many channels or
 * duplicate channels in one subscription; requests cut off midway; 1000 garbage requests
 * (deterministic pseudo-random bytes and mangled HTTP) over raw sockets.
 *
 * Not covered: slowloris-style timing attacks (would take minutes), the HTTP/2 frame layer
 * (h2o's own tests), TLS.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
    assertAlive,
    checkJsonError,
    httpRequest,
    openSSE,
    prng,
    publishOk,
    rawExchange,
    sharedServer,
    uniqueChannel,
} from './lib.mjs';

const main = sharedServer(before, after);

describe('bad SSE requests: 400 with the JSON error body', () => {
    const cases = [
        ['no channel', '/sse'],
        ['an empty channel', '/sse?channel='],
        ['a channel with a space', '/sse?channel=bad%20name'],
        ['a channel with a slash', '/sse?channel=a%2Fb'],
        ['a 201-character channel', `/sse?channel=${'c'.repeat(201)}`],
        ['a unicode channel', '/sse?channel=%E2%9C%93'],
        ['one bad channel among good ones', '/sse?channel=good&channel=b%20d'],
        ['since=abc', '/sse?channel=a&since=abc'],
        ['since=1-', '/sse?channel=a&since=1-'],
        ['since=-1', '/sse?channel=a&since=-1'],
        ['since=1-2-3', '/sse?channel=a&since=1-2-3'],
        ['since=1.2', '/sse?channel=a&since=1.2'],
        ['since=%00', '/sse?channel=a&since=%00'],
        ['since=-', '/sse?channel=a&since=-'],
        ['since=1--2', '/sse?channel=a&since=1--2'],
        ['since with a space', '/sse?channel=a&since=1%20-2'],
        ['since with a 21-digit ms', '/sse?channel=a&since=100000000000000000000-0'],
        ['since beyond 64 bits', '/sse?channel=a&since=18446744073709551616-0'],
        ['since with a 21-digit seq', '/sse?channel=a&since=1-100000000000000000000'],
        ['since of 1000 characters', `/sse?channel=a&since=${'1'.repeat(1000)}`],
        ['since of 1000 cursor-like characters', `/sse?channel=a&channel=b&since=${'a.b.c_'.repeat(166)}abcd`],
        ['since=0x10-0', '/sse?channel=a&since=0x10-0'],
        ['since=+1-0', '/sse?channel=a&since=%2B1-0'],
    ];
    for (const [what, path] of cases) {
        it(what, { timeout: 10000 }, async () => {
            const r = await httpRequest(main.srv.url, path);
            checkJsonError(r, 400, `GET ${path.slice(0, 80)}`);
        });
    }

    /* The kinds docs/protocol.md lists for the several-channel form, all `bad_cursor`. */
    const badCursors = [
        ['upper-case base 36', 'A.1.1'],
        ['a leading zero', '0a.1.1'],
        ['an empty field', 'a..1'],
        ['an empty entry at the end', 'a.1.1_'],
        ['an empty entry at the start', '_a.1.1'],
        ['two fields', 'a.1'],
        ['four fields', 'a.1.1.1'],
        ['a duplicate tag', 'a.1.1_a.2.2'],
        ['ms beyond 64 bits', 'a.3w5e11264sgsg.0'],
        ['a tag beyond 32 bits', 'zzzzzzz.1.1'],
        ['65 entries', Array.from({ length: 65 }, (_, i) => `${(i + 1).toString(36)}.1.1`).join('_')],
        ['a character outside base 36', 'a.1-.1'],
    ];
    for (const [what, cursor] of badCursors) {
        it(`a several-channel cursor with ${what}: 400 bad_cursor`, { timeout: 10000 }, async () => {
            const r = await httpRequest(main.srv.url, `/sse?channel=a&channel=b&since=${cursor}`);
            checkJsonError(r, 400, cursor);
            assert.equal(r.json.error.code, 'bad_cursor');
        });
    }

    it('a malformed Last-Event-ID header is a 400 bad_cursor too', { timeout: 10000 }, async () => {
        const r = await httpRequest(main.srv.url, '/sse?channel=a', { headers: { 'last-event-id': '1-2-3' } });
        checkJsonError(r, 400, 'Last-Event-ID: 1-2-3');
        assert.equal(r.json.error.code, 'bad_cursor');
    });

    it('POST /sse is 405 with the JSON error body', { timeout: 10000 }, async () => {
        const r = await httpRequest(main.srv.url, '/sse?channel=a', { method: 'POST', body: 'x' });
        checkJsonError(r, 405, 'POST /sse');
        assert.match(String(r.headers.allow || ''), /\bGET\b/, `Allow header: ${r.headers.allow}`);
    });

    it('the server is alive', { timeout: 10000 }, async () => {
        await assertAlive(main.srv, 'the bad SSE requests');
    });
});

describe('odd publishes', () => {
    it('JSON nested 30000 levels deep: a clean 400, never a crash', { timeout: 10000 }, async () => {
        const r = await httpRequest(main.srv.url, `/api/publish?channel=${uniqueChannel('deep')}`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: '['.repeat(30000) + ']'.repeat(30000),
        });
        checkJsonError(r, 400, 'deep nesting');
        await assertAlive(main.srv, 'deeply nested JSON');
    });

    it('a body of 64 KiB of opening brackets and quotes, and a huge string escape', { timeout: 10000 }, async () => {
        for (const body of ['{'.repeat(65536), '"' + '\\u'.repeat(20000), '"' + '\\'.repeat(30000)]) {
            const r = await httpRequest(main.srv.url, `/api/publish?channel=${uniqueChannel('odd')}`, { method: 'POST', body });
            /* Not over --max-message-size (64 KiB): the JSON is judged, and it is not JSON. */
            checkJsonError(r, 400, `a body of ${body.length} bytes`);
            assert.equal(r.json.error.code, 'invalid_json');
        }
        await assertAlive(main.srv, 'odd bodies');
    });
});

describe('odd subscriptions', () => {
    /* docs/protocol.md: up to 64 channel parameters (400 too_many_channels past that); a
     * repeated channel counts once. */
    for (const path of ['/sse', '/poll'])
        it(`${path}: 1000 channels in one request: 400 too_many_channels, at once`, { timeout: 15000 }, async () => {
            const q = Array.from({ length: 1000 }, (_, i) => `channel=many${i}`).join('&');
            const r = await httpRequest(main.srv.url, `${path}?${q}`, { timeoutMs: 5000 });
            checkJsonError(r, 400, '1000 channels');
            assert.equal(r.json.error.code, 'too_many_channels');
            await assertAlive(main.srv, '1000 channels');
        });

    for (const path of ['/sse', '/poll'])
        it(`${path}: 64 channels plus one of them repeated is served (a repeat counts once); 65 distinct are too_many_channels`, { timeout: 15000 }, async (t) => {
            const pre = uniqueChannel('rep');
            const names = Array.from({ length: 64 }, (_, i) => `${pre}-${i}`);
            const q64 = names.map((n) => `channel=${n}`).join('&');
            const over = await httpRequest(main.srv.url, `${path}?${q64}&channel=${pre}-64${path === '/poll' ? '&timeout=1' : ''}`, { timeoutMs: 5000 });
            checkJsonError(over, 400, '65 channels');
            assert.equal(over.json.error.code, 'too_many_channels');
            if (path === '/poll') {
                const id = await publishOk(main.srv.url, names[0], { n: 1 });
                const r = await httpRequest(main.srv.url, `/poll?${q64}&channel=${names[0]}&channel=${names[63]}&since=0`, { timeoutMs: 5000 });
                assert.equal(r.status, 200, `64 channels + 2 repeats: ${r.status} ${r.text}`);
                assert.deepEqual(r.json.messages, [{ channel: names[0], id, data: { n: 1 } }], 'the repeated channel\'s message comes once');
                return;
            }
            const sse = await openSSE(main.srv.url, `/sse?${q64}&channel=${names[0]}&channel=${names[63]}`, { t });
            assert.equal(sse.status, 200, '64 channels + 2 repeats');
            await sse.waitLive();
            await publishOk(main.srv.url, names[0], { n: 1 });
            await publishOk(main.srv.url, names[63], { n: 2 });
            await sse.waitFor(() => sse.envelopes().some((e) => e.data.n === 2), 5000, 'message 2');
            assert.deepEqual(sse.envelopes().map((e) => e.data.n), [1, 2]);
            sse.close();
        });

    it('the same channel twice: served, and each message is delivered once', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('dup');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&channel=${ch}`, { t });
        assert.equal(sse.status, 200, 'a repeated channel counts once (docs/protocol.md)');
        await sse.waitLive();
        await publishOk(main.srv.url, ch, { n: 1 });
        await publishOk(main.srv.url, ch, { n: 2 });
        /* A sentinel published after both: a duplicate of 1 or 2 would arrive before it. */
        await publishOk(main.srv.url, ch, { n: 3 });
        await sse.waitFor(() => sse.envelopes().some((e) => e.data.n === 3), 5000, 'message 3');
        assert.deepEqual(sse.envelopes().map((e) => e.data.n), [1, 2, 3]);
    });
});

describe('malformed HTTP over raw sockets', () => {
    /* 505 is the right answer to an unsupported HTTP version. */
    function assertRejected(r, what) {
        const ok = (r.status !== null && ((r.status >= 400 && r.status < 500) || r.status === 505)) || (r.status === null && r.closed);
        assert.ok(ok, `${what}: expected a 4xx or a closed connection, got status ${r.status}, closed ${r.closed}, ` +
            `timedOut ${r.timedOut}: ${JSON.stringify(r.text.slice(0, 200))}`);
    }

    it('a 100 KiB request header: 4xx or close', { timeout: 10000 }, async () => {
        const req = `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(100 * 1024)}\r\n\r\n`;
        const r = await rawExchange(main.srv.port, req, { timeoutMs: 5000 });
        assertRejected(r, '100 KiB header');
        await assertAlive(main.srv, 'a 100 KiB header');
    });

    it('1000 request headers: 4xx or close', { timeout: 10000 }, async () => {
        let req = 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n';
        for (let i = 0; i < 1000; i++)
            req += `X-H${i}: v\r\n`;
        const r = await rawExchange(main.srv.port, req + '\r\n', { timeoutMs: 5000 });
        assertRejected(r, '1000 headers');
        await assertAlive(main.srv, '1000 headers');
    });

    it('a 100 KiB URL: 4xx or close', { timeout: 10000 }, async () => {
        const req = `GET /sse?channel=a&x=${'b'.repeat(100 * 1024)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
        const r = await rawExchange(main.srv.port, req, { timeoutMs: 5000 });
        assertRejected(r, '100 KiB URL');
        await assertAlive(main.srv, 'a 100 KiB URL');
    });

    it('an unknown HTTP version, a bad request line, a bad header: 4xx or close', { timeout: 15000 }, async () => {
        const reqs = [
            'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n',
            'GET\r\n\r\n',
            'GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n',
            'GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
            'POST /api/publish?channel=a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n1\r\n0\r\n\r\n',
            'G\x00T / HTTP/1.1\r\n\r\n',
        ];
        for (const req of reqs) {
            const r = await rawExchange(main.srv.port, req, { timeoutMs: 3000, half: false });
            assertRejected(r, JSON.stringify(req.slice(0, 60)));
        }
        await assertAlive(main.srv, 'malformed requests');
    });

    it('requests cut off midway (headers, body, chunk) leave the server healthy', { timeout: 15000 }, async () => {
        const partial = [
            'GET /sse?channel=a HTTP/1.1\r\nHost: 127.',
            'POST /api/publish?channel=cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"a":',
            'POST /api/publish?channel=cut HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{"a"',
            'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00',
        ];
        for (const req of partial)
            await rawExchange(main.srv.port, req, { timeoutMs: 300, half: true });
        await assertAlive(main.srv, 'cut-off requests');
    });

    it('1000 garbage requests: the server survives and keeps serving', { timeout: 55000 }, async (t) => {
        const rnd = prng(0x5eed);
        const pick = (a) => a[Math.floor(rnd() * a.length)];
        const bytes = (n) => Buffer.from(Array.from({ length: n }, () => Math.floor(rnd() * 256)));
        const valid = [
            'GET /sse?channel=g HTTP/1.1\r\nHost: x\r\n\r\n',
            'POST /api/publish?channel=g HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{"a":1}',
            'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n',
            'GET /sse?channel=g&since=1-0 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1-1\r\n\r\n',
        ];
        function mangle(s) {
            const b = Buffer.from(s, 'latin1');
            const n = 1 + Math.floor(rnd() * 4);
            for (let i = 0; i < n; i++) {
                const op = Math.floor(rnd() * 4);
                const pos = Math.floor(rnd() * b.length);
                if (op === 0)
                    b[pos] = Math.floor(rnd() * 256);
                else if (op === 1)
                    b[pos] = pick([0x0d, 0x0a, 0x00, 0x20, 0x3a, 0x25]);
                else if (op === 2)
                    return Buffer.concat([b.subarray(0, pos), b.subarray(pos + 1 + Math.floor(rnd() * 8))]);
                else
                    return Buffer.concat([b.subarray(0, pos), bytes(1 + Math.floor(rnd() * 64)), b.subarray(pos)]);
            }
            return b;
        }
        function garbage(i) {
            switch (i % 5) {
            case 0:
                return bytes(1 + Math.floor(rnd() * 2048));
            case 1:
                return mangle(pick(valid));
            case 2:
                return Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), bytes(Math.floor(rnd() * 512))]);
            case 3:
                return Buffer.from(`${pick(['GET', 'POST', 'XYZ', 'get', ''])} ${pick(['/', '/sse', '/api/publish', '*', '%', ''])}` +
                    `?${pick(['channel=', 'since=', 'channel=a&since='])}${bytes(16).toString('latin1')} HTTP/1.1\r\n\r\n`, 'latin1');
            default:
                return Buffer.concat([Buffer.from('GET /sse?channel=a HTTP/1.1\r\nHost: x\r\n'), bytes(Math.floor(rnd() * 256)), Buffer.from('\r\n\r\n')]);
            }
        }
        const inputs = Array.from({ length: 1000 }, (_, i) => garbage(i));
        const deadline = Date.now() + 40000;
        let sent = 0;
        const concurrency = 25;
        const outcomes = {};
        async function worker() {
            while (sent < inputs.length && Date.now() < deadline) {
                const input = inputs[sent++];
                /* Stop reading after the first response head: some mangled requests are valid. */
                const r = await rawExchange(main.srv.port, input, { timeoutMs: 500, until: (s) => s.includes('\r\n\r\n') });
                const key = r.status !== null ? String(r.status) : r.timedOut ? 'no answer' : 'closed';
                outcomes[key] = (outcomes[key] || 0) + 1;
            }
        }
        await Promise.all(Array.from({ length: concurrency }, worker));
        t.diagnostic(`outcomes: ${JSON.stringify(outcomes)}`);
        assert.equal(sent, inputs.length, `only ${sent} of ${inputs.length} garbage requests were sent within 40 s`);
        await assertAlive(main.srv, '1000 garbage requests');
        const ch = uniqueChannel('after-garbage');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}`, {});
        try {
            await sse.waitLive();
            await publishOk(main.srv.url, ch, { still: 'working' });
            await sse.next((e) => e.type === 'message', 5000, 'a message after the garbage');
        } finally {
            sse.close();
        }
    });
});
