/*
 * Security: who may publish, and what a request may look like on the wire (docs/security.md).
 *
 * Covered:
 * - request bodies without publish credentials are refused from their head (401/403 with the
 *   JSON error, connection closed) before the body is buffered: N keyless connections each
 *   holding all but the last byte of a 1 MiB body, measured by the server's RSS; the same on
 *   the second request of a keep-alive connection and behind a pipelined request; HTTP/2
 *   streams with a body and no credentials are reset;
 * - strict HTTP/1 framing: duplicated or conflicting Content-Length, Content-Length with
 *   Transfer-Encoding, Transfer-Encoding other than chunked, obs-fold, bare LF, whitespace
 *   before a colon: 400, the connection closed, nothing after them answered; no version in
 *   Server;
 * - browsers publish only from allowed origins: cross-origin simple POSTs (text/plain) and
 *   WebSocket publish ops refused with or without --allowed-origin; same-origin pages on a
 *   loopback host publish; DNS-rebinding hosts do not; Sec-Fetch-Site without Origin;
 * - --trusted-proxy: loopback trust through X-Forwarded-For / Forwarded only for the real
 *   client; the option on the command line, in the environment, in --help;
 * - start-up warnings (listening beyond loopback without --api-key; a secret on the command
 *   line); drain retry hints differ from one start to the next.
 * - --no-ws-deflate: a permessage-deflate offer is declined, messages arrive uncompressed
 *   (compression side channels, docs/security.md "Threat model").
 *
 * Not covered: TLS (no TLS listener yet), real browsers (raw requests carry the headers a
 * browser sends; tests/e2e/browser.test.mjs drives Chromium for the client library).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import {
    checkJsonError,
    httpRequest,
    openSSE,
    rawExchange,
    rssKiB,
    runOnce,
    startServer,
    uniqueChannel,
    waitUntil,
} from './lib.mjs';
import { openWs } from './wslib.mjs';

const KEY = 'k3y-for-tests';
/* Servers whose RSS is compared: ASan keeps freed blocks in a quarantine (256 MiB by default),
 * which would count memory the server gave back; without it RSS shows what is held. */
const MEASURED = { ASAN_OPTIONS: [process.env.ASAN_OPTIONS, 'quarantine_size_mb=0'].filter(Boolean).join(':') };
const MIB = 1 << 20;

/* The JSON error of a raw HTTP/1 answer: {status, code, closed}. */
function rawAnswer(r) {
    const text = r.text;
    const at = text.indexOf('\r\n\r\n');
    let json;
    try {
        json = JSON.parse(text.slice(at + 4));
    } catch {
        json = undefined;
    }
    return { status: r.status, code: json && json.error ? json.error.code : undefined, text };
}

/* Opens a connection, writes the head and all but the last byte of a size-byte body, and
 * resolves with {status, closed, text} once the server answered and closed, or after timeoutMs. */
function partialBody(port, head, size, { timeoutMs = 15000, before = '' } = {}) {
    return new Promise((resolve) => {
        const sock = net.connect({ host: '127.0.0.1', port });
        const parts = [];
        let done = false;
        const finish = (closed) => {
            if (done)
                return;
            done = true;
            clearTimeout(timer);
            const text = Buffer.concat(parts).toString('latin1');
            sock.destroy();
            const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
            resolve({ closed, text, statuses, status: statuses[statuses.length - 1] ?? null });
        };
        const timer = setTimeout(() => finish(false), timeoutMs);
        sock.on('data', (c) => parts.push(c));
        sock.on('error', () => finish(true));
        sock.on('close', () => finish(true));
        sock.on('connect', () => {
            if (before)
                sock.write(before);
            sock.write(head);
            sock.write(Buffer.alloc(size - 1, 0x61));
        });
        sock.finishNow = finish;
    });
}

function publishHead(channel, size, extra = '') {
    return `POST /api/publish?channel=${channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${size}\r\n${extra}\r\n`;
}

describe('request bodies without publish credentials are refused from their head', () => {
    it('N keyless connections with all but the last byte of 1 MiB: each answered 401 and closed, RSS bounded', { timeout: 120000 }, async (t) => {
        const srv = await startServer(['--api-key', KEY, '--max-message-size', String(MIB)], MEASURED);
        t.after(() => srv.stop('SIGKILL'));
        const N = 60;
        const base = rssKiB(srv.pid);
        /* RSS is sampled while the connections are open: until every one was answered, or the
         * server holds half of what they sent (what it did before the head check). */
        let settled = 0, peak = base;
        const pending = [];
        for (let i = 0; i < N; i++)
            pending.push(partialBody(srv.port, publishHead('c', MIB), MIB, { timeoutMs: 20000 }).finally(() => ++settled));
        await waitUntil(() => {
            peak = Math.max(peak, rssKiB(srv.pid));
            return settled === N || peak - base > (N / 2) * 1024;
        }, { timeoutMs: 20000, what: 'every connection answered or half the bodies held' }).catch(() => {});
        peak = Math.max(peak, rssKiB(srv.pid));
        const results = await Promise.all(pending);
        const grownMiB = (peak - base) / 1024;
        t.diagnostic(`RSS ${base} KiB -> ${peak} KiB with ${N} keyless partial 1 MiB bodies (+${grownMiB.toFixed(1)} MiB)`);
        const refused = results.filter((r) => r.status === 401 && r.closed).length;
        assert.equal(refused, N, `every keyless partial body must be answered 401 and closed: ${JSON.stringify(results.slice(0, 2).map((r) => r.text.slice(0, 200)))}`);
        assert.ok(results.every((r) => /"code":"unauthorized"/.test(r.text)), 'the JSON error');
        /* Before the check moved to the head every connection held its MiB: +N MiB at least. */
        assert.ok(grownMiB < N / 2, `RSS grew ${grownMiB.toFixed(1)} MiB for ${N} refused bodies`);
        const ok = await httpRequest(srv.url, `/api/publish?channel=${uniqueChannel()}`, {
            method: 'POST', headers: { authorization: `Bearer ${KEY}` }, body: '{"a":1}' });
        assert.equal(ok.status, 200, 'publishing with the key still works');
    });

    it('a wrong key is refused from the head too (403), a right one reads the body', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--api-key', KEY]);
        t.after(() => srv.stop('SIGKILL'));
        const r = await partialBody(srv.port, publishHead('c', 60000, 'Authorization: Bearer nope\r\n'), 60000, { timeoutMs: 5000 });
        assert.equal(r.status, 403, r.text);
        assert.ok(r.closed);
        const body = JSON.stringify({ pad: 'x'.repeat(50000) });
        const ok = await httpRequest(srv.url, '/api/publish?channel=big', {
            method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body });
        assert.equal(ok.status, 200, ok.text);
        /* chunked, keyless: refused the same way */
        const c = await partialBody(srv.port,
            'POST /api/publish?channel=c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n', 5000, { timeoutMs: 5000 });
        assert.equal(c.status, 401, c.text);
        assert.ok(c.closed);
    });

    it('the second request of a keep-alive connection is checked as well', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--api-key', KEY]);
        t.after(() => srv.stop('SIGKILL'));
        const sock = net.connect({ host: '127.0.0.1', port: srv.port });
        t.after(() => sock.destroy());
        let text = '';
        let closed = false;
        sock.on('data', (c) => (text += c.toString('latin1')));
        sock.on('close', () => (closed = true));
        sock.on('error', () => (closed = true));
        await new Promise((r) => sock.once('connect', r));
        sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        await waitUntil(() => /\r\n\r\n[^]*ok|"status"/.test(text) || /HTTP\/1\.1 200/.test(text), { what: 'the first answer' });
        await waitUntil(() => text.includes('\r\n\r\n'), { what: 'the first answer head' });
        sock.write(publishHead('c', MIB));
        sock.write(Buffer.alloc(MIB - 1, 0x61));
        await waitUntil(() => closed, { timeoutMs: 10000, what: 'the connection closed after the keyless second request' });
        assert.match(text, /HTTP\/1\.1 401/, text.slice(0, 500));
    });

    it('a keyless body pipelined behind a GET is refused too (answered or cut, never buffered whole)', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--api-key', KEY]);
        t.after(() => srv.stop('SIGKILL'));
        const r = await partialBody(srv.port, publishHead('c', MIB), MIB, { before: 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', timeoutMs: 10000 });
        assert.ok(r.closed, `the connection must be closed: ${r.text.slice(0, 300)}`);
        assert.equal(r.statuses[0], 200);
        assert.ok(r.statuses.length === 1 || r.statuses[1] === 401, r.text.slice(0, 500));
    });

    it('HTTP/2: a connection sending a body without credentials is closed before the bodies are read', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--api-key', KEY, '--max-message-size', String(MIB)], MEASURED);
        t.after(() => srv.stop('SIGKILL'));
        const base = rssKiB(srv.pid);
        const sessions = [];
        for (let c = 0; c < 10; c++) {
            const session = http2.connect(srv.url);
            session.on('error', () => {});
            t.after(() => session.destroy());
            const st = { closed: false };
            session.on('close', () => (st.closed = true));
            for (let i = 0; i < 10 && !session.closed && !session.destroyed; i++) {
                try {
                    const s = session.request({ ':method': 'POST', ':path': '/api/publish?channel=h2', 'content-type': 'application/json' });
                    s.on('error', () => {});
                    s.write(Buffer.alloc(MIB - 1, 0x61));
                } catch {
                    /* the server closed the session already */
                }
            }
            sessions.push(st);
        }
        let peak = base;
        await waitUntil(() => {
            peak = Math.max(peak, rssKiB(srv.pid));
            return sessions.every((s) => s.closed) || peak - base > 50 * 1024;
        }, { timeoutMs: 20000, what: 'every keyless session closed by the server' }).catch(() => {});
        const grownMiB = (peak - base) / 1024;
        t.diagnostic(`HTTP/2: +${grownMiB.toFixed(1)} MiB with 10 connections x 10 keyless 1 MiB streams`);
        assert.ok(sessions.every((s) => s.closed), 'every keyless session must be closed by the server');
        /* Before: each stream held its MiB (+100 MiB). */
        assert.ok(grownMiB < 30, `RSS grew ${grownMiB.toFixed(1)} MiB`);
        /* with the key, on a new connection; and a keyless request without a body gets its 401 */
        const session = http2.connect(srv.url);
        t.after(() => session.destroy());
        const ask = (headers, body) => new Promise((resolve, reject) => {
            const s = session.request({ ':method': 'POST', ':path': '/api/publish?channel=h2', ...headers });
            let status;
            s.on('response', (h) => (status = h[':status']));
            s.on('error', reject);
            s.on('close', () => resolve(status));
            s.resume();
            s.end(body);
        });
        assert.equal(await ask({ authorization: `Bearer ${KEY}` }, '{"n":1}'), 200);
        assert.equal(await ask({}), 401);
    });
});

describe('strict HTTP/1 framing: 400, the connection closed, nothing after it answered', () => {
    const smuggled = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
    const cases = [
        ['two conflicting Content-Length', 'Content-Length: 4\r\nContent-Length: 40\r\n', '[11]'],
        ['two equal Content-Length', 'Content-Length: 4\r\nContent-Length: 4\r\n', '[11]'],
        ['a Content-Length list', 'Content-Length: 4, 4\r\n', '[11]'],
        ['a signed Content-Length', 'Content-Length: +4\r\n', '[11]'],
        ['Content-Length with Transfer-Encoding: chunked', 'Content-Length: 4\r\nTransfer-Encoding: chunked\r\n', '2\r\n{}\r\n0\r\n\r\n'],
        ['Transfer-Encoding: chunked then Content-Length', 'Transfer-Encoding: chunked\r\nContent-Length: 4\r\n', '2\r\n{}\r\n0\r\n\r\n'],
        ['Transfer-Encoding twice', 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', '2\r\n{}\r\n0\r\n\r\n'],
        ['Transfer-Encoding: gzip, chunked', 'Transfer-Encoding: gzip, chunked\r\n', '2\r\n{}\r\n0\r\n\r\n'],
        ['Transfer-Encoding: xchunked', 'Transfer-Encoding: xchunked\r\n', '2\r\n{}\r\n0\r\n\r\n'],
        ['an obs-fold line', 'Content-Length: 2\r\nX-A: b\r\n  folded\r\n', '{}'],
        ['an obs-folded Transfer-Encoding', 'Transfer-Encoding:\r\n chunked\r\n', '2\r\n{}\r\n0\r\n\r\n'],
        ['whitespace before the colon', 'Content-Length : 2\r\n', '{}'],
        ['a bare LF line end', 'Content-Length: 2\nX-A: b\r\n', '{}'],
    ];
    let srv;
    it('starts a server (no --api-key: loopback may publish, so framing is the only fault)', async (t) => {
        srv = await startServer([]);
    });
    for (const [what, headers, body] of cases) {
        it(what, { timeout: 10000 }, async () => {
            const req = `POST /api/publish?channel=frame HTTP/1.1\r\nHost: x\r\n${headers}\r\n${body}${smuggled}`;
            const r = await rawExchange(srv.port, req, { timeoutMs: 5000 });
            assert.equal(r.status, 400, `${what}: ${r.text.slice(0, 300)}`);
            assert.ok(r.closed && !r.timedOut, `${what}: the connection must be closed`);
            const statuses = [...r.text.matchAll(/HTTP\/1\.[01] \d{3}/g)];
            assert.equal(statuses.length, 1, `${what}: nothing after it may be answered: ${r.text}`);
        });
    }
    it('a plain chunked publish and a Content-Length publish still work, keep-alive included', { timeout: 10000 }, async () => {
        const a = `POST /api/publish?channel=frame HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}`;
        const b = `POST /api/publish?channel=frame HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`;
        const r = await rawExchange(srv.port, [a, b, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'], { timeoutMs: 5000 });
        const statuses = [...r.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
        assert.deepEqual(statuses, [200, 200, 200], r.text);
    });
    it('"Upgrade: h2c" is not taken up: the answer stays HTTP/1.1', { timeout: 10000 }, async () => {
        const r = await rawExchange(srv.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n' +
            'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n', { timeoutMs: 3000, until: (t) => /\r\n\r\n[^]*ok/.test(t) });
        assert.equal(r.status, 200, r.text.slice(0, 300));
    });
    it('the Server header carries no version', async () => {
        const r = await httpRequest(srv.url, '/healthz');
        assert.ok(!/\d/.test(String(r.headers.server ?? '')), `Server: ${r.headers.server}`);
        await srv.stop();
    });
});

describe('browsers publish only from allowed origins', () => {
    function post(srv, headers, { channel = uniqueChannel('o'), body = '{"n":1}', path } = {}) {
        return httpRequest(srv.url, path ?? `/api/publish?channel=${channel}`, {
            method: 'POST', headers: { 'content-type': 'text/plain', ...headers }, body });
    }
    it('no --allowed-origin: a foreign page\'s simple POST is refused, a loopback client without Origin publishes', { timeout: 20000 }, async (t) => {
        const srv = await startServer([]);
        t.after(() => srv.stop('SIGKILL'));
        checkJsonError(await post(srv, { origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' }), 403, 'foreign origin');
        checkJsonError(await post(srv, { origin: 'null' }), 403, 'opaque origin');
        checkJsonError(await post(srv, { 'sec-fetch-site': 'cross-site' }), 403, 'Sec-Fetch-Site cross-site without Origin');
        assert.equal((await post(srv, {})).status, 200, 'curl-like client');
        assert.equal((await post(srv, { 'sec-fetch-site': 'none' })).status, 200, 'typed into the address bar');
        /* the server's own page (same origin on a loopback host) */
        assert.equal((await post(srv, { origin: `http://127.0.0.1:${srv.port}`, host: `127.0.0.1:${srv.port}` })).status, 200);
        assert.equal((await post(srv, { origin: `http://localhost:${srv.port}`, host: `localhost:${srv.port}` })).status, 200);
        /* DNS rebinding: the attacker's name resolves to 127.0.0.1; Host and Origin agree */
        checkJsonError(await post(srv, { origin: `http://rebind.example:${srv.port}`, host: `rebind.example:${srv.port}` }), 403, 'rebinding');
        /* a large cross-origin body is refused from its head */
        const r = await partialBody(srv.port, publishHead('c', MIB, 'Origin: http://evil.example\r\n'), MIB, { timeoutMs: 8000 });
        assert.equal(r.status, 403, r.text.slice(0, 300));
        assert.ok(r.closed);
    });

    it('--allowed-origin: a listed origin publishes (CORS), another one is refused without a preflight too', { timeout: 20000 }, async (t) => {
        const srv = await startServer(['--allowed-origin', 'https://app.example']);
        t.after(() => srv.stop('SIGKILL'));
        const ok = await post(srv, { origin: 'https://app.example', 'sec-fetch-site': 'cross-site' });
        assert.equal(ok.status, 200, ok.text);
        assert.equal(ok.headers['access-control-allow-origin'], 'https://app.example');
        const bad = await post(srv, { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' });
        checkJsonError(bad, 403, 'simple POST from an unlisted origin');
        assert.equal(bad.json.error.code, 'origin_not_allowed');
    });

    it('WebSocket: a foreign page may subscribe where no policy is set, but not publish', { timeout: 20000 }, async (t) => {
        const srv = await startServer([]);
        t.after(() => srv.stop('SIGKILL'));
        const ch = uniqueChannel('wso');
        const evil = await openWs(srv.url, '/ws', { t, headers: { origin: 'http://evil.example' } });
        const r = await evil.request({ op: 'publish', channel: ch, data: { n: 1 } });
        assert.equal(r.op, 'error', JSON.stringify(r));
        assert.equal(r.code, 'forbidden');
        const own = await openWs(srv.url, '/ws', { t, headers: { origin: `http://127.0.0.1:${srv.port}` } });
        assert.equal((await own.request({ op: 'publish', channel: ch, data: { n: 2 } })).op, 'published');
    });
});

describe('--trusted-proxy', () => {
    function post(srv, headers) {
        return httpRequest(srv.url, `/api/publish?channel=${uniqueChannel('p')}`, {
            method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"n":1}' });
    }
    it('behind a trusted local proxy, loopback trust applies to the real client only', { timeout: 20000 }, async (t) => {
        const srv = await startServer(['--trusted-proxy', '127.0.0.0/8']);
        t.after(() => srv.stop('SIGKILL'));
        checkJsonError(await post(srv, {}), 403, 'no forwarding header: the client is unknown');
        checkJsonError(await post(srv, { 'x-forwarded-for': '203.0.113.5' }), 403, 'a remote client');
        checkJsonError(await post(srv, { 'x-forwarded-for': '127.0.0.1, 203.0.113.5' }), 403, 'a spoofed leftmost entry');
        checkJsonError(await post(srv, { forwarded: 'for=203.0.113.5;proto=http' }), 403, 'Forwarded');
        checkJsonError(await post(srv, { 'x-forwarded-for': 'garbage' }), 403, 'a malformed entry');
        assert.equal((await post(srv, { 'x-forwarded-for': '127.0.0.1' })).status, 200, 'a local client through the proxy');
        assert.equal((await post(srv, { forwarded: 'for="[::1]:1234"' })).status, 200, 'Forwarded for IPv6 loopback');
        assert.equal((await post(srv, { 'x-forwarded-for': '127.0.0.1, 127.0.0.2' })).status, 200, 'through two trusted hops');
        /* the body check at the head follows the same rule */
        const r = await partialBody(srv.port, publishHead('c', MIB, 'X-Forwarded-For: 203.0.113.5\r\n'), MIB, { timeoutMs: 8000 });
        assert.equal(r.status, 403, r.text.slice(0, 300));
    });
    it('without --trusted-proxy, forwarding headers are ignored', { timeout: 20000 }, async (t) => {
        const srv = await startServer([]);
        t.after(() => srv.stop('SIGKILL'));
        assert.equal((await post(srv, { 'x-forwarded-for': '203.0.113.5' })).status, 200);
    });
    it('in --help, from the environment, and malformed values refused', { timeout: 20000 }, async () => {
        const help = await runOnce(['--help']);
        assert.match(help.stdout, /--trusted-proxy CIDR/);
        const bad = await runOnce(['--trusted-proxy', '10.0.0.0/33']);
        assert.equal(bad.code, 2);
        assert.match(bad.stderr, /--trusted-proxy/);
        const srv = await startServer([], { PUSHEDGE_TRUSTED_PROXY: '127.0.0.1/32 ::1/128' });
        try {
            checkJsonError(await post(srv, {}), 403, 'trusted proxy from the environment');
        } finally {
            await srv.stop('SIGKILL');
        }
    });
});

describe('start-up warnings and randomness', () => {
    it('listening beyond loopback without --api-key, and a secret on the command line, are logged', { timeout: 20000 }, async (t) => {
        /* A wildcard listener next to the loopback one the harness adds. */
        const free = await new Promise((resolve) => {
            const s = net.createServer().listen(0, '127.0.0.1', () => {
                const p = s.address().port;
                s.close(() => resolve(p));
            });
        });
        const wide = await startServer(['--listen', `0.0.0.0:${free}`]);
        t.after(() => wide.stop('SIGKILL'));
        await waitUntil(() => /beyond loopback/.test(wide.output().stderr + wide.output().stdout), { what: 'the warning' });
        const keyed = await startServer(['--api-key', KEY]);
        t.after(() => keyed.stop('SIGKILL'));
        await waitUntil(() => /PUSHEDGE_API_KEY/.test(keyed.output().stderr + keyed.output().stdout), { what: 'the command-line secret warning' });
        const env = await startServer([], { PUSHEDGE_API_KEY: KEY });
        t.after(() => env.stop('SIGKILL'));
        const r = await httpRequest(env.url, '/healthz');
        assert.equal(r.status, 200);
        assert.ok(!/PUSHEDGE_API_KEY/.test(env.output().stderr + env.output().stdout), 'no warning for the environment');
    });

    it('drain retry hints differ from one start to the next', { timeout: 60000 }, async () => {
        const hints = [];
        for (let i = 0; i < 3; i++) {
            const srv = await startServer(['--drain-timeout', '2']);
            const sse = await openSSE(srv.url, '/sse?channel=r');
            await sse.waitLive();
            srv.proc.kill('SIGTERM');
            await sse.waitFor(() => sse.retries.length >= 2, 5000, 'the drain hint');
            hints.push(sse.retries[sse.retries.length - 1].value);
            sse.close();
            await srv.stop(null);
        }
        assert.ok(new Set(hints).size > 1, `three starts gave the same hint ${hints}`);
    });
});

describe('--no-ws-deflate', () => {
    it('declines permessage-deflate; without it the same offer is accepted', async (t) => {
        for (const [args, want] of [[['--no-ws-deflate'], false], [[], true]]) {
            const srv = await startServer(args);
            t.after(() => srv.stop());
            const ch = uniqueChannel('nodeflate');
            const ws = await openWs(srv.url, `/ws?channel=${ch}`, { t, perMessageDeflate: true });
            await ws.nextOp('subscribed');
            const ext = String(ws.upgradeHeaders['sec-websocket-extensions'] ?? '');
            assert.equal(/permessage-deflate/.test(ext), want, `${args.join(' ') || 'default'}: ${ext}`);
            const r = await httpRequest(srv.url, `/api/publish?channel=${ch}`, { method: 'POST', headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ secret: 'x'.repeat(2000) }) });
            assert.equal(r.status, 200, r.text);
            const m = await ws.next((j) => j.op === 'message' || j.data !== undefined);
            assert.equal(m.data.secret.length, 2000);
            await srv.stop();
        }
    });
});
