/*
 * The resume matrix (docs/protocol.md "The cursor": a cursor obtained from any transport is accepted
 * by every transport). The same scenarios run over WebSocket, SSE and long-polling.
 *
 * Covered: for every ordered pair (A, B) of ws, sse and poll: N1 messages read through A from
 * since=0, A's cursor after the last one (ws: the message's id; sse: the last id: line; poll:
 * the returned cursor), N2 more published after A left, resumed through B (ws: the subscribe
 * op and the query; sse: Last-Event-ID and, separately, ?since=; poll: since=): exactly the N2
 * new messages, once each, in order, nothing of the first N1, no gap. A cursor that marks a
 * position without a message (the poll timeout answer, SSE's bare live id) resumed through
 * every transport. Two-channel cursors with interleaved publishes between sse and poll in both
 * directions, and handed to WebSocket subscribes (each channel takes its own position). Gaps in
 * band on all three with --history-size 5 (ws {"op":"gap"}, sse `event: gap`, poll "gaps")
 * followed by the retained messages, with cursors taken from each transport; and a cursor taken
 * in the middle of a two-channel replay, before the gap of the other channel was delivered.
 *
 * Not covered here: several nodes sharing Redis (the Redis suite), each transport's own
 * details (sse, ws and poll test files).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
    ID_RE,
    openSSE,
    pollRequest,
    publishMany,
    publishOk,
    sharedServers,
    uniqueChannel,
    waitUntil,
} from './lib.mjs';
import { openWs } from './wslib.mjs';

const N1 = 7;
const N2 = 5;
const POLL_TIMEOUT_S = 2;

const [main, small, mid] = sharedServers(before, after, [
    [['--poll-timeout', String(POLL_TIMEOUT_S)]],
    [['--poll-timeout', String(POLL_TIMEOUT_S), '--history-size', '5']],
    [['--poll-timeout', String(POLL_TIMEOUT_S), '--history-size', '150']],
]);

const enc = encodeURIComponent;
const chq = (channels) => channels.map((c) => `channel=${enc(c)}`).join('&');

/* Items a subscriber received, in order: envelopes {channel, id, data} and gaps {gap: channel}. */
function wsItems(c) {
    const out = [];
    for (const o of c.ops()) {
        if (o.op === 'message')
            out.push({ channel: o.channel, id: o.id, data: o.data });
        else if (o.op === 'gap')
            out.push({ gap: o.channel });
    }
    return out;
}

function sseItems(s) {
    const out = [];
    for (const e of s.events) {
        if (e.type === 'message')
            out.push(JSON.parse(e.data));
        else if (e.type === 'gap')
            out.push({ gap: JSON.parse(e.data).channel });
    }
    return out;
}

const isSentinel = (x) => !x.gap && x.data && typeof x.data === 'object' && x.data.sentinel !== undefined;
let sentinelSeq = 0;
const messagesOf = (items) => items.filter((x) => !x.gap);

async function pollOk(url, query) {
    const r = await pollRequest(url, query);
    assert.equal(r.status, 200, `GET /poll?${query}: ${r.status} ${r.text.slice(0, 300)}`);
    assert.ok(r.json && typeof r.json.cursor === 'string' && Array.isArray(r.json.messages) && Array.isArray(r.json.gaps), r.text.slice(0, 300));
    return r;
}

/* ---- readers: through A from since=0 until `count` messages; returns {items, cursor} ------- */

const readers = {
    async ws(t, url, channels, count) {
        assert.equal(channels.length, 1, 'a WebSocket message id is a one-channel cursor');
        const c = await openWs(url, `/ws?${chq(channels)}&since=0`, { t });
        await c.waitFor(() => messagesOf(wsItems(c)).length >= count, 5000, `${count} messages over ws`);
        const items = wsItems(c);
        c.close();
        return { items, cursor: messagesOf(items)[count - 1].id };
    },
    async sse(t, url, channels, count) {
        const s = await openSSE(url, `/sse?${chq(channels)}&since=0`, { t });
        await s.waitFor(() => s.events.filter((e) => e.type === 'message').length >= count, 5000, `${count} messages over sse`);
        const items = sseItems(s);
        /* The id: line of the last message event: the cursor after it. */
        const cursor = s.events.filter((e) => e.type === 'message')[count - 1].lastEventId;
        s.close();
        return { items, cursor };
    },
    async poll(t, url, channels, count) {
        const items = [];
        let cursor = '0';
        for (let i = 0; messagesOf(items).length < count; i++) {
            assert.ok(i < 10, 'more than 10 polls');
            const r = await pollOk(url, `${chq(channels)}&since=${enc(cursor)}`);
            assert.ok(r.json.messages.length > 0, `poll ${i + 1} from ${cursor}: no message after ${r.ms} ms`);
            items.push(...r.json.gaps.map((g) => ({ gap: g })), ...r.json.messages);
            cursor = r.json.cursor;
        }
        return { items, cursor };
    },
};

/*
 * ---- resumers: subscribe through B from `cursor`, then publish a sentinel on every channel
 * and collect until each sentinel arrived. Returns the items before the sentinels (in order).
 * Waiting for a sentinel published after everything else proves nothing more is on its way,
 * without a fixed wait.
 */
async function collectStream(url, channels, items, waitFor, first) {
    /* With a short history the sentinels would trim what is being replayed: wait for it first. */
    if (first)
        await waitFor(() => items().length >= first, 5000, `the first ${first} items`);
    /* A token of this call: sentinels of earlier resumes on the channel are replayed too. */
    const token = ++sentinelSeq;
    for (const ch of channels)
        await publishOk(url, ch, { sentinel: token });
    await waitFor(() => channels.every((ch) => items().some((x) => isSentinel(x) && x.data.sentinel === token && x.channel === ch)), 5000, 'the sentinels');
    const all = items();
    const end = all.findLastIndex((x) => isSentinel(x) && x.data.sentinel === token);
    return all.slice(0, end + 1).filter((x) => !isSentinel(x));
}

const resumers = {
    async 'ws ?since='(t, url, channels, cursor, first) {
        const c = await openWs(url, `/ws?${chq(channels)}&since=${enc(cursor)}`, { t });
        await c.waitFor(() => c.ops().filter((o) => o.op === 'subscribed').length >= channels.length, 5000, 'subscribed');
        return collectStream(url, channels, () => wsItems(c), c.waitFor, first);
    },
    async 'ws subscribe op'(t, url, channels, cursor, first) {
        const c = await openWs(url, '/ws', { t });
        for (const ch of channels) {
            const r = await c.request({ op: 'subscribe', channel: ch, since: cursor });
            assert.equal(r.op, 'subscribed', JSON.stringify(r));
        }
        return collectStream(url, channels, () => wsItems(c), c.waitFor, first);
    },
    async 'sse Last-Event-ID'(t, url, channels, cursor, first) {
        const s = await openSSE(url, `/sse?${chq(channels)}`, { t, headers: { 'last-event-id': cursor } });
        assert.equal(s.status, 200);
        return collectStream(url, channels, () => sseItems(s), s.waitFor.bind(s), first);
    },
    async 'sse ?since='(t, url, channels, cursor, first) {
        const s = await openSSE(url, `/sse?${chq(channels)}&since=${enc(cursor)}`, { t });
        assert.equal(s.status, 200);
        return collectStream(url, channels, () => sseItems(s), s.waitFor.bind(s), first);
    },
    async 'poll since='(t, url, channels, cursor) {
        /* First what is there now (answered at once), then the sentinels. */
        const items = [];
        let c = cursor;
        const first = await pollOk(url, `${chq(channels)}&since=${enc(c)}`);
        assert.ok(first.ms < 1000, `messages or a gap were waiting, yet the poll took ${first.ms} ms`);
        items.push(...first.json.gaps.map((g) => ({ gap: g })), ...first.json.messages);
        c = first.json.cursor;
        const token = ++sentinelSeq;
        for (const ch of channels)
            await publishOk(url, ch, { sentinel: token });
        for (let i = 0; !channels.every((ch) => items.some((x) => isSentinel(x) && x.data.sentinel === token && x.channel === ch)); i++) {
            assert.ok(i < 10, `the sentinels did not come in 10 polls; ${JSON.stringify(items.slice(-4))}`);
            const r = await pollOk(url, `${chq(channels)}&since=${enc(c)}`);
            items.push(...r.json.gaps.map((g) => ({ gap: g })), ...r.json.messages);
            c = r.json.cursor;
        }
        return items.filter((x) => !isSentinel(x));
    },
};

const TRANSPORTS = ['ws', 'sse', 'poll'];
const RESUMERS_OF = {
    ws: ['ws ?since=', 'ws subscribe op'],
    sse: ['sse Last-Event-ID', 'sse ?since='],
    poll: ['poll since='],
};

/** Per channel, the list of items of that channel (gaps included), for order-per-channel checks. */
function byChannel(items, channels) {
    const out = {};
    for (const ch of channels)
        out[ch] = items.filter((x) => x.channel === ch || x.gap === ch);
    return out;
}

describe('resume matrix: one channel, every ordered pair of transports', () => {
    for (const a of TRANSPORTS) {
        for (const b of TRANSPORTS) {
            it(`${a} -> ${b}: exactly the ${N2} messages published after ${a}'s cursor`, { timeout: 15000 }, async (t) => {
                const url = main.srv.url;
                const ch = uniqueChannel(`m-${a}-${b}`);
                const first = await publishMany(url, ch, N1, (i) => ({ n: i }));
                const read = await readers[a](t, url, [ch], N1);
                assert.deepEqual(read.items, first.map((id, i) => ({ channel: ch, id, data: { n: i + 1 } })), `${a} read the first ${N1}`);
                assert.equal(read.cursor, first[N1 - 1], `${a}: a one-channel cursor is the last message ID`);
                const second = await publishMany(url, ch, N2, (i) => ({ n: N1 + i }));
                const want = second.map((id, i) => ({ channel: ch, id, data: { n: N1 + i + 1 } }));
                for (const how of RESUMERS_OF[b]) {
                    const got = await resumers[how](t, url, [ch], read.cursor);
                    assert.deepEqual(got, want, `${a} cursor ${read.cursor} resumed via ${how}`);
                }
            });
        }
    }

    it('a cursor without a message (poll timeout answer, SSE bare id) resumes through every transport', { timeout: 20000 }, async (t) => {
        const url = main.srv.url;
        const fresh = uniqueChannel('m-pt-fresh'), seen = uniqueChannel('m-pt-seen'), bare = uniqueChannel('m-bare');
        const last = await publishOk(url, seen, { n: 0 });
        await publishOk(url, bare, { n: 0 });
        /* Both polls time out together (one timeout for the test). */
        const [pf, ps] = await Promise.all([
            pollOk(url, `channel=${fresh}`),
            pollOk(url, `channel=${seen}`),
        ]);
        assert.deepEqual(pf.json.messages, []);
        assert.deepEqual(ps.json.messages, []);
        assert.equal(ps.json.cursor, last);
        const s = await openSSE(url, `/sse?channel=${bare}`, { t });
        const bareCursor = await s.waitLive();
        s.close();
        for (const [ch, cursor, what] of [[fresh, pf.json.cursor, 'poll timeout, never-published channel'],
            [seen, ps.json.cursor, 'poll timeout, channel with history'], [bare, bareCursor, 'SSE bare id']]) {
            const ids = await publishMany(url, ch, 3, (i) => ({ n: i }));
            const want = ids.map((id, i) => ({ channel: ch, id, data: { n: i + 1 } }));
            for (const how of Object.keys(resumers))
                assert.deepEqual(await resumers[how](t, url, [ch], cursor), want, `${what} (cursor ${cursor}) via ${how}`);
        }
    });
});

describe('resume matrix: two-channel cursors', () => {
    /* Publishes rounds of interleaved messages A, B, A on channels [A, B]; returns ids per channel. */
    async function interleave(url, A, B, rounds, start) {
        const ids = { [A]: [], [B]: [] };
        for (let i = 0; i < rounds; i++) {
            ids[A].push(await publishOk(url, A, { n: start + 2 * i }));
            ids[B].push(await publishOk(url, B, { n: start + i }));
            ids[A].push(await publishOk(url, A, { n: start + 2 * i + 1 }));
        }
        return ids;
    }

    for (const [a, bs] of [['sse', ['poll since=', 'ws subscribe op', 'ws ?since=', 'sse Last-Event-ID']], ['poll', ['sse Last-Event-ID', 'sse ?since=', 'ws subscribe op', 'poll since=']]]) {
        it(`${a} two-channel cursor -> ${bs.join(', ')}: exactly the later messages per channel`, { timeout: 20000 }, async (t) => {
            const url = main.srv.url;
            const A = uniqueChannel(`mcA-${a}`), B = uniqueChannel(`mcB-${a}`);
            const before = await interleave(url, A, B, 3, 100);
            const read = await readers[a](t, url, [A, B], 9);
            assert.deepEqual(read.items.filter((x) => x.channel === A).map((x) => x.id), before[A]);
            assert.deepEqual(read.items.filter((x) => x.channel === B).map((x) => x.id), before[B]);
            assert.doesNotMatch(read.cursor, ID_RE, `${a}: a two-channel cursor is the multi-channel form: ${read.cursor}`);
            const later = await interleave(url, A, B, 2, 200);
            for (const how of bs) {
                /* A WebSocket subscribe takes each channel's own position from the cursor. */
                const got = byChannel(await resumers[how](t, url, [A, B], read.cursor), [A, B]);
                assert.deepEqual(got[A].map((x) => x.id), later[A], `${a} cursor via ${how}: channel A`);
                assert.deepEqual(got[B].map((x) => x.id), later[B], `${a} cursor via ${how}: channel B`);
            }
            /* The channel parameters in the other order. */
            const rev = byChannel(await resumers['poll since='](t, url, [B, A], read.cursor), [A, B]);
            assert.deepEqual(rev[A].map((x) => x.id), later[A]);
            assert.deepEqual(rev[B].map((x) => x.id), later[B]);
        });
    }

    it('a cursor from the middle of an SSE replay (not the last id) resumes exactly through poll and ws', { timeout: 15000 }, async (t) => {
        const url = main.srv.url;
        const A = uniqueChannel('mmA'), B = uniqueChannel('mmB');
        const ids = await interleave(url, A, B, 4, 0);
        const s = await openSSE(url, `/sse?channel=${A}&channel=${B}&since=0`, { t });
        await s.waitFor(() => s.events.length >= 12, 5000, '12 events');
        const msgs = s.events.filter((e) => e.type === 'message');
        const k = 5;
        const cursor = msgs[k - 1].lastEventId;
        /* IDs are per channel: two channels can have the same ID. */
        const seen = new Set(msgs.slice(0, k).map((e) => JSON.parse(e.data)).map((m) => `${m.channel} ${m.id}`));
        s.close();
        for (const how of ['poll since=', 'ws subscribe op', 'sse Last-Event-ID']) {
            const got = byChannel(await resumers[how](t, url, [A, B], cursor), [A, B]);
            for (const ch of [A, B])
                assert.deepEqual(got[ch].map((x) => x.id), ids[ch].filter((id) => !seen.has(`${ch} ${id}`)), `via ${how} from the cursor after event ${k}: ${ch}`);
        }
    });
});

describe('resume matrix: gaps in band (--history-size 5)', () => {
    /* One channel per resume: the sentinels of a resume trim a 5-message history. */
    for (const a of TRANSPORTS) {
        it(`a ${a} cursor older than the retained history: every transport signals the gap, then the 5 retained`, { timeout: 20000 }, async (t) => {
            const url = small.srv.url;
            for (const how of Object.keys(resumers)) {
                const ch = uniqueChannel(`mg-${a}`);
                await publishOk(url, ch, { n: 1 });
                const read = await readers[a](t, url, [ch], 1);
                const ids = await publishMany(url, ch, 20, (i) => ({ n: i + 1 }));
                const want = [{ gap: ch }, ...ids.slice(15).map((id, i) => ({ channel: ch, id, data: { n: 17 + i } }))];
                const got = await resumers[how](t, url, [ch], read.cursor, want.length);
                assert.deepEqual(got, want, `${a} cursor ${read.cursor} via ${how}`);
            }
        });
    }

    it('two channels, one trimmed: only that one gets a gap, before its retained messages', { timeout: 20000 }, async (t) => {
        const url = small.srv.url;
        for (const how of ['poll since=', 'sse Last-Event-ID', 'sse ?since=', 'ws subscribe op']) {
            const T = uniqueChannel('mgT'), U = uniqueChannel('mgU');
            await publishOk(url, T, { n: 0 });
            await publishOk(url, U, { n: 0 });
            const read = await readers.sse(t, url, [T, U], 2);
            const idsT = await publishMany(url, T, 12);
            const idsU = await publishMany(url, U, 2);
            const got = await resumers[how](t, url, [T, U], read.cursor, 8);
            assert.deepEqual(got.filter((x) => x.gap), [{ gap: T }], `via ${how}: one gap, for ${T}`);
            const per = byChannel(got, [T, U]);
            assert.deepEqual(per[T].map((x) => x.gap ?? x.id), [T, ...idsT.slice(7)], `via ${how}: T`);
            assert.deepEqual(per[U].map((x) => x.id), idsU, `via ${how}: U`);
        }
    });

    it('a cursor taken mid-replay, before the other channel\'s gap was delivered, still leads to that gap', { timeout: 20000 }, async (t) => {
        /* Channel B is trimmed past the cursor; channel A has 120 messages after it, so a poll's
         * first batch (100 messages) and an SSE stream's first events are A's. Whatever cursor
         * those carry must not move B past its loss before the gap was told: resuming from it
         * must still report B's gap. A fresh pair of channels per cursor source, and resumed by
         * poll only, whose first answer comes before its sentinels are published (the sentinels
         * trim B by one more message, which would create a gap of their own). */
        const url = mid.srv.url; /* --history-size 150 */
        async function scenario(tag) {
            const A = uniqueChannel(`mgmA-${tag}`), B = uniqueChannel(`mgmB-${tag}`);
            const b0 = await publishOk(url, B, { n: 0 });
            const b0ms = Number(b0.split('-')[0]);
            /* IDs are per channel: A's first must be at a later millisecond than b0 to be after it. */
            await waitUntil(() => Date.now() > b0ms + 1, { timeoutMs: 1000, intervalMs: 1, what: 'the next millisecond' });
            await publishMany(url, A, 120);
            await publishMany(url, B, 199, (i) => ({ n: i }));
            return { A, B, b0 };
        }
        const failures = [];
        const check = async (what, { A, B }, cursor) => {
            const got = await resumers['poll since='](t, url, [A, B], cursor);
            const gaps = got.filter((x) => x.gap);
            const firstB = got.find((x) => x.channel === B);
            t.diagnostic(`${what}: cursor ${cursor}; resumed: gaps ${JSON.stringify(gaps.map((g) => g.gap))}, first B message n=${firstB?.data.n}`);
            if (JSON.stringify(gaps) !== JSON.stringify([{ gap: B }]))
                failures.push(`${what} (${cursor}): resumed by poll, gaps ${JSON.stringify(gaps)}, first B message n=${firstB?.data.n}`);
        };

        const sp = await scenario('p');
        const p = await pollOk(url, `channel=${sp.A}&channel=${sp.B}&since=${sp.b0}`);
        t.diagnostic(`first poll batch: ${p.json.messages.length} messages, gaps ${JSON.stringify(p.json.gaps)}`);
        if (!p.json.gaps.includes(sp.B))
            await check('the cursor of the first poll batch (no gap in it)', sp, p.json.cursor);

        const ss = await scenario('s');
        const s = await openSSE(url, `/sse?channel=${ss.A}&channel=${ss.B}&since=${ss.b0}`, { t });
        await s.waitFor(() => s.events.filter((e) => e.type === 'message').length >= 270, 10000, '270 messages');
        const gapAt = s.events.findIndex((e) => e.type === 'gap');
        s.close();
        assert.ok(gapAt >= 0, 'the SSE stream itself signals the gap');
        t.diagnostic(`SSE: the gap is event ${gapAt} of ${s.events.length}`);
        if (gapAt > 0)
            await check('the id: of the SSE event just before the gap event', ss, s.events[gapAt - 1].lastEventId);

        assert.deepEqual(failures, [], 'a cursor handed out before B\'s gap was told must lead to B\'s gap when resumed');
    });
});
