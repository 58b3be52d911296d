/*
 * The memory engine's channel lifecycle and epochs, on every transport:
 *  - a cursor from before a restart is a gap (the engine lost that history), never silence;
 *  - channel names nobody uses any more are freed (subscribe/unsubscribe churn, HTTP/2 streams
 *    reset at once), so strangers cannot grow the node by naming channels;
 *  - --max-channels bounds the channels a node holds, with a clear answer on each transport.
 * Memory engine only: the Redis engine keeps its own marks (tests/e2e/redis.test.mjs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import {
    startServer, publishOk, publish, openSSE, pollRequest, uniqueChannel, getMetrics, metricValue, waitUntil, checkJsonError,
    h2connect, httpRequest,
} from './lib.mjs';
import { openWs } from './wslib.mjs';

async function stopClean(srv) {
    const r = await srv.stop();
    assert.equal(r.killed, false, 'stopped in time');
    assert.equal(r.code, 0, `clean exit (signal ${r.signal})\n${r.stderr.slice(-4000)}`);
}

async function engineChannels(srv) {
    return metricValue(await getMetrics(srv.url), 'pushedge_engine_channels');
}

test('a cursor from before a memory-engine restart gets a gap on SSE, long-poll and WebSocket', async () => {
    const ch = uniqueChannel('epoch');
    let srv = await startServer([]);
    const ids = [];
    try {
        for (let i = 1; i <= 7; i++)
            ids.push(await publishOk(srv.url, ch, { n: i }));
    } finally {
        await stopClean(srv);
    }
    const cursor = ids[4]; /* after message 5 */
    srv = await startServer([]);
    try {
        const id8 = await publishOk(srv.url, ch, { n: 8 });

        const sse = await openSSE(srv.url, `/sse?channel=${ch}&since=${cursor}`);
        await sse.waitFor(() => sse.envelopes().length >= 1, 5000, 'message 8 on SSE');
        const types = sse.events.map((e) => e.type);
        assert.deepEqual(types, ['gap', 'message'], 'SSE: the gap, then message 8');
        assert.deepEqual(JSON.parse(sse.events[0].data), { channel: ch });
        assert.deepEqual(sse.envelopes().map((e) => e.data.n), [8]);
        sse.close();

        const p = await pollRequest(srv.url, `channel=${ch}&since=${cursor}`);
        assert.equal(p.status, 200);
        assert.deepEqual(p.json.gaps, [ch], 'long-poll: the gap');
        assert.deepEqual(p.json.messages.map((m) => m.id), [id8], 'long-poll: message 8');

        const ws = await openWs(srv.url, `/ws?channel=${ch}&since=${cursor}`);
        await ws.waitFor(() => ws.ops().some((o) => o.op === 'message'), 5000, 'message 8 on WebSocket');
        const ops = ws.ops().map((o) => o.op);
        assert.deepEqual(ops.filter((o) => o !== 'subscribed'), ['gap', 'message'], `WebSocket: the gap, then message 8 (${ops})`);
        assert.equal(ws.ops().find((o) => o.op === 'message').id, id8);
        ws.close();

        /* From the oldest retained message: no gap, only what this start holds. */
        const o = await pollRequest(srv.url, `channel=${ch}&since=0`);
        assert.deepEqual(o.json.gaps, []);
        assert.deepEqual(o.json.messages.map((m) => m.id), [id8]);
    } finally {
        await stopClean(srv);
    }
});

test('WebSocket subscribe/unsubscribe churn over thousands of names leaves no channel behind', async () => {
    const srv = await startServer([]);
    try {
        const ws = await openWs(srv.url, '/ws');
        const N = 3000;
        const prefix = uniqueChannel('churn');
        for (let i = 0; i < N; i++) {
            ws.send({ op: 'subscribe', channel: `${prefix}-${i}` });
            ws.send({ op: 'unsubscribe', channel: `${prefix}-${i}` });
        }
        const last = await ws.request({ op: 'ping' }, 15000);
        assert.equal(last.op, 'pong');
        assert.equal(ws.ops().filter((o) => o.op === 'unsubscribed').length, N, 'every unsubscribe answered');
        await waitUntil(async () => (await engineChannels(srv)) === 0, { timeoutMs: 5000, what: 'pushedge_engine_channels back to 0' });
        ws.close();
    } finally {
        await stopClean(srv);
    }
});

test('HTTP/2 SSE streams over new names, reset at once, leave no channel behind', async () => {
    const srv = await startServer([]);
    try {
        const session = await h2connect(srv.url);
        const prefix = uniqueChannel('h2reset');
        const open = (i) => {
            const names = Array.from({ length: 64 }, (_, k) => `channel=${prefix}-${i}-${k}`).join('&');
            const s = session.request({ ':method': 'GET', ':path': `/sse?${names}` });
            s.on('error', () => {});
            s.end();
            return s;
        };
        /* Half of the streams are answered (their channels registered) before the reset, so the
         * test cannot pass by resetting streams the server never looked at; the other half are
         * reset in the same burst as they are opened. */
        const answered = [];
        for (let i = 0; i < 25; i++)
            answered.push(open(i));
        await Promise.all(answered.map((s) => new Promise((resolve, reject) => {
            s.once('response', (h) => (h[':status'] === 200 ? resolve() : reject(new Error(`status ${h[':status']}`))));
            s.once('close', resolve);
        })));
        const held = await engineChannels(srv);
        assert.ok(held >= 25 * 64, `the answered streams hold their channels (${held})`);
        const streams = answered.slice();
        for (let i = 25; i < 50; i++)
            streams.push(open(i));
        for (const s of streams)
            s.close(http2.constants.NGHTTP2_CANCEL);
        session.close();
        await waitUntil(async () => (await engineChannels(srv)) === 0 &&
            metricValue(await getMetrics(srv.url), 'pushedge_channels') === 0,
        { timeoutMs: 10000, what: 'engine and subscribed channels back to 0' });
    } finally {
        await stopClean(srv);
    }
});

test('--max-channels: publish, SSE, long-poll and WebSocket refuse a new channel with channel_limit; existing ones work', async () => {
    const srv = await startServer(['--max-channels', '3']);
    try {
        const m = await getMetrics(srv.url);
        assert.equal(metricValue(m, 'pushedge_max_channels'), 3);
        const [a, b, c, d] = [uniqueChannel('lim'), uniqueChannel('lim'), uniqueChannel('lim'), uniqueChannel('lim')];
        await publishOk(srv.url, a, 1);
        await publishOk(srv.url, b, 1);
        await publishOk(srv.url, c, 1);
        const r = await publish(srv.url, d, 1);
        checkJsonError(r, 503, 'a 4th stored channel');
        assert.equal(r.json.error.code, 'channel_limit');
        assert.ok(Number(r.headers['retry-after']) >= 1, 'with Retry-After');
        await publishOk(srv.url, a, 2);

        /* Subscriptions count channels with subscribers: three fit, the fourth does not. */
        const s1 = await openSSE(srv.url, `/sse?channel=${a}&channel=${b}`);
        await s1.waitLive();
        const sse = await openSSE(srv.url, `/sse?channel=${c}&channel=${d}`);
        await sse.waitEnd();
        assert.equal(sse.status, 503);
        assert.equal(JSON.parse(sse.text).error.code, 'channel_limit');
        const p = await httpRequest(srv.url, `/poll?channel=${c}&channel=${d}`);
        checkJsonError(p, 503, 'long-poll over the limit');
        assert.equal(p.json.error.code, 'channel_limit');

        const ws = await openWs(srv.url, `/ws?channel=${c}`);
        await ws.nextOp('subscribed');
        const e = await ws.request({ op: 'subscribe', channel: d });
        assert.equal(e.op, 'error');
        assert.equal(e.code, 'channel_limit');
        await assert.rejects(openWs(srv.url, `/ws?channel=${d}`), (err) => err.status === 503 && JSON.parse(err.body).error.code === 'channel_limit');
        ws.close();
        s1.close();
        /* Room again once those subscribers left. */
        await waitUntil(async () => metricValue(await getMetrics(srv.url), 'pushedge_channels') === 0, { what: 'subscriptions gone' });
        const ok = await openSSE(srv.url, `/sse?channel=${d}`);
        await ok.waitLive();
        ok.close();
    } finally {
        await stopClean(srv);
    }
});
