/*
 * Threads as they run by default: publishers and subscribers of every transport spread over
 * every loop thread at once, on the engine E2E_ENGINE names, while subscribers come and go.
 *
 * The server runs with E2E_STRESS_THREADS loops (default 4, whatever the machine's core count:
 * more loops than cores is where cross-thread wake-ups interleave most; tests/tsan.sh also runs
 * it with 2 loops pinned to one core). SO_REUSEPORT spreads connections over the loops by a hash
 * of the address pair, and the run opens over a hundred, so every loop gets publishers and
 * subscribers (the chance that one of 4 loops gets none of 100 connections is 0.75^100).
 *
 * At once, for a bounded count of messages:
 *   - publishers: one keep-alive HTTP connection per channel posting as fast as answers come,
 *     and WebSocket connections sending `publish` ops round-robin over every channel, 4 in
 *     flight each;
 *   - steady subscribers, live before publishing starts: SSE (one or two channels), WebSocket
 *     (two channels, by query or by `subscribe` op) and long-poll loops (two channels, from
 *     `since=0`, following the cursor of each answer, each poll a new connection);
 *   - churn: WebSocket clients that subscribe, take a batch, unsubscribe and subscribe again
 *     from their last ID (a new connection every other round, so they hop threads), and SSE
 *     clients that disconnect and reconnect with `since=<last ID>`, on channels only they
 *     subscribe to (each round makes its loop watch and unwatch the channel) and on busy ones.
 *
 * Checked: every subscriber gets, per channel, exactly the acknowledged IDs (everything
 * published to it, sorted by ID: the order the engine assigns), each once, in order, across all
 * of its rounds; no gap and no error op; the server answers afterwards and exits cleanly (0,
 * no sanitizer report: a ThreadSanitizer report makes it exit non-zero).
 *
 * Not covered here: HTTP/2 (h2.test.mjs), slow consumers and drain (their own suites).
 *
 * Regression: with the memory engine and two or more threads, keep-alive publishers posting as
 * fast as they can crashed the server within a second (h2o socket buffers recycled into the
 * main thread's free list from every loop; a heap-use-after-free under ASan, a data race under
 * ThreadSanitizer).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, openSSE, uniqueChannel, assertAlive, pollRequest, cmpId, delay, getMetrics, metricValue } from './lib.mjs';
import { openWs } from './wslib.mjs';

const THREADS = Math.max(2, Number(process.env.E2E_STRESS_THREADS || 4));
/* Bounds: messages per publisher, and the time any one wait may take (sanitizer builds on a
 * loaded 2-core machine are the slow case). */
const HTTP_PER_CHANNEL = 1000;
const WS_PUBLISHERS = 3;
const WS_PER_PUBLISHER = 1000;
const WS_WINDOW = 4;
const CHURN_BATCH = 40;
const WAIT_MS = 90000;

/* Polls fn() every intervalMs until it returns true; an exception from fn() fails at once (a
 * broken check must not be retried into a timeout, or lost), and so does the bound. */
async function until(fn, { timeoutMs = WAIT_MS, intervalMs = 20, what }) {
    const deadline = Date.now() + timeoutMs;
    while (!fn()) {
        if (Date.now() > deadline)
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await delay(intervalMs);
    }
}

/* POSTs on one keep-alive connection, one at a time, as fast as answers come. */
function keepAlivePublisher(base, channel, count, tag) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const ids = [];
    return new Promise((resolve, reject) => {
        let n = 0;
        const next = () => {
            if (n === count) {
                agent.destroy();
                resolve(ids);
                return;
            }
            const body = JSON.stringify({ tag, n: ++n });
            const req = http.request(`${base}/api/publish?channel=${channel}`,
                { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
                (res) => {
                    let text = '';
                    res.setEncoding('utf8');
                    res.on('data', (c) => (text += c));
                    res.on('end', () => {
                        if (res.statusCode !== 200) {
                            agent.destroy();
                            reject(new Error(`publish ${tag}#${n}: ${res.statusCode} ${text}`));
                            return;
                        }
                        ids.push(JSON.parse(text).id);
                        next();
                    });
                });
            req.setTimeout(WAIT_MS, () => req.destroy(new Error(`publish ${tag}#${n}: no answer in ${WAIT_MS} ms`)));
            req.on('error', (e) => {
                agent.destroy();
                reject(e);
            });
            req.end(body);
        };
        next();
    });
}

/* `publish` ops over one WebSocket, round-robin over channels, `window` in flight; resolves to
 * [[channel, id]...] of the acknowledged ones. */
async function wsPublisher(base, channels, count, tag) {
    const c = await openWs(base, '/ws');
    const acked = [];
    const waiting = new Map(); /* ref -> {resolve, reject} */
    const failAll = (e) => {
        for (const w of waiting.values())
            w.reject(e);
        waiting.clear();
    };
    c.ws.on('message', (data, binary) => {
        if (binary)
            return failAll(new Error(`${tag}: a binary frame`));
        const j = JSON.parse(data.toString('utf8'));
        const w = waiting.get(j.ref);
        if (w) {
            waiting.delete(j.ref);
            w.resolve(j);
        }
    });
    c.ws.on('close', (code) => failAll(new Error(`${tag}: closed (${code}) with ${waiting.size} publishes unanswered`)));
    let n = 0;
    const lane = async () => {
        while (n < count) {
            const i = n++;
            const channel = channels[i % channels.length];
            const ref = `${tag}-${i}`;
            const reply = await new Promise((resolve, reject) => {
                const timer = setTimeout(() => reject(new Error(`${tag}: no answer to ${ref} in ${WAIT_MS} ms`)), WAIT_MS);
                waiting.set(ref, {
                    resolve: (j) => (clearTimeout(timer), resolve(j)),
                    reject: (e) => (clearTimeout(timer), reject(e)),
                });
                c.send({ op: 'publish', channel, data: { tag, i }, ref });
            });
            assert.equal(reply.op, 'published', `${tag}: ${ref} answered ${JSON.stringify(reply)}`);
            assert.equal(reply.channel, channel);
            acked.push([channel, reply.id]);
        }
    };
    try {
        await Promise.all(Array.from({ length: WS_WINDOW }, lane));
    } finally {
        c.close();
    }
    return acked;
}

/* Shared state of one run: the acknowledged IDs per channel once every publisher is done. */
function makeRun() {
    const run = { done: false, expected: new Map(), failed: null };
    run.last = (ch) => {
        const ids = run.expected.get(ch);
        return ids && ids.length ? ids[ids.length - 1] : null;
    };
    /* True once nothing more will be published and `got` holds the channel's last ID. */
    run.complete = (ch, got) => run.done && got.length > 0 && got[got.length - 1] === run.last(ch);
    return run;
}

/* Per channel, the IDs of messages (envelopes or ops with channel and id), in arrival order. */
function idsByChannel(items, channels) {
    const out = new Map(channels.map((c) => [c, []]));
    for (const m of items)
        if (out.has(m.channel))
            out.get(m.channel).push(m.id);
    return out;
}

/* A steady WebSocket subscriber of two channels. */
async function wsSubscriber(base, channels, byQuery) {
    const c = await openWs(base, byQuery ? `/ws?${channels.map((ch) => `channel=${ch}`).join('&')}` : '/ws');
    if (!byQuery)
        for (const ch of channels)
            c.send({ op: 'subscribe', channel: ch });
    await c.waitFor(() => channels.every((ch) => c.ops().some((j) => j.op === 'subscribed' && j.channel === ch)), WAIT_MS,
        `subscribed to ${channels.join(', ')}`);
    return {
        label: `ws subscriber of ${channels.join(', ')}`,
        channels,
        ids: () => idsByChannel(c.ops().filter((j) => j.op === 'message'), channels),
        problems: () => c.ops().filter((j) => j.op === 'error' || j.op === 'gap' || j.op === 'engine'),
        close: () => c.close(),
    };
}

/* A steady SSE subscriber. */
async function sseSubscriber(base, channels) {
    const s = await openSSE(base, `/sse?${channels.map((ch) => `channel=${ch}`).join('&')}`, { timeoutMs: WAIT_MS });
    assert.equal(s.status, 200);
    await s.waitLive(WAIT_MS);
    return {
        label: `SSE subscriber of ${channels.join(', ')}`,
        channels,
        ids: () => idsByChannel(s.envelopes(), channels),
        problems: () => s.events.filter((e) => e.type !== 'message'),
        close: () => s.close(),
    };
}

/* Long-polls channels from since=0, following each answer's cursor, until every channel reached
 * its last acknowledged ID; resolves to the IDs per channel. */
async function poller(base, channels, run) {
    const q = channels.map((ch) => `channel=${ch}`).join('&');
    const got = [];
    let cursor = '0';
    const deadline = Date.now() + 4 * WAIT_MS;
    for (;;) {
        const r = await pollRequest(base, `${q}&since=${encodeURIComponent(cursor)}&timeout=1`, { timeoutMs: WAIT_MS });
        assert.equal(r.status, 200, `poll of ${channels.join(', ')}: ${r.status} ${r.text}`);
        assert.deepEqual(r.json.gaps, [], `poll of ${channels.join(', ')}: no gap`);
        got.push(...r.json.messages);
        cursor = r.json.cursor;
        const byCh = idsByChannel(got, channels);
        if (channels.every((ch) => run.complete(ch, byCh.get(ch))))
            return byCh;
        if (run.failed)
            throw new Error(`poll of ${channels.join(', ')}: stopped, the run failed`);
        if (Date.now() > deadline)
            throw new Error(`poll of ${channels.join(', ')}: not complete within ${4 * WAIT_MS} ms`);
    }
}

/* Subscribe, take a batch, unsubscribe, resubscribe from the last ID; a new connection every
 * other round. Resolves to the IDs received over all rounds. */
async function wsChurner(base, ch, run, tag) {
    const got = [];
    let c = null;
    try {
        for (let round = 0; ; round++) {
            if (c === null || round % 2 === 1) {
                if (c)
                    c.close();
                c = await openWs(base, '/ws');
            }
            const conn = c;
            const sref = `${tag}-s${round}`, uref = `${tag}-u${round}`;
            const before = got.length;
            let pos = conn.messages.length, state = 'subscribing';
            /* Consumes this connection's ops in order: messages of ch count only between our
             * `subscribed` and `unsubscribed` replies. */
            const consume = () => {
                while (pos < conn.messages.length) {
                    const j = conn.messages[pos++].json;
                    if (!j)
                        throw new Error(`${tag}: a frame that is not JSON`);
                    if (j.ref === sref) {
                        assert.equal(j.op, 'subscribed', `${tag}: subscribe answered ${JSON.stringify(j)}`);
                        state = 'subscribed';
                    } else if (j.ref === uref) {
                        assert.equal(j.op, 'unsubscribed', `${tag}: unsubscribe answered ${JSON.stringify(j)}`);
                        state = 'unsubscribed';
                    } else if (j.op === 'message' && j.channel === ch) {
                        assert.equal(state, 'subscribed', `${tag}: a message of ${ch} outside the subscription (${state}): ${j.id}`);
                        got.push(j.id);
                    } else {
                        throw new Error(`${tag}: unexpected op ${JSON.stringify(j)}`);
                    }
                }
            };
            conn.send({ op: 'subscribe', channel: ch, since: got.length ? got[got.length - 1] : '0', ref: sref });
            /* Polled, not only on each frame: the end of publishing completes a round too. */
            await until(() => {
                consume();
                if (conn.closed)
                    throw new Error(`${tag}: closed by the server: ${conn.summary()}`);
                return state === 'subscribed' && (got.length - before >= CHURN_BATCH || run.complete(ch, got) || run.failed);
            }, { timeoutMs: WAIT_MS, intervalMs: 20, what: `${tag} round ${round}: a batch of ${ch}` });
            if (run.failed)
                throw new Error(`${tag}: stopped, the run failed`);
            conn.send({ op: 'unsubscribe', channel: ch, ref: uref });
            await until(() => {
                consume();
                if (conn.closed)
                    throw new Error(`${tag}: closed by the server: ${conn.summary()}`);
                return state === 'unsubscribed';
            }, { timeoutMs: WAIT_MS, intervalMs: 20, what: `${tag} round ${round}: unsubscribed from ${ch}` });
            if (run.complete(ch, got))
                return { rounds: round + 1, ids: got };
        }
    } finally {
        if (c)
            c.close();
    }
}

/* SSE: read a batch, disconnect, reconnect with since=<last ID>. */
async function sseChurner(base, ch, run, tag) {
    const got = [];
    for (let round = 0; ; round++) {
        const since = got.length ? got[got.length - 1] : '0';
        const s = await openSSE(base, `/sse?channel=${ch}&since=${encodeURIComponent(since)}`, { timeoutMs: WAIT_MS });
        try {
            assert.equal(s.status, 200, `${tag}: ${s.status}`);
            const before = got.length;
            let seen = 0;
            await until(() => {
                const env = s.envelopes();
                for (; seen < env.length; seen++) {
                    assert.equal(env[seen].channel, ch);
                    got.push(env[seen].id);
                }
                return got.length - before >= CHURN_BATCH || run.complete(ch, got) || run.failed;
            }, { timeoutMs: WAIT_MS, intervalMs: 50, what: `${tag} round ${round}: a batch of ${ch}` });
            assert.deepEqual(s.events.filter((e) => e.type !== 'message'), [], `${tag}: no gap or other event`);
        } finally {
            s.close();
        }
        if (run.failed)
            throw new Error(`${tag}: stopped, the run failed`);
        if (run.complete(ch, got))
            return { rounds: round + 1, ids: got };
    }
}

/*
 * A scrape reads every loop's node and counters; a loop that served before the others were set
 * up read them while they were written (a data race under ThreadSanitizer, a NULL node in the
 * worst case). Many loops make it likely that one is ready long before the last; scrapes on
 * fresh connections land on several of them.
 */
test('metrics scraped on every loop right after the start', async () => {
    const srv = await startServer(['--threads', '16']);
    try {
        for (let i = 0; i < 32; i++)
            assert.equal(metricValue(await getMetrics(srv.url), 'pushedge_subscribers'), 0, 'no subscriber yet');
    } finally {
        const r = await srv.stop();
        assert.equal(r.killed, false, 'stopped in time');
        assert.equal(r.code, 0, `clean exit (signal ${r.signal})\n${r.stderr.slice(-4000)}`);
    }
});

test(`every transport's publishers and subscribers across ${THREADS} threads, with churn: each subscriber gets exactly the acknowledged IDs, in order`, { timeout: 6 * WAIT_MS }, async () => {
    /* History long enough that no resume in here meets a trim. */
    const srv = await startServer(['--threads', String(THREADS), '--history-size', '20000']);
    const run = makeRun();
    const steady = [];
    try {
        const main = Array.from({ length: 4 }, () => uniqueChannel('stress'));
        const lonely = Array.from({ length: 2 }, () => uniqueChannel('stress-churn'));
        const all = [...main, ...lonely];

        /* Steady subscribers, live before anything is published. */
        for (let i = 0; i < 12; i++)
            steady.push(await sseSubscriber(srv.url, i % 3 === 2 ? [main[i % 4], main[(i + 1) % 4]] : [main[i % 4]]));
        for (let i = 0; i < 12; i++)
            steady.push(await wsSubscriber(srv.url, [main[i % 4], main[(i + 2) % 4]], i % 2 === 0));

        const pollers = Array.from({ length: 6 }, (_, i) => poller(srv.url, [main[i % 4], main[(i + 1) % 4]], run));
        const churners = [
            ...[lonely[0], lonely[0], lonely[1], lonely[1], main[0], main[3]].map((ch, i) => wsChurner(srv.url, ch, run, `ws-churn${i}`)),
            ...[lonely[0], lonely[1], main[2]].map((ch, i) => sseChurner(srv.url, ch, run, `sse-churn${i}`)),
        ];
        /* A failure anywhere stops the rest from waiting out their bounds. */
        const watch = (p) => p.catch((e) => {
            run.failed = run.failed || e;
            throw e;
        });
        const readers = Promise.all([...pollers, ...churners].map(watch));
        readers.catch(() => {});

        const published = await Promise.all([
            ...all.map((ch, i) => watch(keepAlivePublisher(srv.url, ch, HTTP_PER_CHANNEL, `http${i}`)).then((ids) => ids.map((id) => [ch, id]))),
            ...Array.from({ length: WS_PUBLISHERS }, (_, i) => watch(wsPublisher(srv.url, all, WS_PER_PUBLISHER, `wspub${i}`))),
        ]);
        for (const ch of all)
            run.expected.set(ch, []);
        for (const [ch, id] of published.flat())
            run.expected.get(ch).push(id);
        for (const [ch, ids] of run.expected) {
            ids.sort(cmpId);
            for (let i = 1; i < ids.length; i++)
                assert.notEqual(ids[i], ids[i - 1], `${ch}: ID ${ids[i]} acknowledged twice`);
        }
        run.done = true;

        for (const s of steady) {
            for (const ch of s.channels) {
                const want = run.expected.get(ch);
                await until(() => s.ids().get(ch).length >= want.length, { timeoutMs: WAIT_MS, intervalMs: 200, what: `${s.label}: ${want.length} messages on ${ch}` });
                assert.deepEqual(s.ids().get(ch), want, `${s.label}: exactly the acknowledged IDs of ${ch}, in order`);
            }
            assert.deepEqual(s.problems(), [], `${s.label}: no gap, error or engine notice`);
        }
        const results = await readers;
        for (const [i, byCh] of results.slice(0, pollers.length).entries())
            for (const [ch, ids] of byCh)
                assert.deepEqual(ids, run.expected.get(ch), `poller ${i}: exactly the acknowledged IDs of ${ch}, in order`);
        const churnChannels = [lonely[0], lonely[0], lonely[1], lonely[1], main[0], main[3], lonely[0], lonely[1], main[2]];
        for (const [i, r] of results.slice(pollers.length).entries()) {
            const ch = churnChannels[i];
            assert.ok(r.rounds >= 2, `churner ${i} of ${ch} subscribed more than once (${r.rounds} rounds)`);
            assert.deepEqual(r.ids, run.expected.get(ch), `churner ${i}: exactly the acknowledged IDs of ${ch} over ${r.rounds} rounds, in order`);
        }
        await assertAlive(srv, 'after the publish storm');
    } finally {
        run.failed = run.failed || new Error('finished');
        for (const s of steady)
            s.close();
        const r = await srv.stop();
        assert.equal(r.killed, false, 'stopped in time');
        assert.equal(r.code, 0, `clean exit (signal ${r.signal})\n${r.stderr.slice(-4000)}`);
    }
});
