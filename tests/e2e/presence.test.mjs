/*
 * Presence and the user registry (docs/protocol.md "Presence", docs/architecture.md "Presence",
 * issue 15 items 1-3).
 *
 * Covered on the engine under test (memory, or Redis with E2E_ENGINE=redis):
 *  1. each transport receives join and leave: SSE (event: join / leave), WebSocket (ops join /
 *     leave, asked in the query or in the subscribe op), long-poll (the "presence" field); the
 *     data is {"channel","client","user"} with the id of the channel's position;
 *  2. a subscriber without presence=1 never sees them (its cursor still moves past them);
 *     presence events are ordered with the messages and replayed from history (since=0);
 *  3. GET /api/presence: count and members (client, user, transport, since), &members=0,
 *     the errors (missing or bad channel);
 *  4. forging: a publish cannot produce a join (a JSON string that looks like one stays a
 *     message; a body starting with the reserved byte is not JSON: 400);
 *  5. --presence-max-members: past it no join/leave is stored, the count stays right;
 *  6. auth: the API key, a token allowed to read the channel, a token that is not (403), no
 *     credentials (401); GET /api/users/<sub>/connections lists an authenticated connection
 *     and drops it when it closes, and takes the API key only.
 * Covered with a private redis-server this file starts (skipped when redis-server is missing):
 *  7. two nodes on one Redis see each other's members, and a subscriber on one receives the
 *     other's joins; kill -9 of a node: its members leave (the listing and the leave events)
 *     within the sweep deadline (--presence-node-timeout 2: 2 s + the 1 s beat).
 *
 *  8. members and events carry "node", and "info" from the token's claim (on every transport and
 *     in the user registry); a token whose info is not an object or is over 256 bytes: 401;
 *  9. past --presence-max-members: count events (SSE without id, WebSocket and long-poll op),
 *     at most one per interval, none while unchanged, a last one back within the bound, a late
 *     member's count within an interval.
 * Not covered here: the JS client (client.test.mjs, tests/client/presence.test.mjs), 2,000
 * subscribers (presence_churn.test.mjs), Redis Cluster, a node's link down past the deadline
 * (re-registration), the cost (tests/load/presence-cost.mjs, presence-expiry.mjs).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
    checkJsonError,
    delay,
    httpRequest,
    openSSE,
    pollRequest,
    publishOk,
    sharedServer,
    startServer,
    skipOrFail,
    uniqueChannel,
    waitUntil,
} from './lib.mjs';
import { openWs } from './wslib.mjs';
import { HAVE_REDIS, redisCmd, rmDir, startRedis } from './redislib.mjs';

const SECRET = 'e2e-secret-0123456789abcdef0123456789';
const KEY = 'presence-api-key-0123456789';
const b64 = (b) => Buffer.from(b).toString('base64url');
function mint(payload) {
    const input = `${b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64(JSON.stringify(payload))}`;
    return `${input}.${b64(crypto.createHmac('sha256', SECRET).update(input).digest())}`;
}
const now = () => Math.floor(Date.now() / 1000);

async function presenceOf(url, ch, query = '', headers = {}) {
    const r = await httpRequest(url, `/api/presence?channel=${encodeURIComponent(ch)}${query}`, { headers });
    assert.equal(r.status, 200, `GET /api/presence ${ch}: ${r.text}`);
    return r.json;
}

async function sseLive(url, ch, extra = '', opts = {}) {
    const s = await openSSE(url, `/sse?channel=${encodeURIComponent(ch)}${extra}`, opts);
    assert.equal(s.status, 200);
    await s.waitLive();
    return s;
}

const presenceEvents = (s) => s.events.filter((e) => e.type === 'join' || e.type === 'leave');

describe('presence on every transport', () => {
    const ref = sharedServer(before, after, ['--presence-max-members', '3']);

    it('SSE receives join and leave; the listing follows', async (t) => {
        const url = ref.srv.url;
        const ch = uniqueChannel('pr');
        const a = await sseLive(url, ch, '&presence=1', { t });
        const own = JSON.parse((await a.next((e) => e.type === 'join', 5000, 'its own join')).data);
        const b = await openWs(url, `/ws?channel=${ch}&presence=1`, { t });
        await b.nextOp('subscribed');
        const join = await a.next((e) => e.type === 'join', 5000, 'a join');
        assert.notEqual(JSON.parse(join.data).client, own.client, 'the second join is the other member\'s');
        const jd = JSON.parse(join.data);
        assert.equal(jd.channel, ch);
        assert.equal(jd.user, null);
        assert.match(jd.client, /^[0-9a-f]{16}\.\d+\.\d+$/);
        assert.equal(jd.node, jd.client.split('.')[0]);
        assert.match(join.lastEventId, /^\d+-\d+$/, 'a presence event carries the position');
        const p = await presenceOf(url, ch);
        assert.equal(p.channel, ch);
        assert.equal(p.count, 2);
        assert.equal(p.members.length, 2);
        const mb = p.members.find((m) => m.client === jd.client);
        assert.ok(mb, `the joiner is listed: ${JSON.stringify(p)}`);
        assert.equal(mb.transport, 'ws');
        assert.equal(mb.user, null);
        assert.match(mb.node, /^[0-9a-f]{16}$/);
        assert.equal(mb.node, jd.node);
        assert.equal(mb.info, undefined, 'no token, no info');
        assert.ok(Math.abs(mb.since - Date.now()) < 60000, `since is a wall-clock ms: ${mb.since}`);
        assert.ok(p.members.some((m) => m.transport === 'sse'));
        const c = await presenceOf(url, ch, '&members=0');
        assert.deepEqual(c, { channel: ch, count: 2 });
        b.ws.close();
        const leave = await a.next((e) => e.type === 'leave', 5000, 'a leave');
        assert.deepEqual(JSON.parse(leave.data), jd);
        await waitUntil(async () => (await presenceOf(url, ch, '&members=0')).count === 1, { what: 'the count back to 1' });
    });

    it('WebSocket receives join and leave ops (subscribe op with "presence": true)', async (t) => {
        const url = ref.srv.url;
        const ch = uniqueChannel('pr');
        const w = await openWs(url, '/ws', { t });
        w.send({ op: 'subscribe', channel: ch, presence: true, ref: 1 });
        await w.nextOp('subscribed');
        const own = await w.nextOp('join');
        const s = await sseLive(url, ch, '&presence=1', { t });
        const j = await w.nextOp('join');
        assert.notEqual(j.client, own.client);
        assert.equal(j.channel, ch);
        assert.equal(j.user, null);
        assert.match(j.id, /^\d+-\d+$/);
        assert.deepEqual(Object.keys(j).sort(), ['channel', 'client', 'id', 'node', 'op', 'user']);
        assert.equal(j.node, j.client.split('.')[0], 'node: the 16-hex node id, the connection id\'s prefix');
        s.close();
        const l = await w.nextOp('leave');
        assert.equal(l.client, j.client);
        assert.ok(l.id > j.id || l.id.length > j.id.length);
        /* Messages still flow, after the events. */
        await publishOk(url, ch, { after: 'leave' });
        const m = await w.nextOp('message');
        assert.deepEqual(m.data, { after: 'leave' });
    });

    it('long-poll gets the events in "presence", in order, resumable; not without presence=1', async (t) => {
        const url = ref.srv.url;
        const ch = uniqueChannel('pr');
        const first = await publishOk(url, ch, { n: 1 });
        const s = await sseLive(url, ch, '&presence=1', { t });
        const hist = await pollRequest(url, `channel=${ch}&since=0&presence=1`);
        assert.equal(hist.status, 200, hist.text);
        assert.equal(hist.json.messages.length, 1);
        assert.equal(hist.json.messages[0].id, first);
        assert.equal(hist.json.presence.length, 1, hist.text);
        const j = hist.json.presence[0];
        assert.equal(j.op, 'join');
        assert.equal(j.channel, ch);
        assert.ok(j.id > first || j.id.length > first.length, 'the join comes after the first message');
        /* A held poll is answered by the leave. */
        const held = pollRequest(url, `channel=${ch}&since=${encodeURIComponent(hist.json.cursor)}&presence=1`);
        await delay(200);
        s.close();
        const r = await held;
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.json.messages, []);
        assert.equal(r.json.presence.length, 1);
        assert.equal(r.json.presence[0].op, 'leave');
        assert.equal(r.json.presence[0].client, j.client);
        /* Without presence=1: the message only, no field, and the cursor moves past the events. */
        const plain = await pollRequest(url, `channel=${ch}&since=0`);
        assert.equal(plain.json.messages.length, 1);
        assert.equal(plain.json.presence, undefined);
        const after = await pollRequest(url, `channel=${ch}&since=${encodeURIComponent(plain.json.cursor)}&timeout=1`);
        assert.deepEqual(after.json.messages, []);
    });

    it('events are ordered with messages and replayed; subscribers without presence never see them', async (t) => {
        const url = ref.srv.url;
        const ch = uniqueChannel('pr');
        const plain = await sseLive(url, ch, '', { t });
        await publishOk(url, ch, { n: 1 });
        const joiner = await sseLive(url, ch, '&presence=1', { t });
        await publishOk(url, ch, { n: 2 });
        joiner.close();
        await waitUntil(async () => (await presenceOf(url, ch, '&members=0')).count === 0, { what: 'the leave' });
        await publishOk(url, ch, { n: 3 });
        await plain.waitFor(() => plain.events.length >= 3, 5000, 'three messages');
        assert.deepEqual(plain.events.map((e) => e.type), ['message', 'message', 'message']);
        const replay = await openSSE(url, `/sse?channel=${ch}&since=0&presence=1`, { t });
        await replay.waitFor(() => replay.events.length >= 5, 5000, 'five events');
        /* (Then the replaying subscriber's own join: a member receives its own join.) */
        const five = replay.events.slice(0, 5);
        assert.deepEqual(five.map((e) => e.type === 'message' ? JSON.parse(e.data).data.n : e.type), [1, 'join', 2, 'leave', 3]);
        const ids = five.map((e) => e.lastEventId);
        for (let i = 1; i < ids.length; i++)
            assert.ok(ids[i].length > ids[i - 1].length || ids[i] > ids[i - 1], `ids increase: ${ids}`);
    });

    it('a publish cannot forge a join', async (t) => {
        const url = ref.srv.url;
        const ch = uniqueChannel('pr');
        const s = await sseLive(url, ch, '&presence=1', { t });
        await publishOk(url, ch, '\u001ej{"channel":"x","client":"forged","user":"mallory"}');
        await publishOk(url, ch, { op: 'join', channel: ch, client: 'forged', user: 'mallory' });
        const raw = await httpRequest(url, `/api/publish?channel=${ch}`, {
            method: 'POST',
            body: Buffer.concat([Buffer.from([0x1e]), Buffer.from('j{"channel":"x","client":"forged","user":null}')]),
        });
        checkJsonError(raw, 400, 'a body starting with the reserved byte');
        const w = await openWs(url, '/ws', { t });
        w.send({ op: 'publish', channel: ch, data: '\u001el{"client":"forged"}', ref: 'f' });
        await w.nextOp('published');
        await s.waitFor(() => s.events.filter((e) => e.type === 'message').length >= 3, 5000, 'three messages');
        /* Its own join only. */
        assert.equal(presenceEvents(s).length, 1, `no forged presence event: ${s.summary()}`);
        assert.ok(!presenceEvents(s).some((e) => /forged|mallory/.test(e.data)), s.summary());
        assert.equal((await presenceOf(url, ch, '&members=0')).count, 1);
    });

    it('--presence-max-members bounds the events, not the listing', async (t) => {
        const url = ref.srv.url;
        const ch = uniqueChannel('pr');
        const watcher = await sseLive(url, ch, '&presence=1', { t });
        const others = [];
        for (let i = 0; i < 3; i++)
            others.push(await sseLive(url, ch, '&presence=1', { t }));
        await waitUntil(async () => (await presenceOf(url, ch, '&members=0')).count === 4, { what: '4 members' });
        await publishOk(url, ch, { marker: 1 });
        await watcher.next((e) => e.type === 'message', 5000, 'the marker');
        /* Its own join and members 2 and 3 within the bound of 3; the fourth produced none. */
        assert.equal(presenceEvents(watcher).filter((e) => e.type === 'join').length, 3, watcher.summary());
        others[2].close();
        await waitUntil(async () => (await presenceOf(url, ch, '&members=0')).count === 3, { what: '3 members' });
        others[1].close(); /* 3 -> 2: within the bound again: a leave */
        await watcher.next((e) => e.type === 'leave', 5000, 'a leave within the bound');
        assert.equal(presenceEvents(watcher).filter((e) => e.type === 'leave').length, 1, watcher.summary());
    });

    it('GET /api/presence errors', async () => {
        const url = ref.srv.url;
        checkJsonError(await httpRequest(url, '/api/presence'), 400, 'no channel');
        checkJsonError(await httpRequest(url, '/api/presence?channel=a%2Fb'), 400, 'bad channel');
        const r = await httpRequest(url, '/api/presence?channel=nobody-here');
        assert.deepEqual(r.json, { channel: 'nobody-here', count: 0, members: [] });
        checkJsonError(await httpRequest(url, '/api/presence?channel=a', { method: 'POST', body: '{}' }), 405, 'POST');
    });
});

describe('large channels: counts instead of joins past --presence-max-members', () => {
    const INTERVAL = 300;
    const ref = sharedServer(before, after, ['--presence-max-members', '3', '--presence-count-interval', String(INTERVAL)]);
    const counts = (s) => s.events.filter((e) => e.type === 'count').map((e) => JSON.parse(e.data).count);

    it('SSE, WebSocket and long-poll get the count, at most once per interval, live only; a last one back within the bound', async (t) => {
        const url = ref.srv.url;
        const ch = uniqueChannel('prc');
        const s = await sseLive(url, ch, '&presence=1', { t });
        const w = await openWs(url, `/ws?channel=${ch}&presence=1`, { t });
        await w.nextOp('subscribed');
        const plain = await sseLive(url, ch, '', { t });
        const others = [];
        for (let i = 0; i < 4; i++)
            others.push(await sseLive(url, ch, '&presence=1', { t }));
        /* 6 members: past the bound of 3. */
        const c6 = await s.next((e) => e.type === 'count' && JSON.parse(e.data).count === 6, 5000, 'the count 6');
        assert.deepEqual(JSON.parse(c6.data), { channel: ch, count: 6 });
        assert.equal(c6.hadId, false, 'a count carries no id: it moves no cursor');
        const wc = await w.waitFor(() => w.ops().find((o) => o.op === 'count' && o.count === 6), 5000, 'the WebSocket count');
        assert.deepEqual(wc, { op: 'count', channel: ch, count: 6 });
        /* A long-poll: a count that changes answers a held poll. */
        const cur = (await pollRequest(url, `channel=${ch}&since=0&presence=1`)).json.cursor;
        const held = pollRequest(url, `channel=${ch}&since=${encodeURIComponent(cur)}&presence=1`);
        await delay(INTERVAL * 2);
        others[3].close(); /* 6 -> 5: no leave (past the bound), a count */
        const r = await held;
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.json.messages, []);
        assert.deepEqual(r.json.presence, [{ op: 'count', channel: ch, count: 5 }], r.text);
        assert.equal(r.json.cursor, cur, 'the cursor does not move for a count');
        /* Nothing changes: no more counts. */
        await s.next((e) => e.type === 'count' && JSON.parse(e.data).count === 5, 5000, 'the count 5');
        const before5 = counts(s).length;
        await delay(INTERVAL * 3);
        assert.equal(counts(s).length, before5, `no count while it does not change: ${counts(s)}`);
        /* Back within the bound: the leave that crosses it, and one last count. */
        others[2].close();
        others[1].close();
        others[0].close(); /* 5 -> 2 */
        await s.next((e) => e.type === 'count' && JSON.parse(e.data).count === 2, 5000, 'the last count, 2');
        await delay(INTERVAL * 2);
        const tail = counts(s);
        assert.equal(tail[tail.length - 1], 2, `${tail}`);
        /* A subscriber without presence=1 saw none of it. */
        await publishOk(url, ch, { end: 1 });
        await plain.next((e) => e.type === 'message', 5000, 'the message');
        assert.deepEqual(plain.events.map((e) => e.type), ['message']);
        /* Rate: one per interval at most (the test ran for a few intervals only). */
        const times = s.events.filter((e) => e.type === 'count').map((e) => e.t);
        for (let i = 1; i < times.length; i++)
            assert.ok(times[i] - times[i - 1] >= INTERVAL / 2, `counts ${INTERVAL} ms apart: ${times}`);
    });

    it('a member that subscribes to a large channel gets its count within an interval', async (t) => {
        const url = ref.srv.url;
        const ch = uniqueChannel('prc');
        const members = [];
        for (let i = 0; i < 4; i++)
            members.push(await sseLive(url, ch, '&presence=1', { t }));
        await members[0].next((e) => e.type === 'count' && JSON.parse(e.data).count === 4, 5000, 'the count 4');
        const late = await openWs(url, `/ws?channel=${ch}&presence=1`, { t });
        await late.nextOp('subscribed');
        const c = await late.waitFor(() => late.ops().find((o) => o.op === 'count'), INTERVAL * 4, 'a count for the late member');
        assert.equal(c.count, 5);
        assert.equal(late.ops().filter((o) => o.op === 'join').length, 0, 'its own join is past the bound too');
    });
});

describe('presence and the user registry under --auth', () => {
    const ref = sharedServer(before, after, ['--auth', 'optional', '--jwt-secret', SECRET, '--api-key', KEY]);

    it('the API key or a token that may read the channel; 403 for one that may not', async (t) => {
        const url = ref.srv.url;
        const ch = `room.${uniqueChannel('a')}`;
        const tok = mint({ sub: 'alice', exp: now() + 600, channels: ['room.*'] });
        const s = await sseLive(url, ch, `&presence=1&token=${tok}`, { t });
        const byKey = await presenceOf(url, ch, '', { authorization: `Bearer ${KEY}` });
        assert.equal(byKey.count, 1);
        assert.equal(byKey.members[0].user, 'alice');
        assert.equal(byKey.members[0].transport, 'sse');
        const byToken = await presenceOf(url, ch, '', { authorization: `Bearer ${tok}` });
        assert.equal(byToken.count, 1);
        const other = mint({ sub: 'bob', exp: now() + 600, channels: ['lobby'] });
        checkJsonError(await httpRequest(url, `/api/presence?channel=${ch}`, { headers: { authorization: `Bearer ${other}` } }), 403,
            'a token for another channel');
        checkJsonError(await httpRequest(url, `/api/presence?channel=${ch}`), 401, 'no credentials');
        checkJsonError(await httpRequest(url, `/api/presence?channel=${ch}`, { headers: { authorization: 'Bearer not-the-key' } }), 401,
            'with --auth on, a Bearer that is not the key is read as a token');
        s.close();
    });

    it('the token\'s "info" claim rides with the member: listing, join and leave on every transport', async (t) => {
        const url = ref.srv.url;
        const ch = `room.${uniqueChannel('i')}`;
        /* Keys that look like the member's own tail: the cut of the event (engine.h, redis_lib.lua)
         * must not stop inside info. */
        const info = { name: 'Alice Ünïcode', color: '#f00', tags: [1, 2], transport: 'ws', since: 1 };
        const tok = mint({ sub: 'alice', exp: now() + 600, channels: ['room.*'], info });
        const plain = mint({ sub: 'bob', exp: now() + 600, channels: ['room.*'] });
        const w = await openWs(url, `/ws?channel=${ch}&presence=1&token=${plain}`, { t });
        await w.nextOp('subscribed');
        const own = await w.nextOp('join');
        assert.equal(own.info, undefined, 'a token without info: no field');
        const s = await sseLive(url, ch, `&presence=1&token=${tok}`, { t });
        const j = await w.nextOp('join');
        assert.equal(j.user, 'alice');
        assert.deepEqual(j.info, info);
        assert.equal(j.node, j.client.split('.')[0]);
        const sj = JSON.parse((await s.next((e) => e.type === 'join', 5000, 'its own join')).data);
        assert.deepEqual(sj.info, info);
        const p = await presenceOf(url, ch, '', { authorization: `Bearer ${KEY}` });
        const a = p.members.find((m) => m.user === 'alice');
        assert.ok(a, JSON.stringify(p));
        assert.deepEqual(a.info, info);
        assert.equal(a.transport, 'sse');
        assert.equal(p.members.find((m) => m.user === 'bob').info, undefined);
        const u = await httpRequest(url, '/api/users/alice/connections', { headers: { authorization: `Bearer ${KEY}` } });
        assert.deepEqual(u.json.connections.find((c) => c.client === sj.client).info, info);
        const hist = await pollRequest(url, `channel=${ch}&since=0&presence=1&token=${plain}`);
        assert.deepEqual(hist.json.presence.find((e) => e.client === sj.client).info, info, hist.text);
        s.close();
        const l = await w.nextOp('leave');
        assert.deepEqual(l.info, info);
        assert.equal(l.client, sj.client);
    });

    it('a token whose "info" is not an object or is over 256 bytes is refused (401 unauthorized)', async (t) => {
        const url = ref.srv.url;
        const big = mint({ sub: 'x', exp: now() + 600, channels: ['room.*'], info: { s: 'x'.repeat(250) } });
        const fits = mint({ sub: 'x', exp: now() + 600, channels: ['room.*'], info: { s: 'x'.repeat(240) } });
        const str = mint({ sub: 'x', exp: now() + 600, channels: ['room.*'], info: 'a string' });
        const arr = mint({ sub: 'x', exp: now() + 600, channels: ['room.*'], info: [1] });
        for (const [tok, what] of [[big, 'info of 258 bytes'], [str, 'info a string'], [arr, 'info an array']]) {
            const r = await pollRequest(url, `channel=room.z&token=${tok}&timeout=1`);
            checkJsonError(r, 401, what);
            assert.equal(r.json.error.code, 'unauthorized', what);
        }
        const ok = await openSSE(url, `/sse?channel=room.z&presence=1&token=${fits}`, { t });
        assert.equal(ok.status, 200, 'info of 248 bytes is accepted');
        await ok.waitLive();
        ok.close();
    });

    it('GET /api/users/<sub>/connections lists a user\'s connections (API key only)', async (t) => {
        const url = ref.srv.url;
        const sub = `carol-${crypto.randomUUID()}`;
        const tok = mint({ sub, exp: now() + 600, channels: ['room.*'] });
        const s = await sseLive(url, 'room.x', `&token=${tok}`, { t });
        const w = await openWs(url, `/ws?channel=room.y&token=${tok}`, { t });
        await w.nextOp('subscribed');
        const path = `/api/users/${encodeURIComponent(sub)}/connections`;
        const r = await httpRequest(url, path, { headers: { authorization: `Bearer ${KEY}` } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.user, sub);
        assert.equal(r.json.count, 2);
        assert.deepEqual(r.json.connections.map((c) => c.transport).sort(), ['sse', 'ws']);
        for (const c of r.json.connections) {
            assert.equal(c.user, sub);
            assert.match(c.client, /^[0-9a-f]{16}\.\d+\.\d+$/);
        }
        checkJsonError(await httpRequest(url, path, { headers: { authorization: `Bearer ${tok}` } }), 403, 'a token is not the API key');
        checkJsonError(await httpRequest(url, path), 401, 'no key');
        /* A subject never holds a NUL byte (POST /api/disconnect refuses one too): the Redis
         * engine's key would end at it and list the connections of the user before it. */
        const nul = await httpRequest(url, `/api/users/${encodeURIComponent(sub)}%00x/connections`, {
            headers: { authorization: `Bearer ${KEY}` },
        });
        checkJsonError(nul, 400, 'a user id with a NUL byte');
        assert.equal(nul.json.error.code, 'bad_user', nul.text);
        s.close();
        w.ws.close();
        await waitUntil(async () => {
            const x = await httpRequest(url, path, { headers: { authorization: `Bearer ${KEY}` } });
            return x.json.count === 0;
        }, { what: 'the connections gone' });
    });
});

describe('two nodes on one Redis', () => {
    let redis = null;
    before(async () => {
        if (HAVE_REDIS)
            redis = await startRedis();
    });
    after(async () => {
        if (redis) {
            await redis.stop();
            rmDir(redis.dir);
        }
    });

    it('see each other\'s members; a node killed with -9 leaves within the deadline', async (t) => {
        if (!redis)
            return skipOrFail(t, 'redis-server is not installed');
        const args = ['--redis', redis.url, '--presence-node-timeout', '2'];
        const n1 = await startServer(args);
        const n2 = await startServer(args);
        t.after(() => n2.stop());
        await waitUntil(async () => (await httpRequest(n1.url, '/readyz')).status === 200 && (await httpRequest(n2.url, '/readyz')).status === 200,
            { what: 'both ready', timeoutMs: 10000 });
        const ch = uniqueChannel('pr2');
        const watcher = await sseLive(n2.url, ch, '&presence=1', { t });
        const w1 = await openWs(n1.url, `/ws?channel=${ch}&presence=1`);
        await w1.nextOp('subscribed');
        const s1 = await sseLive(n1.url, ch, '&presence=1');
        await watcher.waitFor(() => presenceEvents(watcher).filter((e) => e.type === 'join').length >= 3, 5000, 'its own join and two from node 1');
        let nodes = null;
        for (const n of [n1, n2]) {
            const p = await presenceOf(n.url, ch);
            assert.equal(p.count, 3, `${n.url}: ${JSON.stringify(p)}`);
            nodes = new Set(p.members.map((m) => m.node));
        }
        assert.equal(nodes.size, 2, 'the members name their two nodes');
        const t0 = Date.now();
        await n1.stop('SIGKILL');
        w1.ws.terminate();
        s1.close();
        await watcher.waitFor(() => presenceEvents(watcher).filter((e) => e.type === 'leave').length >= 2, 8000, 'two leaves after kill -9')
            .catch(async (e) => { throw new Error(`${e.message}\nnodes: ${JSON.stringify(await redisCmd(redis.port, ["ZRANGE", "pe:nodes", "0", "-1", "WITHSCORES"]))} ${JSON.stringify(await redisCmd(redis.port, ["TIME"]))} ${JSON.stringify(await redisCmd(redis.port, ["KEYS", "*"]))}\nnode 2: ${n2.output().stderr.slice(-3000)}`); });
        const ms = Date.now() - t0;
        assert.ok(ms <= 4500, `the dead node's members left within the deadline (2 s + a 1 s beat): ${ms} ms`);
        assert.equal((await presenceOf(n2.url, ch, '&members=0')).count, 1);
        t.diagnostic(`members of a node killed with -9 left after ${ms} ms`);
    });
});
