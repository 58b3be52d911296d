/*
 * Graceful shutdown (CONTRACT.md "Signals").
 *
 * Covered: SIGTERM and SIGINT with open SSE streams (HTTP/1.1 and HTTP/2): each stream gets a
 * retry: hint and then ends, the process exits 0 within --drain-timeout + slack; an idle
 * server exits 0 promptly; a draining server serves no new requests; a client that never
 * reads cannot hold the process past --drain-timeout.
 *
 * Not covered: WebSocket close codes and long-polls during a drain (their own suites),
 * resuming on another node after a restart (the memory engine dies with the process: the
 * Redis suite does it), a client that refuses to leave (needs WebSocket).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
    getMetrics,
    h2connect,
    httpRequest,
    metricValue,
    openSSE,
    publishMany,
    publishOk,
    rawConnect,
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
    assert.ok(Number.isInteger(hint.value) && hint.value >= 0);
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
    for (const s of streams) {
        await s.waitEnd(SLACK_MS);
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

    it('200 streams are all told to leave at once', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--drain-timeout', '10']);
        t.after(() => srv.stop('SIGKILL'));
        const streams = [];
        t.after(() => streams.forEach((s) => s.close()));
        for (let i = 0; i < 200; i += 50)
            streams.push(...(await Promise.all(Array.from({ length: 50 }, (_, j) => openSSE(srv.url, `/sse?channel=many${(i + j) % 7}`)))));
        await Promise.all(streams.map((s) => s.waitLive()));
        const t0 = Date.now();
        markDrain(streams);
        srv.proc.kill('SIGTERM');
        await Promise.all(streams.map((s) => s.waitEnd(SLACK_MS)));
        for (const s of streams)
            assertEndsWithRetry(s);
        const hints = new Set(streams.map((s) => s.retries[s.retries.length - 1].value));
        t.diagnostic(`${hints.size} distinct retry hints among ${streams.length} streams`);
        const r = await srv.stop(null);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(Date.now() - t0 <= SLACK_MS + 1000, `exit took ${Date.now() - t0} ms after every client had left`);
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

    it('stops accepting new connections while draining', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--drain-timeout', '3']);
        t.after(() => srv.stop('SIGKILL'));
        /* A connection with a request in progress keeps the drain going for a while. */
        const hold = net.connect({ host: '127.0.0.1', port: srv.port });
        t.after(() => hold.destroy());
        hold.on('error', () => {});
        await new Promise((resolve) => hold.once('connect', resolve));
        hold.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n');
        /* 16 streams: with SO_REUSEPORT-style listeners they land on every event loop, so once
         * all of them were told to leave, every loop has begun draining. (With a single stream
         * the check would race with loops that have not started draining yet.) */
        const streams = [];
        for (let i = 0; i < 16; i++)
            streams.push(await openSSE(srv.url, `/sse?channel=accept${i}`, { t }));
        await Promise.all(streams.map((s) => s.waitLive()));
        srv.proc.kill('SIGTERM');
        await Promise.all(streams.map((s) => s.waitEnd(SLACK_MS)));
        /* Once the streams were told to leave, a new request must not be served as usual. */
        let status = null;
        try {
            status = (await httpRequest(srv.url, '/healthz', { timeoutMs: 2000 })).status;
        } catch {
            status = 'refused';
        }
        assert.notEqual(status, 200, 'a draining server must not accept new work');
        const r = await srv.stop(null);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.ms <= 3000 + SLACK_MS, `exit took ${r.ms} ms with --drain-timeout 3`);
    });
});
