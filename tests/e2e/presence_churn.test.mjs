/*
 * Presence at size (issue 15 item 5; docs/protocol.md "Large channels"): one channel with 2,000
 * presence subscribers (1,000 SSE, 1,000 WebSocket), then members joining and leaving in waves
 * while messages flow. Runs on the engine under test (memory, or Redis as e2e-redis-presence_churn).
 *
 * Asserted, for every one of the 2,000 subscribers that stayed:
 *  - every message published during the churn arrives exactly once and in publish order;
 *  - the presence traffic it sees is bounded by the mechanism, not by the churn: no join or
 *    leave while the channel is past --presence-max-members, joins and leaves over the whole
 *    run at most twice the bound, and count events at most one per --presence-count-interval
 *    (plus two for the edges of the window), with at least one count seen;
 *  - the listing's count is exact at the end (2,000).
 * Not covered here: several nodes (presence.test.mjs kills one), the JS client, slow consumers.
 *
 * Connections open in bounded parallel batches (BATCH at a time) so the test stays fast and far
 * below the 20,000-descriptor cap (about 2,200 sockets on each side at the peak).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { WebSocket } from 'ws';
import { delay, httpRequest, publishOk, startServer, uniqueChannel, waitUntil } from './lib.mjs';

const STAYERS = 2000;
const BATCH = 100;
const MAX_MEMBERS = 100;
const INTERVAL = 500; /* --presence-count-interval, ms */
const MESSAGES = 50;
const CHURN_WAVE = 50; /* members that join and leave per wave */
const PUBLISH_MS = 40000; /* at most this long for the publishes (about 5-12 s here under ASan) */

/* A lean SSE subscriber: records messages (ids), presence events and counts with their time. */
function sseSubscriber(url, ch) {
    const u = new URL(url);
    const sub = { kind: 'sse', ids: [], joins: [], leaves: [], counts: [], error: null, closed: false };
    return new Promise((resolve, reject) => {
        const req = http.request({ host: u.hostname, port: u.port, path: `/sse?channel=${ch}&presence=1`, agent: false,
            headers: { accept: 'text/event-stream' } });
        sub.close = () => req.destroy();
        const timer = setTimeout(() => {
            req.destroy();
            reject(new Error('SSE: no response within 10 s'));
        }, 10000);
        req.on('response', (res) => {
            clearTimeout(timer);
            if (res.statusCode !== 200) {
                req.destroy();
                reject(new Error(`SSE: status ${res.statusCode}`));
                return;
            }
            let buf = '';
            res.setEncoding('utf8');
            res.on('data', (chunk) => {
                buf += chunk;
                let end;
                while ((end = buf.indexOf('\n\n')) >= 0) {
                    const block = buf.slice(0, end);
                    buf = buf.slice(end + 2);
                    let type = 'message', data = null;
                    for (const line of block.split('\n')) {
                        if (line.startsWith('event: '))
                            type = line.slice(7);
                        else if (line.startsWith('data: '))
                            data = line.slice(6);
                    }
                    if (data === null)
                        continue; /* the live marker, heartbeats */
                    const t = Date.now(), d = JSON.parse(data);
                    if (type === 'message')
                        sub.ids.push(d.id);
                    else if (type === 'join')
                        sub.joins.push(t);
                    else if (type === 'leave')
                        sub.leaves.push(t);
                    else if (type === 'count')
                        sub.counts.push({ t, count: d.count });
                }
            });
            res.on('close', () => (sub.closed = true));
            resolve(sub);
        });
        req.on('error', (e) => {
            clearTimeout(timer);
            sub.error = e;
            sub.closed = true;
            reject(e);
        });
        req.end();
    });
}

/* The same over WebSocket (the channel and presence in the query). */
function wsSubscriber(url, ch) {
    const sub = { kind: 'ws', ids: [], joins: [], leaves: [], counts: [], error: null, closed: false };
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws?channel=${ch}&presence=1`, { perMessageDeflate: false,
            handshakeTimeout: 10000 });
        sub.close = () => ws.terminate();
        ws.on('message', (data) => {
            const t = Date.now(), o = JSON.parse(data.toString('utf8'));
            if (o.op === 'message')
                sub.ids.push(o.id);
            else if (o.op === 'join')
                sub.joins.push(t);
            else if (o.op === 'leave')
                sub.leaves.push(t);
            else if (o.op === 'count')
                sub.counts.push({ t, count: o.count });
            else if (o.op === 'subscribed')
                resolve(sub);
        });
        ws.on('error', (e) => {
            sub.error = e;
            reject(e);
        });
        ws.on('close', () => (sub.closed = true));
    });
}

/* Opens n subscribers, alternately SSE and WebSocket, BATCH at a time. */
async function openMany(url, ch, n) {
    const subs = [];
    for (let i = 0; i < n; i += BATCH) {
        const batch = [];
        for (let k = i; k < Math.min(n, i + BATCH); k++)
            batch.push(k % 2 === 0 ? sseSubscriber(url, ch) : wsSubscriber(url, ch));
        subs.push(...(await Promise.all(batch)));
    }
    return subs;
}

const memberCount = async (url, ch) =>
    (await httpRequest(url, `/api/presence?channel=${encodeURIComponent(ch)}&members=0`)).json.count;

describe('2,000 presence subscribers with members joining and leaving while messages flow', () => {
    let srv = null;
    const open = [];
    before(async () => {
        srv = await startServer(['--presence-max-members', String(MAX_MEMBERS), '--presence-count-interval', String(INTERVAL)]);
    });
    after(async () => {
        for (const s of open)
            s.close();
        if (srv)
            await srv.stop();
    });

    it('every message once and in order to every subscriber that stayed; presence traffic bounded', { timeout: 150000 }, async (t) => {
        const url = srv.url;
        const ch = uniqueChannel('churn');
        const t0 = Date.now();
        const stayers = await openMany(url, ch, STAYERS);
        open.push(...stayers);
        /* A member is listed once its subscription is live: then nothing published is missed. */
        await waitUntil(async () => (await memberCount(url, ch)) === STAYERS, { timeoutMs: 20000, intervalMs: 100,
            what: `${STAYERS} members listed` });
        const tOpen = Date.now() - t0;

        /* The churn window: waves of members join and leave while the messages go out. */
        const churnStart = Date.now();
        let publishing = true, waves = 0, churned = 0;
        const churn = (async () => {
            while (publishing && waves < 40 && Date.now() - churnStart < PUBLISH_MS) {
                const wave = await openMany(url, ch, CHURN_WAVE);
                open.push(...wave);
                await delay(50);
                for (const s of wave)
                    s.close();
                churned += wave.length;
                ++waves;
            }
        })();
        const published = [];
        for (let i = 0; i < MESSAGES && Date.now() - churnStart < PUBLISH_MS; i++) {
            published.push(await publishOk(url, ch, { n: i }));
            await delay(10);
        }
        publishing = false;
        await churn;
        const churnEnd = Date.now();
        assert.equal(published.length, MESSAGES, 'every publish went out within the deadline');
        assert.ok(waves >= 2, `members joined and left during the messages (${waves} waves)`);

        await waitUntil(() => stayers.every((s) => s.ids.length >= MESSAGES), { timeoutMs: 30000, intervalMs: 100,
            what: 'every stayer has every message' }).catch((e) => {
            const short = stayers.filter((s) => s.ids.length < MESSAGES);
            throw new Error(`${e.message}: ${short.length} short, e.g. ${short.slice(0, 3).map((s) => `${s.kind} ${s.ids.length}`)}`);
        });
        /* The leavers are gone; the stayers are all still listed. */
        await waitUntil(async () => (await memberCount(url, ch)) === STAYERS, { timeoutMs: 10000, intervalMs: 100,
            what: 'the count back to the stayers' });
        /* A last interval, so a count in flight lands before the bounds are checked. */
        await delay(INTERVAL * 2);

        const windowMs = churnEnd - churnStart;
        const maxCounts = Math.ceil(windowMs / INTERVAL) + 2;
        let worstCounts = 0, totalPresence = 0;
        for (const [i, s] of stayers.entries()) {
            assert.ok(!s.closed && !s.error, `stayer ${i} (${s.kind}) is still open`);
            assert.deepEqual(s.ids, published, `stayer ${i} (${s.kind}): every message once, in order`);
            const inWindow = (x) => x >= churnStart && x <= churnEnd;
            assert.equal(s.joins.filter(inWindow).length + s.leaves.filter(inWindow).length, 0,
                `stayer ${i} (${s.kind}): no join or leave past the bound`);
            assert.ok(s.joins.length + s.leaves.length <= 2 * MAX_MEMBERS, `stayer ${i}: ${s.joins.length} joins, ${s.leaves.length} leaves`);
            const counts = s.counts.filter((c) => inWindow(c.t)).length;
            assert.ok(counts <= maxCounts, `stayer ${i} (${s.kind}): ${counts} counts in ${windowMs} ms (at most ${maxCounts})`);
            assert.ok(s.counts.length >= 1, `stayer ${i} (${s.kind}) got a count`);
            /* (A wave's leaves may land after the next wave's joins: two waves at most.) */
            assert.ok(s.counts.every((c) => c.count > MAX_MEMBERS && c.count <= STAYERS + 2 * CHURN_WAVE),
                `stayer ${i}: counts past the bound only, within reach: ${JSON.stringify(s.counts)}`);
            worstCounts = Math.max(worstCounts, counts);
            totalPresence += s.joins.length + s.leaves.length + s.counts.length;
        }
        t.diagnostic(`${STAYERS} subscribers open and listed in ${tOpen} ms; ${waves} waves (${churned} members joined and left) ` +
            `over ${windowMs} ms with ${MESSAGES} messages; presence events per stayer: at most ${worstCounts} counts in the window ` +
            `(bound ${maxCounts}), ${(totalPresence / STAYERS).toFixed(1)} presence events on average over the run`);
    });
});
