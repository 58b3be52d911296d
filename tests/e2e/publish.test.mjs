/*
 * The publish API: POST /api/publish?channel=NAME (docs/protocol.md "Publish").
 *
 * Covered: 200 {"channel","id"} with Redis-style IDs strictly increasing per channel (also
 * under concurrent publishers); every kind of JSON value accepted and delivered unchanged
 * (checked through an SSE replay); the channel-name rule at its edges; the JSON error body
 * for 400 (bad channel, missing channel, body not JSON, empty body), 405 (with Allow), 413
 * (--max-message-size, by Content-Length and chunked), 401/403 with --api-key; publishing
 * over one keep-alive connection.
 *
 * Not covered: 503 (needs an engine that fails: the Redis suite), non-loopback peers without
 * --api-key (every test runs on loopback).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
    ID_RE,
    assertAlive,
    checkJsonError,
    cmpId,
    httpRequest,
    openSSE,
    publish,
    publishOk,
    rawExchange,
    sharedServer,
    uniqueChannel,
} from './lib.mjs';

const main = sharedServer(before, after);

/** POST /api/publish with a raw query string and body. */
function rawPublish(url, query, body, headers = {}) {
    return httpRequest(url, `/api/publish${query}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
    });
}

describe('publish: success', () => {
    it('returns 200 {"channel","id"} with a <ms>-<seq> id', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('pub');
        const r = await publish(main.srv.url, ch, { hello: 'world' });
        assert.equal(r.status, 200, r.text);
        assert.match(String(r.headers['content-type']), /^application\/json/);
        assert.equal(r.json.channel, ch);
        assert.match(r.json.id, ID_RE);
    });

    it('ids strictly increase per channel (200 sequential publishes)', { timeout: 30000 }, async () => {
        const ch = uniqueChannel('seq');
        let prev = null;
        for (let i = 0; i < 200; i++) {
            const id = await publishOk(main.srv.url, ch, i);
            assert.match(id, ID_RE);
            if (prev !== null)
                assert.ok(cmpId(prev, id) < 0, `id ${id} does not follow ${prev}`);
            prev = id;
        }
    });

    it('concurrent publishers get distinct ids, delivered in id order', { timeout: 30000 }, async (t) => {
        const ch = uniqueChannel('conc');
        const results = await Promise.all(Array.from({ length: 100 }, (_, i) => publishOk(main.srv.url, ch, { i })));
        assert.equal(new Set(results).size, 100, 'ids must be distinct');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
        await sse.waitFor(() => sse.envelopes().length >= 100, 10000, '100 replayed messages');
        const got = sse.envelopes().map((e) => e.id);
        const sorted = [...results].sort(cmpId);
        assert.deepEqual(got, sorted, 'replay order must be id order');
    });

    it('ids of different channels are independent sequences', { timeout: 10000 }, async () => {
        const a = uniqueChannel('ind-a'), b = uniqueChannel('ind-b');
        const a1 = await publishOk(main.srv.url, a, 1);
        const b1 = await publishOk(main.srv.url, b, 1);
        const a2 = await publishOk(main.srv.url, a, 2);
        assert.ok(cmpId(a1, a2) < 0);
        assert.match(b1, ID_RE);
    });

    const values = [
        ['an object', { a: 1, b: [true, false, null], c: { d: 'e' } }],
        ['an array', [1, 'two', { three: 3 }, [4]]],
        ['a string', 'hello'],
        ['an empty string', ''],
        ['a number', 42],
        ['a negative fraction', -0.5],
        ['0.1', 0.1],
        ['a large double', 1.7976931348623157e308],
        ['a tiny double', 5e-324],
        ['2^53 + 2', 9007199254740994],
        ['true', true],
        ['false', false],
        ['null', null],
        ['an empty object', {}],
        ['an empty array', []],
        ['unicode text', 'héllo wörld – 你好 – 😀 – \u2028\u2029'],
        ['control characters and line breaks', 'line1\nline2\r\nline3\rline4\t\u0001\u001f\u007f "quoted" \\ back'],
        ['a string with an escaped NUL (\\u0000)', 'before\u0000after'],
        ['text that looks like SSE', '\n\ndata: fake\nid: 1-1\nevent: gap\n\n: comment\nretry: 1'],
        ['a big string (60000 bytes)', 'abcdefghij'.repeat(6000)],
        ['deep nesting', JSON.parse('['.repeat(64) + ']'.repeat(64))],
    ];
    for (const [what, value] of values) {
        it(`accepts ${what} and delivers it unchanged`, { timeout: 10000 }, async (t) => {
            const ch = uniqueChannel('val');
            const r = await publish(main.srv.url, ch, value);
            assert.equal(r.status, 200, `publishing ${what}: ${r.status} ${r.text}`);
            const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
            const ev = await sse.next((e) => e.type === 'message', 5000, `the message (${what})`);
            const env = JSON.parse(ev.data);
            assert.deepEqual(env, { channel: ch, id: r.json.id, data: value });
        });
    }

    it('keeps number tokens exactly (no re-printing through a double)', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('num');
        const body = '{"a":0.1,"b":-0.0,"c":1.0E+2,"d":9007199254740993,"e":1.5e-7}';
        const r = await rawPublish(main.srv.url, `?channel=${ch}`, body);
        assert.equal(r.status, 200, r.text);
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
        const ev = await sse.next((e) => e.type === 'message', 5000, 'the message');
        for (const tok of ['0.1', '-0.0', '1.0E+2', '9007199254740993', '1.5e-7'])
            assert.ok(ev.data.includes(tok), `number token ${tok} must be delivered as published: ${ev.data}`);
    });

    it('accepts integers beyond 64 bits (any JSON value), delivered exactly', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('bigint');
        const body = '[18446744073709551615,123456789012345678901234567890,-9223372036854775809]';
        const r = await rawPublish(main.srv.url, `?channel=${ch}`, body);
        assert.equal(r.status, 200, `RFC 8259 puts no limit on integer size: ${r.status} ${r.text}`);
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
        const ev = await sse.next((e) => e.type === 'message', 5000, 'the message');
        assert.ok(ev.data.includes(body), `the value must be delivered as published: ${ev.data}`);
    });

    it('accepts insignificant white space around and inside the JSON', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('ws');
        const r = await rawPublish(main.srv.url, `?channel=${ch}`, ' \r\n\t{ "a" : [ 1 , 2 ] }\n ');
        assert.equal(r.status, 200, r.text);
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
        const ev = await sse.next((e) => e.type === 'message', 5000, 'the message');
        assert.deepEqual(JSON.parse(ev.data).data, { a: [1, 2] });
    });

    it('the message is stored when 200 is returned (an immediate replay sees it)', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('ryw');
        const id = await publishOk(main.srv.url, ch, 'x');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
        const ev = await sse.next((e) => e.type === 'message', 5000, 'the stored message');
        assert.equal(JSON.parse(ev.data).id, id);
    });

    it('Expect: 100-continue (curl sends it for bodies over 1 KiB) is honoured', { timeout: 10000 }, async () => {
        const body = JSON.stringify({ text: 'e'.repeat(2000) });
        const r = await new Promise((resolve, reject) => {
            const req = http.request({
                host: '127.0.0.1',
                port: main.srv.port,
                method: 'POST',
                path: `/api/publish?channel=${uniqueChannel('expect')}`,
                headers: { expect: '100-continue', 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
                agent: false,
            });
            let got100 = false;
            const timer = setTimeout(() => req.destroy(new Error('no 100 Continue and no response within 3 s')), 3000);
            req.on('continue', () => {
                got100 = true;
                req.end(body);
            });
            req.on('response', (res) => {
                const parts = [];
                res.on('data', (c) => parts.push(c));
                res.on('end', () => {
                    clearTimeout(timer);
                    resolve({ got100, status: res.statusCode, text: Buffer.concat(parts).toString() });
                });
            });
            req.on('error', reject);
        });
        assert.equal(r.got100, true, 'the server must answer 100 Continue');
        assert.equal(r.status, 200, r.text);
    });

    it('a chunked request body is accepted', { timeout: 10000 }, async () => {
        const r = await httpRequest(main.srv.url, `/api/publish?channel=${uniqueChannel('chunked')}`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
            chunks: ['{"a":', '[1,2', ',3]}'],
        });
        assert.equal(r.status, 200, r.text);
    });

    it('several publishes over one keep-alive connection', { timeout: 10000 }, async () => {
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        try {
            const ch = uniqueChannel('ka');
            const sockets = new Set();
            for (let i = 0; i < 10; i++) {
                const r = await new Promise((resolve, reject) => {
                    const req = http.request(
                        {
                            host: '127.0.0.1',
                            port: main.srv.port,
                            method: 'POST',
                            path: `/api/publish?channel=${ch}`,
                            headers: { 'content-type': 'application/json' },
                            agent,
                        },
                        (res) => {
                            sockets.add(req.socket);
                            const parts = [];
                            res.on('data', (c) => parts.push(c));
                            res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(parts).toString() }));
                        },
                    );
                    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
                    req.on('error', reject);
                    req.end(JSON.stringify({ i }));
                });
                assert.equal(r.status, 200, r.text);
            }
            assert.equal(sockets.size, 1, 'the connection should be kept alive across publishes');
        } finally {
            agent.destroy();
        }
    });

    it('channel names: every allowed character, 1 and 200 characters', { timeout: 10000 }, async () => {
        const names = [
            'A',
            'abcXYZ019_-.:@',
            'user@example.com:inbox.v1',
            'x'.repeat(200),
        ];
        for (const name of names) {
            const r = await publish(main.srv.url, name, 1);
            assert.equal(r.status, 200, `channel ${JSON.stringify(name)}: ${r.status} ${r.text}`);
            assert.equal(r.json.channel, name);
        }
        /* ':' and '@' unescaped in the query (RFC 3986 allows them there). */
        const r = await rawPublish(main.srv.url, '?channel=room:1@x', '1');
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.channel, 'room:1@x');
        /* Percent-encoded allowed characters are decoded like any query value. */
        const r2 = await rawPublish(main.srv.url, '?channel=a%3Ab%40c', '1');
        assert.equal(r2.status, 200, r2.text);
        assert.equal(r2.json.channel, 'a:b@c');
    });
});

describe('publish: errors have the JSON error body', () => {
    const badChannels = [
        ['empty', '?channel='],
        ['201 characters', `?channel=${'x'.repeat(201)}`],
        ['a space', '?channel=bad%20name'],
        ['a plus (form-encoded space)', '?channel=bad+name'],
        ['a slash', '?channel=a/b'],
        ['an encoded slash', '?channel=a%2Fb'],
        ['unicode', '?channel=caf%C3%A9'],
        ['a percent sign', '?channel=100%25'],
        ['a NUL', '?channel=a%00b'],
        ['a quote', '?channel=a%22b'],
        ['a newline', '?channel=a%0Ab'],
        ['a bad percent escape', '?channel=a%zz'],
    ];
    for (const [what, query] of badChannels) {
        it(`400 for a channel with ${what}`, { timeout: 10000 }, async () => {
            const r = await rawPublish(main.srv.url, query, '{"a":1}');
            checkJsonError(r, 400, `channel ${what}`);
        });
    }

    it('400 when the channel parameter is missing', { timeout: 10000 }, async () => {
        checkJsonError(await rawPublish(main.srv.url, '', '1'), 400, 'no query');
        checkJsonError(await rawPublish(main.srv.url, '?chan=a', '1'), 400, 'other parameter');
    });

    const badBodies = [
        ['an empty body', ''],
        ['white space only', '  \n '],
        ['a bare word', 'hello'],
        ['an unterminated object', '{"a":1'],
        ['single quotes', "{'a':1}"],
        ['a trailing comma', '[1,2,]'],
        ['two values', '1 2'],
        ['trailing garbage', '{"a":1}x'],
        ['NaN', 'NaN'],
        ['a leading zero', '012'],
        ['an unescaped control character in a string', '"a\u0001b"'],
        ['invalid UTF-8', Buffer.from([0x22, 0xff, 0xfe, 0x22])],
    ];
    for (const [what, body] of badBodies) {
        it(`400 for ${what}`, { timeout: 10000 }, async () => {
            const r = await rawPublish(main.srv.url, `?channel=${uniqueChannel('bad')}`, body);
            checkJsonError(r, 400, what);
        });
    }

    it('405 with Allow: POST for GET /api/publish', { timeout: 10000 }, async () => {
        const r = await httpRequest(main.srv.url, '/api/publish?channel=a');
        checkJsonError(r, 405, 'GET /api/publish');
        assert.match(String(r.headers.allow || ''), /\bPOST\b/, `Allow header: ${r.headers.allow}`);
        const r2 = await httpRequest(main.srv.url, '/api/publish?channel=a', { method: 'PUT', body: '1' });
        checkJsonError(r2, 405, 'PUT /api/publish');
    });

    it('error codes are the ones docs/protocol.md documents', { timeout: 10000 }, async () => {
        const code = async (r) => (await r).json?.error?.code;
        assert.equal(await code(rawPublish(main.srv.url, '', '1')), 'missing_channel');
        assert.equal(await code(rawPublish(main.srv.url, '?channel=a%20b', '1')), 'bad_channel');
        assert.equal(await code(rawPublish(main.srv.url, '?channel=a', '{')), 'invalid_json');
        assert.equal(await code(rawPublish(main.srv.url, '?channel=a', '')), 'invalid_json');
        assert.equal(await code(httpRequest(main.srv.url, '/api/publish?channel=a')), 'method_not_allowed');
    });

    it('the server is alive after all of the above', { timeout: 10000 }, async () => {
        await assertAlive(main.srv);
    });
});

describe('publish: --max-message-size 1000', () => {
    const small = sharedServer(before, after, ['--max-message-size', '1000']);

    it('1000 bytes are accepted, 1001 bytes get 413', { timeout: 10000 }, async () => {
        const ok = await publish(small.srv.url, 'size', 'x'.repeat(998));
        assert.equal(ok.status, 200, `a 1000-byte body must be accepted: ${ok.text}`);
        const r = await publish(small.srv.url, 'size', 'x'.repeat(999));
        checkJsonError(r, 413, '1001-byte body');
        assert.equal(r.json.error.code, 'too_large');
    });

    it('413 for an oversized chunked body (no Content-Length)', { timeout: 10000 }, async () => {
        const body = JSON.stringify('y'.repeat(3000));
        const r = await httpRequest(small.srv.url, '/api/publish?channel=size', {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
            chunks: [body.slice(0, 500), body.slice(500, 1500), body.slice(1500)],
        });
        checkJsonError(r, 413, 'chunked 3002-byte body');
    });

    it('413 from the Content-Length alone, without waiting for the body', { timeout: 10000 }, async () => {
        const req =
            'POST /api/publish?channel=size HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
            'Content-Length: 100000000\r\n\r\n"';
        const r = await rawExchange(small.srv.port, req, { timeoutMs: 5000, until: (s) => /\r\n\r\n/.test(s) });
        assert.equal(r.status, 413, `expected 413 on a declared 100 MB body, got ${JSON.stringify(r.text.slice(0, 300))}`);
        await assertAlive(small.srv);
    });

    it('nothing is stored for a rejected message', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('nostore');
        assert.equal((await publish(small.srv.url, ch, 'z'.repeat(2000))).status, 413);
        const id = await publishOk(small.srv.url, ch, 'after');
        const sse = await openSSE(small.srv.url, `/sse?channel=${ch}&since=0`, { t });
        const ev = await sse.next((e) => e.type === 'message', 5000, 'the stored message');
        assert.deepEqual(JSON.parse(ev.data), { channel: ch, id, data: 'after' }, 'only the accepted message is stored');
    });
});

describe('publish: --api-key', () => {
    const keyed = sharedServer(before, after, ['--api-key', 's3cret-key']);

    it('401 without Authorization', { timeout: 10000 }, async () => {
        const r = await publish(keyed.srv.url, 'auth', 1);
        checkJsonError(r, 401, 'no Authorization');
        assert.match(String(r.headers['www-authenticate'] || ''), /^Bearer/i, 'a 401 names its scheme (RFC 9110 11.6.1)');
    });

    it('a non-Bearer scheme is refused', { timeout: 10000 }, async () => {
        const r = await publish(keyed.srv.url, 'auth', 1, { authorization: `Basic ${Buffer.from('u:s3cret-key').toString('base64')}` });
        /* docs/protocol.md: 401 only when no Authorization header came; any other key is wrong: 403. */
        checkJsonError(r, 403, 'a Basic scheme');
        assert.equal(r.json.error.code, 'forbidden');
        const r2 = await publish(keyed.srv.url, 'auth', 1, { authorization: 's3cret-key' });
        checkJsonError(r2, 403, 'a bare key without the scheme');
        assert.equal(r2.json.error.code, 'forbidden');
    });

    it('403 with a wrong Bearer token', { timeout: 10000 }, async () => {
        checkJsonError(await publish(keyed.srv.url, 'auth', 1, { authorization: 'Bearer wrong' }), 403, 'wrong key');
        checkJsonError(await publish(keyed.srv.url, 'auth', 1, { authorization: 'Bearer s3cret-keyX' }), 403, 'key with a suffix');
        checkJsonError(await publish(keyed.srv.url, 'auth', 1, { authorization: 'Bearer s3cret-ke' }), 403, 'key prefix');
    });

    it('200 with the right Bearer token', { timeout: 10000 }, async () => {
        const r = await publish(keyed.srv.url, 'auth', { ok: true }, { authorization: 'Bearer s3cret-key' });
        assert.equal(r.status, 200, r.text);
        assert.match(r.json.id, ID_RE);
    });

    it('subscribing needs no API key', { timeout: 10000 }, async (t) => {
        const sse = await openSSE(keyed.srv.url, '/sse?channel=auth&since=0', { t });
        assert.equal(sse.status, 200);
        await sse.next((e) => e.type === 'message', 5000, 'the published message');
    });
});
