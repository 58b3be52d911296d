/*
 * Graceful shutdown (docs/operations.md "Draining and deploys").
 *
 * Covered: SIGTERM and SIGINT with open SSE streams (HTTP/1.1 and HTTP/2): each stream gets a
 * retry: hint and then ends, the process exits 0 within --drain-timeout + slack; an idle
 * server exits 0 promptly; a draining server serves no new requests; a client that never
 * reads cannot hold the process past --drain-timeout. The paced drain: 200 streams are told
 * in batches whose times span --drain-spread, each with its own hint below 1 s; with the spread
 * equal to --drain-timeout and the loops kept busy, the last batch still told at the deadline; with
 * --drain-spread 0 all at once with hints of 1-5 s; the hint on every transport (WebSocket close
 * 1012 with the reason {"reconnect_ms":N}, SSE retry:, a held long-poll answered 200 with
 * Retry-After, "reconnect_ms" and Connection: close); --drain-spread longer than --drain-timeout
 * refused. On the Redis engine (e2e-redis-drain): the JS client on each transport, behind a
 * forwarder that sends new connections to node A while it listens and to node B after, holds
 * every acknowledged publish exactly once and in order across A's drain, and waited the hint it
 * was given.
 *
 * Not covered: resuming on another node with the memory engine (it dies with the process),
 * the reconnect spread at scale (tests/load/drain-spread.mjs, docs/benchmarks.md).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { PushEdge } from '../../web/src/pushedge.js';
import WebSocket from 'ws';
import { openWs } from './wslib.mjs';
import {
    delay,
    getMetrics,
    h2connect,
    httpRequest,
    metricValue,
    openSSE,
    publishMany,
    publishOk,
    pollRequest,
    rawConnect,
    runOnce,
    startServer,
    waitUntil,
} from './lib.mjs';

const SLACK_MS = 3000;

/*
 * A stream told to leave: a retry field arrived after the drain began (after the items it
 * had when the signal was sent: markDrain()), then the
 * stream ended with nothing incomplete. Complete events may still follow the hint (a message
 * that was on its way when the drain began is better delivered than dropped), but nothing
 * other than comments and events.
 */
function markDrain(streams) {
    for (const s of streams)
        s.drainMark = s.items.length;
}

function assertEndsWithRetry(sse) {
    const mark = sse.drainMark ?? 0;
    const hintAt = sse.items.findIndex((it, i) => i >= mark && it.kind === 'retry');
    assert.ok(hintAt >= 0, `the stream must get a retry: field when the drain begins; ${sse.summary()}`);
    const hint = sse.items[hintAt];
    /* docs/operations.md: a random retry: below 1 s when paced (the default), 1-5 s unpaced. */
    assert.ok(Number.isInteger(hint.value) && hint.value >= 0 && hint.value < 5000, `the drain hint is retry: ${hint.value}`);
    for (const it of sse.items.slice(hintAt + 1))
        assert.ok(it.kind === 'event' || it.kind === 'comment' || it.kind === 'retry', `after the hint: ${it.kind}`);
    assert.ok(sse.ended, 'the stream must end');
    assert.equal(sse.trailing, '', `no incomplete line may be left at EOF: ${JSON.stringify(sse.trailing)}`);
}

async function drainScenario(t, signal) {
    const drainTimeout = 10;
    const srv = await startServer(['--drain-timeout', String(drainTimeout)]);
    t.after(() => srv.stop('SIGKILL'));
    const streams = [];
    for (const path of ['/sse?channel=d1', '/sse?channel=d1', '/sse?channel=d2&channel=d3']) {
        const s = await openSSE(srv.url, path, { t });
        await s.waitLive();
        streams.push(s);
    }
    await publishOk(srv.url, 'd1', { before: 'drain' });
    await streams[0].next((e) => e.type === 'message', 5000, 'a message before the drain');

    const t0 = Date.now();
    markDrain(streams);
    srv.proc.kill(signal);
    /* Paced over the default spread (half of --drain-timeout): the last is told by 5 s. */
    for (const s of streams) {
        await s.waitEnd(drainTimeout * 500 + SLACK_MS);
        assertEndsWithRetry(s);
    }
    const r = await srv.stop(null);
    assert.equal(r.killed, false, `the process did not exit within the drain timeout + 5 s:\n${r.stderr}`);
    assert.equal(r.code, 0, `exit code ${r.code}, signal ${r.signal}\n${r.stderr}`);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed <= drainTimeout * 1000 + SLACK_MS, `exit took ${elapsed} ms`);
    return elapsed;
}

describe('drain', () => {
    it('SIGTERM: every SSE stream ends with a retry hint, exit 0', { timeout: 30000 }, async (t) => {
        await drainScenario(t, 'SIGTERM');
    });

    it('SIGINT: the same', { timeout: 30000 }, async (t) => {
        await drainScenario(t, 'SIGINT');
    });

    it('an HTTP/1.0 SSE stream (close-delimited) is drained cleanly', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--drain-timeout', '5']);
        t.after(() => srv.stop('SIGKILL'));
        const sock = await rawConnect(srv.port, 'GET /sse?channel=h10 HTTP/1.0\r\n\r\n');
        t.after(() => sock.destroy());
        const parts = [];
        sock.on('data', (c) => parts.push(c));
        sock.resume();
        await waitUntil(() => /\r\n\r\n[^]*id: [^\n]*\n\n/.test(Buffer.concat(parts).toString('latin1')), {
            timeoutMs: 5000,
            what: 'the HTTP/1.0 stream to go live',
        });
        const t0 = Date.now();
        srv.proc.kill('SIGTERM');
        await waitUntil(() => sock.closedByPeer, { timeoutMs: SLACK_MS, what: 'the server to close the HTTP/1.0 stream' });
        const text = Buffer.concat(parts).toString('latin1');
        const body = text.slice(text.indexOf('\r\n\r\n') + 4);
        assert.match(body, /\nretry: \d+\n(\n|$)[^]*$/, `the drain hint: ${JSON.stringify(body)}`);
        const r = await srv.stop(null);
        assert.equal(r.code, 0, `exit code ${r.code}:\n${r.stderr}`);
        assert.ok(Date.now() - t0 <= 5000 + SLACK_MS);
    });

    it('200 streams are told in batches spread over --drain-spread, each with its own hint below 1 s', { timeout: 30000 }, async (t) => {
        const spread = 3000;
        const srv = await startServer(['--drain-timeout', '10', '--drain-spread', String(spread)]);
        t.after(() => srv.stop('SIGKILL'));
        const streams = await openMany(t, srv, 200);
        const t0 = Date.now();
        markDrain(streams);
        srv.proc.kill('SIGTERM');
        await Promise.all(streams.map((s) => s.waitEnd(spread + SLACK_MS)));
        for (const s of streams)
            assertEndsWithRetry(s);
        const hints = streams.map((s) => s.retries[s.retries.length - 1].value);
        assert.ok(hints.every((h) => h < 1000), `paced hints are below 1 s: ${hints.filter((h) => h >= 1000)}`);
        assert.ok(new Set(hints).size >= 50, `${new Set(hints).size} distinct hints among 200`);
        const ends = streams.map((s) => s.endedAt - t0).sort((a, b) => a - b);
        const q = (f) => ends[Math.floor(f * (ends.length - 1))];
        const buckets = histogram(ends, 100);
        t.diagnostic(`ends after SIGTERM (ms): first ${q(0)}, p25 ${q(0.25)}, p50 ${q(0.5)}, p75 ${q(0.75)}, last ${q(1)}; ` +
            `busiest 100 ms: ${Math.max(...buckets)} streams`);
        /* The first batch goes at once, the last before the spread ends (each loop paces its own
         * streams: ceil(N * elapsed / spread) of them told by then). */
        assert.ok(q(0) < 1000, `the first batch ${q(0)} ms after the signal`);
        assert.ok(q(1) >= spread * 0.6 && q(1) <= spread + 1500, `the last end ${q(1)} ms after the signal (spread ${spread})`);
        assert.ok(q(0.75) - q(0.25) >= spread * 0.3, `the middle half spans ${q(0.75) - q(0.25)} ms`);
        assert.ok(Math.max(...buckets) <= 40, `at most 40 of 200 streams end in one 100 ms (have ${Math.max(...buckets)})`);
        const r = await srv.stop(null);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(Date.now() - t0 <= spread + SLACK_MS + 1000, `exit took ${Date.now() - t0} ms after the signal`);
    });

    it('--drain-spread equal to --drain-timeout: the last batch is told before the loops leave, even while they are kept busy', { timeout: 30000 }, async (t) => {
        /* Each loop's last batch falls due at --drain-spread, here the deadline itself, and the
         * ticks run a little late: a loop woken by I/O just past the deadline used to leave
         * first, and its last streams ended with the process, without a hint. Two loops, each
         * its own chance to be caught. */
        const srv = await startServer(['--threads', '2', '--drain-timeout', '5', '--drain-spread', '5000']);
        t.after(() => srv.stop('SIGKILL'));
        const streams = await openMany(t, srv, 200);
        /* Clients trickling a request head, a byte a millisecond each, spread over the loops by
         * the kernel: the loops wake all the time. */
        const socks = await Promise.all(Array.from({ length: 6 }, () => new Promise((resolve) => {
            const sock = net.connect(srv.port, '127.0.0.1', () => resolve(sock));
            sock.on('error', () => {});
        })));
        for (const sock of socks)
            sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
        const trickle = setInterval(() => socks.forEach((sock) => sock.write('a')), 1);
        t.after(() => {
            clearInterval(trickle);
            socks.forEach((sock) => sock.destroy());
        });
        markDrain(streams);
        srv.proc.kill('SIGTERM');
        await Promise.all(streams.map((s) => s.waitEnd(5000 + SLACK_MS)));
        clearInterval(trickle);
        const untold = streams.filter((s) => !s.items.slice(s.drainMark).some((it) => it.kind === 'retry'));
        assert.equal(untold.length, 0, `${untold.length} of 200 streams ended without a retry: hint`);
        for (const s of streams)
            assertEndsWithRetry(s);
        const r = await srv.stop(null);
        assert.equal(r.code, 0, r.stderr);
    });

    it('--drain-spread 0: every stream is told at once, with hints of 1-5 s', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--drain-timeout', '10', '--drain-spread', '0']);
        t.after(() => srv.stop('SIGKILL'));
        const streams = await openMany(t, srv, 50);
        const t0 = Date.now();
        markDrain(streams);
        srv.proc.kill('SIGTERM');
        await Promise.all(streams.map((s) => s.waitEnd(SLACK_MS)));
        for (const s of streams)
            assertEndsWithRetry(s);
        const ends = streams.map((s) => s.endedAt - t0);
        assert.ok(Math.max(...ends) < 1500, `all within ${Math.max(...ends)} ms`);
        const hints = streams.map((s) => s.retries[s.retries.length - 1].value);
        assert.ok(hints.every((h) => h >= 1000 && h < 5000), `unpaced hints are 1-5 s: ${hints}`);
        const r = await srv.stop(null);
        assert.equal(r.code, 0, r.stderr);
    });

    it('the hint on every transport: WebSocket 1012 {"reconnect_ms":N}, SSE retry:, long-poll 200 with Retry-After and reconnect_ms', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--drain-timeout', '6', '--drain-spread', '2000', '--poll-timeout', '20']);
        t.after(() => srv.stop('SIGKILL'));
        const ws = await openWs(srv.url, '/ws?channel=hint', { t });
        await ws.nextOp('subscribed');
        const sse = await openSSE(srv.url, '/sse?channel=hint', { t });
        await sse.waitLive();
        /* A held poll: a cursor at the end of a channel with one message, nothing newer. */
        const id = await publishOk(srv.url, 'hint', { n: 1 });
        await ws.nextOp('message');
        const held = pollRequest(srv.url, `channel=hint&since=${id}`, { timeoutMs: 15000 });
        await waitUntil(async () => (await connectionsGaugeOf(srv, 'poll')) >= 1, { timeoutMs: 5000, what: 'the poll to be held' });
        markDrain([sse]);
        const t0 = Date.now();
        srv.proc.kill('SIGTERM');

        const closed = await ws.waitClose(2000 + SLACK_MS);
        assert.equal(closed.code, 1012, ws.summary());
        const reason = JSON.parse(closed.reason);
        assert.deepEqual(Object.keys(reason), ['reconnect_ms'], closed.reason);
        assert.ok(Number.isInteger(reason.reconnect_ms) && reason.reconnect_ms >= 0 && reason.reconnect_ms < 1000, closed.reason);

        await sse.waitEnd(2000 + SLACK_MS);
        assertEndsWithRetry(sse);

        const p = await held;
        assert.equal(p.status, 200, p.text);
        assert.equal(p.json.cursor !== undefined, true, p.text);
        assert.deepEqual(p.json.messages, []);
        assert.ok(Number.isInteger(p.json.reconnect_ms) && p.json.reconnect_ms >= 0 && p.json.reconnect_ms < 1000, p.text);
        assert.equal(p.headers['retry-after'], String(Math.ceil(p.json.reconnect_ms / 1000)), 'Retry-After: the hint in whole seconds, rounded up');
        /* Not kept alive: the client's next poll must reach another node, not this one again. */
        assert.equal(p.headers.connection, 'close', 'the draining node closes the connection after the answer');
        assert.ok(p.ms < 2000 + SLACK_MS, `the held poll was answered ${Date.now() - t0} ms into the drain`);
        const r = await srv.stop(null);
        assert.equal(r.code, 0, r.stderr);
    });

    it('--drain-spread longer than --drain-timeout is refused (exit 2, naming the option)', async () => {
        const r = await runOnce(['--drain-timeout', '2', '--drain-spread', '2001']);
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, /--drain-spread/);
        const ok = await runOnce(['--drain-timeout', '2', '--drain-spread', 'x']);
        assert.equal(ok.code, 2);
        assert.match(ok.stderr, /--drain-spread/);
    });

    it('a client that never reads does not hold the drain beyond --drain-timeout', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--drain-timeout', '2']);
        t.after(() => srv.stop('SIGKILL'));
        /* 4 MiB of history to replay into a socket nobody reads: the server's write gets stuck. */
        const payload = 'q'.repeat(4096);
        await publishMany(srv.url, 'stuck', 1000, (i) => ({ i, payload }), 8);
        const sock = await rawConnect(srv.port, 'GET /sse?channel=stuck&since=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
        t.after(() => sock.destroy());
        await waitUntil(
            async () => (metricValue(await getMetrics(srv.url), 'pushedge_connections', { transport: 'sse' }) ?? 0) >= 1,
            { timeoutMs: 5000, what: 'the stuck stream to be counted' },
        );
        const t0 = Date.now();
        srv.proc.kill('SIGTERM');
        const r = await srv.stop(null);
        assert.equal(r.killed, false, 'the process had to be killed');
        assert.equal(r.code, 0, r.stderr);
        const elapsed = Date.now() - t0;
        assert.ok(elapsed <= 2000 + SLACK_MS, `exit took ${elapsed} ms with --drain-timeout 2`);
    });

    it('an idle server exits 0 at once on SIGTERM', { timeout: 20000 }, async (t) => {
        const srv = await startServer(['--drain-timeout', '10']);
        t.after(() => srv.stop('SIGKILL'));
        const r = await srv.stop('SIGTERM');
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.ms < SLACK_MS, `an idle server should not wait for the drain timeout (${r.ms} ms)`);
    });

    it('an HTTP/2 SSE stream also ends with a retry hint', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--drain-timeout', '10']);
        t.after(() => srv.stop('SIGKILL'));
        const session = await h2connect(srv.url);
        t.after(() => session.destroy());
        const sse = await openSSE(srv.url, '/sse?channel=h2drain', { session, t });
        await sse.waitLive();
        markDrain([sse]);
        srv.proc.kill('SIGTERM');
        await sse.waitEnd(SLACK_MS);
        assertEndsWithRetry(sse);
        const r = await srv.stop(null);
        assert.equal(r.code, 0, r.stderr);
    });

    it('while draining: new connections refused; requests on open connections answered at once (503 draining, /readyz 503); HTTP/2 gets GOAWAY', { timeout: 30000 }, async (t) => {
        /* One loop, so the held connections and the stream that keeps the drain going share it. */
        const srv = await startServer(['--drain-timeout', '3', '--threads', '1']);
        t.after(() => srv.stop('SIGKILL'));
        await holdDrain(t, srv);
        /* Requests begun before the drain, completed after it began. */
        const late = {
            sse: await heldRequest(t, srv.port, 'GET /sse?channel=late HTTP/1.1\r\nHost: 127.0.0.1\r\n'),
            poll: await heldRequest(t, srv.port, 'GET /poll?channel=late HTTP/1.1\r\nHost: 127.0.0.1\r\n'),
            ws: await heldRequest(t, srv.port, 'GET /ws?channel=late HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n' +
                'Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n'),
            readyz: await heldRequest(t, srv.port, 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n'),
        };
        const session = await h2connect(srv.url);
        t.after(() => session.destroy());
        const h2sse = await openSSE(srv.url, '/sse?channel=h2goaway', { session, t });
        await h2sse.waitLive();
        const goaway = new Promise((resolve) => session.once('goaway', (code) => resolve({ code, at: Date.now() })));

        srv.proc.kill('SIGTERM');
        const g = await Promise.race([goaway, delay(SLACK_MS, null)]);
        assert.ok(g, 'an HTTP/2 connection gets GOAWAY when the drain begins');
        assert.equal(g.code, 0, 'GOAWAY with NO_ERROR');
        await h2sse.waitEnd(SLACK_MS);
        await assert.rejects(httpRequest(srv.url, '/healthz', { timeoutMs: 2000 }), /ECONNREFUSED|ECONNRESET/, 'a new connection is refused');
        for (const [what, h] of Object.entries(late)) {
            const a = await h.finish(2000);
            assert.ok(a.ms < 1000, `${what}: answered ${a.ms} ms into the drain`);
            assert.equal(a.status, 503, `${what}: ${a.head}`);
            const code = what === 'readyz' ? 'not_ready' : 'draining';
            assert.equal(JSON.parse(a.body).error.code, code, `${what}: ${a.body}`);
            if (what !== 'readyz')
                assert.match(a.head, /\r\nretry-after: \d+\r\n/i, `${what} carries Retry-After`);
        }
        const r = await srv.stop(null);
        assert.equal(r.code, 0, r.stderr);
        /* The stuck stream held the drain to its deadline, and not past it. Timed by the server's
         * own log (the sanitizer's exit-time leak scan after it is not the drain's). */
        const at = (re) => Date.parse((r.stderr.split('\n').find((l) => re.test(l)) || '').split(' ')[0]);
        const drainMs = at(/drained; exiting/) - at(/draining \(at most/);
        assert.ok(drainMs >= 2900 && drainMs <= 3000 + 1000, `the drain took ${drainMs} ms with --drain-timeout 3:\n${r.stderr.slice(-2000)}`);
    });

    it('a second signal stops at once', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--drain-timeout', '10', '--threads', '1']);
        t.after(() => srv.stop('SIGKILL'));
        await holdDrain(t, srv);
        const readyz = await heldRequest(t, srv.port, 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n');
        srv.proc.kill('SIGTERM');
        /* The drain has begun once /readyz says so. */
        const a = await readyz.finish(2000);
        assert.equal(a.status, 503);
        const t0 = Date.now();
        srv.proc.kill('SIGTERM');
        const r = await srv.stop(null, { expectSignal: 'SIGTERM' });
        assert.equal(r.killed, false);
        /* Documented as "stops at once": the default action of the signal, not a drain. */
        assert.equal(r.signal, 'SIGTERM', `the second signal ends the process: code ${r.code}, signal ${r.signal}`);
        assert.ok(Date.now() - t0 < 1500, `the second signal took ${Date.now() - t0} ms (the drain had 10 s left)`);
    });
});

async function openMany(t, srv, n) {
    const streams = [];
    t.after(() => streams.forEach((s) => s.close()));
    for (let i = 0; i < n; i += 50)
        streams.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, j) => openSSE(srv.url, `/sse?channel=many${(i + j) % 7}`)))));
    await Promise.all(streams.map((s) => s.waitLive()));
    return streams;
}

/* Counts per `width` ms bucket of the times (ms). */
function histogram(times, width) {
    const b = [];
    for (const x of times) {
        const i = Math.max(0, Math.floor(x / width));
        b[i] = (b[i] ?? 0) + 1;
    }
    return Array.from(b, (v) => v ?? 0);
}

async function connectionsGaugeOf(srv, transport) {
    return metricValue(await getMetrics(srv.url), 'pushedge_connections', { transport }) ?? 0;
}

/*
 * Keeps a server's drain going until --drain-timeout: an HTTP/2 SSE stream whose client grants
 * no flow-control window (SETTINGS_INITIAL_WINDOW_SIZE 0) can never be written, so it cannot
 * end. (A stalled HTTP/1 socket is not enough: the kernel buffers tens of MiB of loopback.)
 */
async function holdDrain(t, srv) {
    const before = metricValue(await getMetrics(srv.url), 'pushedge_connections', { transport: 'sse' }) ?? 0;
    const session = http2.connect(srv.url, { settings: { initialWindowSize: 0 } });
    session.on('error', () => {});
    t.after(() => session.destroy());
    const req = session.request({ ':path': '/sse?channel=stuck' });
    req.on('error', () => {});
    await new Promise((resolve, reject) => {
        req.once('response', (h) => (h[':status'] === 200 ? resolve() : reject(new Error(`stuck stream: ${h[':status']}`))));
        req.once('error', reject);
    });
    await waitUntil(
        async () => (metricValue(await getMetrics(srv.url), 'pushedge_connections', { transport: 'sse' }) ?? 0) >= before + 1,
        { timeoutMs: 5000, what: 'the stuck stream to be counted' },
    );
}

/*
 * A request whose head is sent without its final blank line: finish() completes it and
 * resolves with the answer ({status, head, body, ms}) once its Content-Length is in.
 */
async function heldRequest(t, port, partial) {
    const sock = net.connect({ host: '127.0.0.1', port });
    t.after(() => sock.destroy());
    sock.on('error', () => {});
    await new Promise((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
    });
    let buf = Buffer.alloc(0), closed = false;
    sock.on('data', (c) => (buf = Buffer.concat([buf, c])));
    sock.on('close', () => (closed = true));
    /* A first, complete request shows that the server accepted the connection (one still in
     * the listen backlog when the drain begins is never served). */
    sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await waitUntil(() => /^HTTP\/1\.1 200[^]*\{"status":"ok"\}\r\n0\r\n\r\n$/.test(buf.toString('latin1')), { timeoutMs: 5000, what: 'the keep-alive /healthz answer' });
    buf = Buffer.alloc(0);
    sock.write(partial);
    return {
        async finish(timeoutMs) {
            const t0 = Date.now();
            sock.write('\r\n');
            return waitUntil(() => {
                const end = buf.indexOf('\r\n\r\n');
                if (end < 0)
                    return null;
                const head = buf.subarray(0, end).toString('latin1');
                /* Without keep-alive (a draining node) the body may end with the connection. */
                const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
                const status = Number(head.split(' ')[1]), ms = Date.now() - t0;
                if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
                    const rest = buf.subarray(end + 4).toString('utf8');
                    if (!rest.endsWith('\r\n0\r\n\r\n'))
                        return null;
                    return { status, head: head + '\r\n', body: rest.replace(/(^|\r\n)[0-9a-f]+\r\n/gi, '').replace(/\r\n$/, ''), ms };
                }
                const len = cl ? Number(cl[1]) : closed ? buf.length - end - 4 : -1;
                if (len < 0 || buf.length < end + 4 + len)
                    return null;
                return { status, head: head + '\r\n', body: buf.subarray(end + 4, end + 4 + len).toString('utf8'), ms };
            }, { timeoutMs, intervalMs: 10, what: `the answer to ${JSON.stringify(partial.split('\r\n')[0])} (have ${JSON.stringify(buf.toString('latin1').slice(0, 200))})` });
        },
    };
}

/*
 * A stand-in for a load balancer: each new connection goes to the first of `ports` that
 * accepts it (a draining node has closed its listeners, so the next one takes over), bytes are
 * piped both ways, and either side's end ends the other.
 */
function forwarder(ports) {
    const socks = new Set();
    const server = net.createServer((client) => {
        socks.add(client);
        client.on('close', () => socks.delete(client));
        client.on('error', () => {});
        client.pause();
        const tryPort = (i) => {
            if (i >= ports.length) {
                client.destroy();
                return;
            }
            const up = net.connect({ host: '127.0.0.1', port: ports[i] });
            up.once('error', () => tryPort(i + 1));
            up.once('connect', () => {
                up.removeAllListeners('error');
                up.on('error', () => client.destroy());
                socks.add(up);
                up.on('close', () => {
                    socks.delete(up);
                    client.destroy();
                });
                client.on('close', () => up.destroy());
                client.pipe(up);
                up.pipe(client);
                client.resume();
            });
        };
        tryPort(0);
    });
    return new Promise((resolve) => {
        server.listen(0, '127.0.0.1', () => resolve({
            url: `http://127.0.0.1:${server.address().port}`,
            close() {
                server.close();
                for (const s of socks)
                    s.destroy();
            },
        }));
    });
}

describe('drain to another node (Redis engine)', () => {
    const REDIS = process.env.E2E_ENGINE === 'redis';
    it('the JS client on each transport holds every acknowledged publish exactly once, in order, across a drain, after waiting its hint', { timeout: 60000, skip: !REDIS && 'needs E2E_ENGINE=redis (the e2e-redis-drain test)' }, async (t) => {
        const args = ['--poll-timeout', '3', '--ping-interval', '5'];
        const a = await startServer([...args, '--drain-timeout', '6', '--drain-spread', '2000']);
        t.after(() => a.stop('SIGKILL'));
        const b = await startServer(args);
        t.after(() => b.stop('SIGKILL'));
        const lb = await forwarder([a.port, b.port]);
        t.after(() => lb.close());
        const channel = `drain-x-${process.pid}-${Date.now()}`;
        const clients = [];
        t.after(() => clients.forEach((c) => c.close()));
        for (const tr of ['websocket', 'sse', 'poll']) {
            for (let i = 0; i < 3; i++) {
                const c = new PushEdge(lb.url, { WebSocket, transports: [tr], probeTimeout: 3000, connectTimeout: 5000, backoffBase: 100, backoffCap: 1000 });
                c.tr = tr;
                c.got = [];
                c.gaps = [];
                c.drains = [];
                c.on('gap', (g) => c.gaps.push(g));
                c.on('disconnected', (d) => c.drains.push({ ...d, at: Date.now() }));
                c.on('connected', () => (c.connectedAt = Date.now()));
                c.subscribe(channel, (m) => c.got.push(m.id), { since: '0' });
                clients.push(c);
            }
        }
        await waitUntil(() => clients.every((c) => c.transport === c.tr), { timeoutMs: 15000, what: 'every client connected' });
        /* Every client is on A (the forwarder's first choice) before the drain. */
        await waitUntil(async () => {
            const m = await getMetrics(a.url);
            return ['ws', 'sse'].every((k) => (metricValue(m, 'pushedge_connections', { transport: k }) ?? 0) >= 3);
        }, { timeoutMs: 10000, what: 'the streaming clients on node A' });

        /* A steady publisher on B: every acknowledged id is expected by every client. */
        const acked = [];
        let publishing = true;
        const pub = (async () => {
            for (let n = 0; publishing && n < 2000; n++) {
                acked.push(await publishOk(b.url, channel, { n }));
                await delay(20);
            }
        })();
        await waitUntil(() => acked.length >= 20, { timeoutMs: 10000, what: 'publishes before the drain' });
        const t0 = Date.now();
        a.proc.kill('SIGTERM');
        const r = await a.stop(null);
        assert.equal(r.code, 0, r.stderr);
        await delay(1500);
        publishing = false;
        await pub;
        for (const c of clients)
            await waitUntil(() => c.got.length >= acked.length, { timeoutMs: 15000, what: `${c.tr}: ${acked.length} messages (have ${c.got.length})` });
        /* A last message flushes out anything sent twice behind the expected ones. */
        const last = await publishOk(b.url, channel, { n: 'last' });
        acked.push(last);
        for (const c of clients)
            await waitUntil(() => c.got.includes(last), { timeoutMs: 10000, what: `${c.tr}: the last message` });
        for (const c of clients) {
            assert.deepEqual(c.got, acked, `${c.tr}: every acknowledged message exactly once, in order`);
            assert.deepEqual(c.gaps, [], `${c.tr}: no gap`);
            const d = c.drains.find((x) => x.at >= t0);
            if (c.tr === 'poll') {
                /* The poll transport waits the answer's reconnect_ms in place: no disconnect. */
                assert.equal(d, undefined, `poll: ${JSON.stringify(d)}`);
                assert.equal(c.transport, 'poll');
                continue;
            }
            assert.ok(d, `${c.tr}: the client was told to leave`);
            assert.equal(d.reason, 'drain', `${c.tr}: ${JSON.stringify(d)}`);
            assert.ok(d.retryIn >= 0 && d.retryIn < 1250, `${c.tr}: waits the hint (< 1 s) plus at most a quarter: ${d.retryIn}`);
        }
        t.diagnostic(`${acked.length} messages; drains: ${clients.map((c) => `${c.tr}:${c.drains.filter((x) => x.at >= t0).map((x) => `${x.reason}/${x.retryIn}@${x.at - t0}`).join(',')}`).join(' ')}`);
    });
});
