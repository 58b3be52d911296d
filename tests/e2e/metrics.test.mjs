/*
 * Every metric docs/operations.md documents, each asserted with the value its meaning implies
 * (deltas of counters and gauges around an action, so the file runs on either engine):
 *
 *   pushedge_connections{transport}       one stream of each transport opens and leaves
 *   pushedge_subscribers                  one per subscribing connection
 *   pushedge_channels                     channels with local subscribers
 *   pushedge_engine_channels              channels the memory engine holds (0 on Redis)
 *   pushedge_max_channels                 the --max-channels bound
 *   pushedge_messages_published_total     HTTP and WebSocket publishes, refused ones excluded
 *   pushedge_publish_errors_total         a publish refused by an unreachable engine
 *   pushedge_messages_delivered_total     live and catch-up deliveries
 *   pushedge_gaps_total                   a cursor older than the retained history
 *   pushedge_http_requests_total          requests counted one by one
 *   pushedge_engine_ready{engine}         1 on a working engine, 0 on an unreachable Redis
 *   pushedge_draining                     0, then 1 while a drain is held open
 *   pushedge_loop_lag_seconds{thread}     one sample per thread, small on an idle server
 *   pushedge_slow_consumers_total{transport}  present and 0 here; the slow-consumer cases of
 *                                         ws.test.mjs and sse.test.mjs assert it counts
 *
 *   pushedge_delivery_latency_seconds{transport}     histogram: one live message to each
 *                                         transport counts once (SSE on HTTP/1 and HTTP/2); a
 *                                         catch-up read counts nothing
 *   pushedge_connection_duration_seconds{transport}  histogram: each ended connection counts once
 *   pushedge_disconnects_total{transport,reason}     client_left (SSE, WebSocket, a held poll
 *                                         whose client left), heartbeat_timeout (a WebSocket
 *                                         that never answers pings), limit (a message over
 *                                         --max-message-size), error (a protocol violation),
 *                                         slow_consumer (an SSE reader that stopped reading);
 *                                         drain is asserted by logformat.test.mjs (the node
 *                                         exits before it can be scraped) and auth stays 0
 *                                         until tokens exist
 * Every histogram is checked for well-formed lines: buckets in ascending le, cumulative,
 * +Inf equal to _count, a _sum per series.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import {
    checkJsonError,
    freePort,
    getMetrics,
    h2connect,
    httpRequest,
    metricValue,
    openSSE,
    publish,
    publishMany,
    publishOk,
    sharedServer,
    startServer,
    uniqueChannel,
    waitUntil,
} from './lib.mjs';
import { OP, RawWS, openWs } from './wslib.mjs';

const THREADS = 2;
const HISTORY = 3;
const main = sharedServer(before, after, ['--threads', String(THREADS), '--history-size', String(HISTORY), '--ping-interval', '1']);
const ENGINE = process.env.E2E_ENGINE === 'redis' ? 'redis' : 'memory';

async function value(name, labels = {}) {
    const v = metricValue(await getMetrics(main.srv.url), name, labels);
    assert.notEqual(v, undefined, `${name}${JSON.stringify(labels)} is exported`);
    return v;
}

/** Waits until the metric equals want (gauges follow closes and fan-out asynchronously). */
async function expectValue(name, labels, want, what) {
    await waitUntil(async () => (await value(name, labels)) === want, {
        timeoutMs: 5000,
        what: `${name}${JSON.stringify(labels)} == ${want} (${what})`,
    });
}

describe('metrics: connections, subscribers, channels', () => {
    it('pushedge_connections{transport} counts one open stream of each transport, and drops it when it leaves', { timeout: 20000 }, async (t) => {
        const ch = uniqueChannel('conn');
        const base = {};
        for (const tr of ['sse', 'ws', 'poll'])
            base[tr] = await value('pushedge_connections', { transport: tr });

        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}`, { t });
        await sse.waitLive();
        await expectValue('pushedge_connections', { transport: 'sse' }, base.sse + 1, 'an SSE stream');
        const ws = await openWs(main.srv.url, `/ws?channel=${ch}`, { t });
        await ws.nextOp('subscribed');
        await expectValue('pushedge_connections', { transport: 'ws' }, base.ws + 1, 'a WebSocket');
        const held = httpRequest(main.srv.url, `/poll?channel=${ch}&timeout=15`, { timeoutMs: 20000 });
        await expectValue('pushedge_connections', { transport: 'poll' }, base.poll + 1, 'a held long-poll');

        /* A message answers the poll; the two others stay. */
        await publishOk(main.srv.url, ch, { n: 1 });
        assert.equal((await held).status, 200);
        await expectValue('pushedge_connections', { transport: 'poll' }, base.poll, 'the answered poll');
        sse.close();
        ws.close();
        await expectValue('pushedge_connections', { transport: 'sse' }, base.sse, 'the SSE client left');
        await expectValue('pushedge_connections', { transport: 'ws' }, base.ws, 'the WebSocket client left');
    });

    it('pushedge_subscribers counts subscribing connections; pushedge_channels the channels they hold', { timeout: 20000 }, async (t) => {
        const a = uniqueChannel('chA'), b = uniqueChannel('chB');
        const subs0 = await value('pushedge_subscribers');
        const chans0 = await value('pushedge_channels');
        const s1 = await openSSE(main.srv.url, `/sse?channel=${a}&channel=${b}`, { t });
        await s1.waitLive();
        await expectValue('pushedge_subscribers', {}, subs0 + 1, 'one stream over two channels');
        await expectValue('pushedge_channels', {}, chans0 + 2, 'two new channels on one thread');
        const ws = await openWs(main.srv.url, '/ws', { t });
        assert.equal((await ws.request({ op: 'subscribe', channel: a })).op, 'subscribed');
        await expectValue('pushedge_subscribers', {}, subs0 + 2, 'a WebSocket on one of them');
        /* Summed over threads: the WebSocket's thread counts channel a once more unless it is
         * the stream's thread. */
        const chans = await value('pushedge_channels');
        assert.ok(chans === chans0 + 2 || chans === chans0 + 3, `pushedge_channels ${chans}, was ${chans0}`);
        s1.close();
        ws.close();
        await expectValue('pushedge_subscribers', {}, subs0, 'both left');
        await expectValue('pushedge_channels', {}, chans0, 'no local subscriber is left on either channel');
    });

    it('pushedge_engine_channels counts the channels the memory engine holds (0 on Redis); pushedge_max_channels is the bound', { timeout: 20000 }, async (t) => {
        assert.equal(await value('pushedge_max_channels'), 1000000, 'the default --max-channels');
        const e0 = await value('pushedge_engine_channels');
        const ch = uniqueChannel('eng');
        await publishOk(main.srv.url, ch, { n: 1 });
        await publishOk(main.srv.url, ch, { n: 2 });
        /* A channel with history: held by the memory engine once, however many messages. */
        assert.equal(await value('pushedge_engine_channels'), ENGINE === 'memory' ? e0 + 1 : 0);
        const bounded = await startServer(['--max-channels', '7', '--threads', '1']);
        t.after(() => bounded.stop());
        assert.equal(metricValue(await getMetrics(bounded.url), 'pushedge_max_channels'), 7);
    });

    it('pushedge_slow_consumers_total{transport} is exported for every transport, 0 without a slow consumer', { timeout: 10000 }, async () => {
        for (const tr of ['sse', 'ws', 'poll'])
            assert.equal(await value('pushedge_slow_consumers_total', { transport: tr }), 0, tr);
    });
});

describe('metrics: messages', () => {
    it('pushedge_messages_published_total counts each stored message (HTTP and WebSocket), not refused ones', { timeout: 20000 }, async (t) => {
        const ch = uniqueChannel('pub');
        const p0 = await value('pushedge_messages_published_total');
        const e0 = await value('pushedge_publish_errors_total');
        await publishMany(main.srv.url, ch, 5);
        const ws = await openWs(main.srv.url, '/ws', { t });
        assert.equal((await ws.request({ op: 'publish', channel: ch, data: { n: 6 } })).op, 'published');
        /* Refused before the engine: neither stored nor an engine error. */
        checkJsonError(await publish(main.srv.url, 'bad name', 1), 400);
        const bad = await httpRequest(main.srv.url, `/api/publish?channel=${ch}`, { method: 'POST', body: '{' });
        checkJsonError(bad, 400);
        assert.equal(await value('pushedge_messages_published_total'), p0 + 6);
        assert.equal(await value('pushedge_publish_errors_total'), e0, 'a bad request is not an engine error');
    });

    it('pushedge_messages_delivered_total counts live and catch-up deliveries', { timeout: 20000 }, async (t) => {
        const ch = uniqueChannel('dlv');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}`, { t });
        await sse.waitLive();
        const d0 = await value('pushedge_messages_delivered_total');
        await publishMany(main.srv.url, ch, 3);
        await sse.waitFor(() => sse.envelopes().length >= 3, 5000, 'three live messages');
        await expectValue('pushedge_messages_delivered_total', {}, d0 + 3, 'three live messages to one subscriber');
        const r = await httpRequest(main.srv.url, `/poll?channel=${ch}&since=0`);
        assert.equal(r.json.messages.length, 3);
        await expectValue('pushedge_messages_delivered_total', {}, d0 + 6, 'three more from history to a poll');
        sse.close();
    });

    it('pushedge_gaps_total counts a gap signal', { timeout: 20000 }, async (t) => {
        const ch = uniqueChannel('gap');
        const ids = await publishMany(main.srv.url, ch, HISTORY + 2);
        const g0 = await value('pushedge_gaps_total');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=${ids[0]}`, { t });
        await sse.waitLive();
        assert.equal(sse.events.filter((e) => e.type === 'gap').length, 1, sse.summary());
        await expectValue('pushedge_gaps_total', {}, g0 + 1, 'one gap');
        const r = await httpRequest(main.srv.url, `/poll?channel=${ch}&since=${ids[0]}`);
        assert.deepEqual(r.json.gaps, [ch]);
        await expectValue('pushedge_gaps_total', {}, g0 + 2, 'and one on a poll');
        /* since=0 asks for whatever is retained: no gap. */
        assert.deepEqual((await httpRequest(main.srv.url, `/poll?channel=${ch}&since=0`)).json.gaps, []);
        assert.equal(await value('pushedge_gaps_total'), g0 + 2);
        sse.close();
    });
});

describe('metrics: requests, engine, loops', () => {
    it('pushedge_http_requests_total counts every request', { timeout: 10000 }, async () => {
        const r0 = await value('pushedge_http_requests_total');
        for (let i = 0; i < 5; i++)
            assert.equal((await httpRequest(main.srv.url, '/healthz')).status, 200);
        assert.equal((await httpRequest(main.srv.url, '/no-such-path')).status, 404);
        /* Six requests, and the /metrics request that reads the counter counts itself. */
        assert.equal(await value('pushedge_http_requests_total'), r0 + 6 + 1);
    });

    it(`pushedge_engine_ready{engine="${ENGINE}"} is 1 on a working engine`, { timeout: 10000 }, async () => {
        assert.equal(await value('pushedge_engine_ready', { engine: ENGINE }), 1);
    });

    it('an unreachable Redis: pushedge_engine_ready{engine="redis"} 0, and a refused publish counts in pushedge_publish_errors_total', { timeout: 20000 }, async (t) => {
        /* A port nobody listens on: the node serves, but its engine is down. */
        const port = await freePort();
        const srv = await startServer(['--redis', `redis://127.0.0.1:${port}`, '--threads', '1']);
        t.after(() => srv.stop());
        const m = await getMetrics(srv.url);
        assert.equal(metricValue(m, 'pushedge_engine_ready', { engine: 'redis' }), 0);
        assert.equal(metricValue(m, 'pushedge_publish_errors_total'), 0);
        const r = await publish(srv.url, uniqueChannel('down'), { n: 1 });
        checkJsonError(r, 503, 'a publish with Redis unreachable');
        const m2 = await getMetrics(srv.url);
        assert.equal(metricValue(m2, 'pushedge_publish_errors_total'), 1);
        assert.equal(metricValue(m2, 'pushedge_messages_published_total'), 0);
        assert.equal((await httpRequest(srv.url, '/readyz')).status, 503);
    });

    it('pushedge_loop_lag_seconds{thread}: one sample per thread, small on an idle server', { timeout: 15000 }, async () => {
        /* The lag timer fires every second: wait until each loop has measured at least twice. */
        const started = Date.now();
        await waitUntil(() => Date.now() - started >= 2100, { timeoutMs: 5000, intervalMs: 100, what: 'two lag periods' });
        const samples = (await getMetrics(main.srv.url)).filter((s) => s.name === 'pushedge_loop_lag_seconds');
        assert.deepEqual(samples.map((s) => s.labels.thread).sort(), Array.from({ length: THREADS }, (_, i) => String(i)));
        for (const s of samples)
            assert.ok(s.value >= 0 && s.value < 1, `thread ${s.labels.thread}: lag ${s.value} s on an idle server`);
    });
});

describe('metrics: draining', () => {
    it('pushedge_draining is 0, then 1 while the node drains', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--drain-timeout', '3', '--threads', '1']);
        t.after(() => srv.stop('SIGKILL'));
        assert.equal(metricValue(await getMetrics(srv.url), 'pushedge_draining'), 0);
        /* An HTTP/2 stream that is granted no flow-control window cannot end: it holds the drain
         * open, so a request on a connection opened before can still be answered. */
        const session = http2.connect(srv.url, { settings: { initialWindowSize: 0 } });
        session.on('error', () => {});
        t.after(() => session.destroy());
        const stuck = session.request({ ':path': '/sse?channel=stuck' });
        stuck.on('error', () => {});
        await new Promise((resolve) => stuck.once('response', resolve));
        const sock = net.connect({ host: '127.0.0.1', port: srv.port });
        t.after(() => sock.destroy());
        sock.on('error', () => {});
        let buf = '';
        sock.on('data', (c) => (buf += c.toString('latin1')));
        await new Promise((resolve) => sock.once('connect', resolve));
        /* A first request proves the connection was accepted before the listeners close. */
        sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
        await waitUntil(() => buf.endsWith('\r\n0\r\n\r\n'), { timeoutMs: 5000, what: 'the /healthz answer' });
        buf = '';
        sock.write('GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n');
        srv.proc.kill('SIGTERM');
        await new Promise((resolve) => session.once('goaway', resolve));
        sock.write('\r\n');
        await waitUntil(() => /\npushedge_draining \d+\n/.test(buf), { timeoutMs: 2000, what: `/metrics while draining (have ${JSON.stringify(buf.slice(0, 200))})` });
        assert.match(buf, /\npushedge_draining 1\n/);
        const r = await srv.stop(null);
        assert.equal(r.code, 0, r.stderr);
    });
});

/** Checks every series of histogram `name` and returns {transport: {count, sum}}. */
function checkHistogram(samples, name) {
    const out = {};
    for (const tr of ['sse', 'ws', 'poll']) {
        const buckets = samples.filter((s) => s.name === `${name}_bucket` && s.labels.transport === tr);
        assert.ok(buckets.length >= 2, `${name}{transport="${tr}"} has buckets`);
        let prevLe = -Infinity, prev = 0;
        for (const b of buckets) {
            const le = b.labels.le === '+Inf' ? Infinity : Number(b.labels.le);
            assert.ok(!Number.isNaN(le) && le > prevLe, `${name} le ascending: ${b.labels.le} after ${prevLe}`);
            assert.ok(Number.isInteger(b.value) && b.value >= prev, `${name} buckets cumulative at le=${b.labels.le}`);
            prevLe = le;
            prev = b.value;
        }
        assert.equal(prevLe, Infinity, `${name}{transport="${tr}"} ends with le="+Inf"`);
        const count = metricValue(samples, `${name}_count`, { transport: tr });
        const sum = metricValue(samples, `${name}_sum`, { transport: tr });
        assert.equal(count, prev, `${name}_count equals the +Inf bucket`);
        assert.ok(sum >= 0, `${name}_sum{transport="${tr}"} present`);
        out[tr] = { count, sum };
    }
    return out;
}

const REASONS = ['client_left', 'slow_consumer', 'heartbeat_timeout', 'drain', 'auth', 'limit', 'error'];

describe('metrics: delivery latency, connection lifetimes, disconnects', () => {
    async function disconnects(tr, reason, base = main.srv.url) {
        const v = metricValue(await getMetrics(base), 'pushedge_disconnects_total', { transport: tr, reason });
        assert.notEqual(v, undefined, `pushedge_disconnects_total{transport="${tr}",reason="${reason}"} is exported`);
        return v;
    }
    async function expectDisconnects(tr, reason, want, what, base = main.srv.url) {
        await waitUntil(async () => (await disconnects(tr, reason, base)) >= want, {
            timeoutMs: 8000,
            what: `pushedge_disconnects_total{transport="${tr}",reason="${reason}"} >= ${want} (${what})`,
        });
    }

    it('every reason of every transport is exported; the histograms are well formed', { timeout: 10000 }, async () => {
        const m = await getMetrics(main.srv.url);
        for (const tr of ['sse', 'ws', 'poll'])
            for (const reason of REASONS)
                assert.notEqual(metricValue(m, 'pushedge_disconnects_total', { transport: tr, reason }), undefined, `${tr} ${reason}`);
        assert.equal(m.filter((s) => s.name === 'pushedge_disconnects_total').length, 3 * REASONS.length, 'no other reason');
        checkHistogram(m, 'pushedge_delivery_latency_seconds');
        checkHistogram(m, 'pushedge_connection_duration_seconds');
    });

    it('pushedge_delivery_latency_seconds counts one live message per transport, small on loopback; catch-up counts nothing', { timeout: 20000 }, async (t) => {
        const ch = uniqueChannel('lat');
        const before = checkHistogram(await getMetrics(main.srv.url), 'pushedge_delivery_latency_seconds');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}`, { t });
        await sse.waitLive();
        const ws = await openWs(main.srv.url, `/ws?channel=${ch}`, { t });
        await ws.nextOp('subscribed');
        const held = httpRequest(main.srv.url, `/poll?channel=${ch}&timeout=15`, { timeoutMs: 20000 });
        await expectValue('pushedge_connections', { transport: 'poll' }, 1, 'a held long-poll');
        await publishOk(main.srv.url, ch, { n: 1 });
        assert.equal((await held).json.messages.length, 1);
        await sse.waitFor(() => sse.envelopes().length >= 1, 5000, 'the live message on SSE');
        await ws.nextOp('message');
        let after;
        await waitUntil(async () => {
            after = checkHistogram(await getMetrics(main.srv.url), 'pushedge_delivery_latency_seconds');
            return ['sse', 'ws', 'poll'].every((tr) => after[tr].count === before[tr].count + 1);
        }, { timeoutMs: 5000, what: 'one observation per transport' });
        for (const tr of ['sse', 'ws', 'poll']) {
            const seconds = after[tr].sum - before[tr].sum;
            assert.ok(seconds >= 0 && seconds < 1, `${tr}: ${seconds} s from publish to socket on an idle loopback server`);
        }
        /* History read by a poll and by a new SSE stream: not a live delivery. */
        assert.equal((await httpRequest(main.srv.url, `/poll?channel=${ch}&since=0`)).json.messages.length, 1);
        const late = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
        await late.waitFor(() => late.envelopes().length >= 1, 5000, 'the catch-up message');
        await delayMs(200);
        const last = checkHistogram(await getMetrics(main.srv.url), 'pushedge_delivery_latency_seconds');
        for (const tr of ['sse', 'ws', 'poll'])
            assert.equal(last[tr].count, after[tr].count, `${tr}: catch-up is not counted`);
        sse.close();
        ws.close();
        late.close();
    });

    it('client_left: SSE and WebSocket clients that leave, a held poll whose client goes; each ended connection in the lifetime histogram', { timeout: 20000 }, async (t) => {
        const ch = uniqueChannel('left');
        const b = { sse: await disconnects('sse', 'client_left'), ws: await disconnects('ws', 'client_left'), poll: await disconnects('poll', 'client_left') };
        const d0 = checkHistogram(await getMetrics(main.srv.url), 'pushedge_connection_duration_seconds');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}`, { t });
        await sse.waitLive();
        const ws = await RawWS.open(main.srv.port, `/ws?channel=${ch}`, { t, autoPong: true });
        await ws.waitFor(() => ws.messages.length >= 1, 5000, 'subscribed');
        const sock = net.connect({ host: '127.0.0.1', port: main.srv.port });
        sock.on('error', () => {});
        await new Promise((resolve) => sock.once('connect', resolve));
        sock.write(`GET /poll?channel=${ch}&timeout=15 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
        await expectValue('pushedge_connections', { transport: 'poll' }, 1, 'a held long-poll');
        sse.close();
        ws.sendClose(1000, 'bye');
        await ws.waitForEnd();
        sock.destroy();
        await expectDisconnects('sse', 'client_left', b.sse + 1, 'an SSE client left');
        await expectDisconnects('ws', 'client_left', b.ws + 1, 'a WebSocket client sent its close');
        await expectDisconnects('poll', 'client_left', b.poll + 1, 'a held poll whose client went away');
        const d1 = checkHistogram(await getMetrics(main.srv.url), 'pushedge_connection_duration_seconds');
        for (const tr of ['sse', 'ws', 'poll'])
            assert.ok(d1[tr].count >= d0[tr].count + 1 && d1[tr].sum > d0[tr].sum, `${tr}: an ended connection is in the lifetime histogram`);
    });

    it('HTTP/2 SSE (the core\'s stream mode): one live delivery counted, and client_left when the stream is reset', { timeout: 20000 }, async (t) => {
        const ch = uniqueChannel('h2lat');
        const before = checkHistogram(await getMetrics(main.srv.url), 'pushedge_delivery_latency_seconds');
        const left0 = await disconnects('sse', 'client_left');
        const session = await h2connect(main.srv.url);
        t.after(() => session.destroy());
        const stream = session.request({ ':path': `/sse?channel=${ch}` });
        stream.on('error', () => {});
        let body = '';
        stream.on('data', (c) => (body += c));
        await waitUntil(() => /^id: /m.test(body), { what: 'the live mark on the HTTP/2 stream' });
        await publishOk(main.srv.url, ch, { n: 1 });
        await waitUntil(() => body.includes('"n":1'), { what: 'the message on the HTTP/2 stream' });
        await waitUntil(async () => checkHistogram(await getMetrics(main.srv.url), 'pushedge_delivery_latency_seconds').sse.count === before.sse.count + 1,
            { what: 'one SSE observation' });
        stream.close(http2.constants.NGHTTP2_CANCEL);
        await expectDisconnects('sse', 'client_left', left0 + 1, 'an HTTP/2 stream reset');
    });

    it('heartbeat_timeout: a WebSocket that never answers pings (--ping-interval 1)', { timeout: 20000 }, async (t) => {
        const b = await disconnects('ws', 'heartbeat_timeout');
        const ws = await RawWS.open(main.srv.port, '/ws', { t, autoPong: false });
        assert.equal(ws.status, 101);
        await ws.waitForEnd(10000);
        await expectDisconnects('ws', 'heartbeat_timeout', b + 1, 'a silent peer');
    });

    it('limit: a WebSocket message over --max-message-size (1009); error: a protocol violation (1002)', { timeout: 20000 }, async (t) => {
        const bl = await disconnects('ws', 'limit'), be = await disconnects('ws', 'error');
        const big = await RawWS.open(main.srv.port, '/ws', { t, autoPong: true });
        big.sendText('x'.repeat(70000));
        await big.waitForEnd();
        assert.equal(big.close?.code, 1009, big.summary());
        await expectDisconnects('ws', 'limit', bl + 1, 'a message too big');
        const bad = await RawWS.open(main.srv.port, '/ws', { t, autoPong: true });
        bad.write(encodeUnmasked('hello'));
        await bad.waitForEnd();
        assert.equal(bad.close?.code, 1002, bad.summary());
        await expectDisconnects('ws', 'error', be + 1, 'an unmasked client frame');
    });

    it('slow_consumer: an SSE reader that stopped reading', { timeout: 60000 }, async (t) => {
        const srv = await startServer(['--threads', '1']);
        t.after(() => srv.stop());
        const ch = uniqueChannel('slow');
        const sock = net.connect({ host: '127.0.0.1', port: srv.port });
        sock.on('error', () => {});
        t.after(() => sock.destroy());
        await new Promise((resolve) => sock.once('connect', resolve));
        sock.write(`GET /sse?channel=${ch} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
        await waitUntil(async () => metricValue(await getMetrics(srv.url), 'pushedge_subscribers') === 1, { what: 'the stalled stream subscribed' });
        sock.pause();
        const payload = 'p'.repeat(60000);
        for (let i = 0; i < 40 && (await disconnects('sse', 'slow_consumer', srv.url)) === 0; i++)
            await publishMany(srv.url, ch, 20, (n) => ({ n, payload }), 4);
        await expectDisconnects('sse', 'slow_consumer', 1, 'a reader that stopped', srv.url);
        assert.equal(await disconnects('sse', 'client_left', srv.url), 0, 'counted once, under its first reason');
    });
});

function delayMs(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A text frame without the mask a client must set (RFC 6455 5.1): a protocol error. */
function encodeUnmasked(text) {
    const payload = Buffer.from(text);
    return Buffer.concat([Buffer.from([0x80 | OP.TEXT, payload.length]), payload]);
}
