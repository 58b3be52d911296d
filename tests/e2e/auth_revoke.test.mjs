/*
 * Revocation (docs/auth.md "Revocation"): POST /api/disconnect?user=SUB[&channel=PATTERN]
 * [&reason=TEXT], with tokens minted here with node's crypto:
 * - the API key rule: 401 without it, 403 with a wrong one, 405 for GET, 400 for a missing user,
 *   a bad pattern or a bad reason;
 * - per transport at once (connections spread over the node's threads): WebSocket closed with
 *   4003 and the reason, SSE `event: revoked` then the end, a held long-poll answered 403
 *   revoked; another user's connections untouched; {"disconnected": N} counts them;
 * - by channel pattern: only the matching subscriptions go (a WebSocket gets an error op
 *   `revoked` naming each, an SSE stream an `event: revoked` naming it, and keeps the others);
 *   a connection left with no channel ends; a held poll on a matching channel is answered 403;
 * - two nodes on one Redis (needs PUSHEDGE_TEST_REDIS_URL): a revocation posted to node 1 ends
 *   the user's WebSocket and SSE stream on node 2 within a second, channel revocations too; a
 *   control message PUBLISHed by hand with a reason that would forge an SSE event is ignored,
 *   a well-formed one is applied.
 *
 * Not covered: a revocation does not deny the token (a client may reconnect with it; docs/auth.md
 * says so); a Redis outage during the broadcast (503 engine_unavailable).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { checkJsonError, httpRequest, openSSE, publishOk, sharedServer, sharedServers, skipOrFail, waitUntil } from './lib.mjs';
import { openWs } from './wslib.mjs';

const SECRET = 'e2e-secret-0123456789abcdef0123456789';
const KEY = 'e2e-revoke-key';
const b64 = (b) => Buffer.from(b).toString('base64url');
const nowS = () => Math.floor(Date.now() / 1000);

function mint(payload) {
    const input = `${b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64(JSON.stringify(payload))}`;
    return `${input}.${b64(crypto.createHmac('sha256', SECRET).update(input).digest())}`;
}
let seq = 0;
const newUser = () => `r${process.pid}x${++seq}`;
const token = (sub) => mint({ sub, exp: nowS() + 600, channels: ['user:{sub}', 'orders.*'] });
const bearer = (tok) => ({ authorization: `Bearer ${tok}` });
const KEYH = bearer(KEY);

function disconnect(base, query, headers = KEYH) {
    return httpRequest(base, `/api/disconnect?${query}`, { method: 'POST', headers });
}

describe('POST /api/disconnect', () => {
    const ref = sharedServer(before, after, ['--auth', 'optional', '--jwt-secret', SECRET, '--api-key', KEY]);

    it('needs the API key and a well-formed request', async () => {
        const base = ref.srv.url;
        checkJsonError(await disconnect(base, 'user=alice', {}), 401);
        checkJsonError(await disconnect(base, 'user=alice', bearer('wrong-key')), 403);
        checkJsonError(await disconnect(base, 'user=alice', bearer(token('alice'))), 403, 'a token is not the API key');
        const get = await httpRequest(base, '/api/disconnect?user=alice', { headers: KEYH });
        checkJsonError(get, 405);
        for (const q of ['', 'user=', 'channel=news', `user=${'a'.repeat(257)}`]) {
            const r = await disconnect(base, q);
            checkJsonError(r, 400, q);
            assert.equal(r.json.error.code, 'bad_user', q);
        }
        for (const q of ['user=a&channel=a*b', 'user=a&channel=', 'user=a&channel=user:{sub}', 'user=a&channel=a%20b'])
            assert.equal((await disconnect(base, q)).json.error.code, 'bad_channel', q);
        for (const q of ['user=a&reason=', `user=a&reason=${'x'.repeat(101)}`, 'user=a&reason=%22quoted%22', 'user=a&reason=a%0Ab'])
            assert.equal((await disconnect(base, q)).json.error.code, 'bad_reason', q);
        const none = await disconnect(base, `user=${newUser()}`);
        assert.equal(none.status, 200, none.text);
        assert.deepEqual(none.json, { disconnected: 0 });
    });

    it('ends the user\'s WebSocket (4003), SSE (event revoked) and held poll (403) on every thread; others untouched', async (t) => {
        const base = ref.srv.url;
        const alice = newUser(), bob = newUser();
        /* Several of each, so that they spread over the node's threads (SO_REUSEPORT). */
        const wss = [], sses = [], polls = [];
        for (let i = 0; i < 3; i++) {
            const ws = await openWs(base, `/ws?channel=user:${alice}`, { t, headers: bearer(token(alice)) });
            await ws.nextOp('subscribed');
            wss.push(ws);
            const s = await openSSE(base, `/sse?channel=user:${alice}`, { t, headers: bearer(token(alice)) });
            await s.waitLive();
            sses.push(s);
        }
        const first = await httpRequest(base, `/poll?channel=user:${alice}&timeout=1`, { headers: bearer(token(alice)) });
        for (let i = 0; i < 2; i++)
            polls.push(httpRequest(base, `/poll?channel=user:${alice}&since=${encodeURIComponent(first.json.cursor)}&timeout=25`, { headers: bearer(token(alice)), timeoutMs: 10000 }));
        const bobWs = await openWs(base, `/ws?channel=user:${bob}`, { t, headers: bearer(token(bob)) });
        await bobWs.nextOp('subscribed');
        const bobSse = await openSSE(base, `/sse?channel=user:${bob}`, { t, headers: bearer(token(bob)) });
        await bobSse.waitLive();
        await waitUntil(async () => (await httpRequest(base, '/metrics')).text.includes('pushedge_connections{transport="poll"} 2'), { what: 'two held polls' });

        const t0 = Date.now();
        const r = await disconnect(base, `user=${alice}&reason=account%20suspended`);
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.json, { disconnected: 8 });
        for (const ws of wss) {
            const c = await ws.waitClose(2000);
            assert.equal(c.code, 4003);
            assert.equal(c.reason, 'account suspended');
            assert.ok(c.t - t0 < 1000, `closed within a second (${c.t - t0} ms)`);
        }
        for (const s of sses) {
            const e = await s.next((e) => e.type === 'revoked', 2000);
            assert.deepEqual(JSON.parse(e.data), { reason: 'account suspended' });
            await s.waitEnd(2000);
        }
        for (const p of polls) {
            const a = await p;
            checkJsonError(a, 403);
            assert.equal(a.json.error.code, 'revoked');
            assert.equal(a.json.error.message, 'account suspended');
        }
        await publishOk(base, `user:${bob}`, { still: 'bob' }, KEYH);
        assert.deepEqual((await bobWs.nextOp('message')).data, { still: 'bob' });
        const be = await bobSse.next((e) => e.type === 'message');
        assert.deepEqual(JSON.parse(be.data).data, { still: 'bob' });
        /* The default reason. */
        const ws = await openWs(base, `/ws?channel=user:${alice}`, { t, headers: bearer(token(alice)) });
        await ws.nextOp('subscribed');
        assert.deepEqual((await disconnect(base, `user=${alice}`)).json, { disconnected: 1 });
        assert.deepEqual(await ws.waitClose(2000).then((c) => [c.code, c.reason]), [4003, 'revoked']);
    });

    it('by channel pattern: only matching subscriptions go; a connection left without channels ends', async (t) => {
        const base = ref.srv.url;
        const alice = newUser();
        const o1 = `orders.${alice}.1`, o2 = `orders.${alice}.2`, mine = `user:${alice}`;
        const ws = await openWs(base, `/ws?channel=${mine}&channel=${o1}`, { t, headers: bearer(token(alice)) });
        await ws.nextOp('subscribed');
        await ws.nextOp('subscribed');
        assert.equal((await ws.request({ op: 'subscribe', channel: o2 })).op, 'subscribed');
        const onlyOrders = await openSSE(base, `/sse?channel=${o1}`, { t, headers: bearer(token(alice)) });
        await onlyOrders.waitLive();
        const mixed = await openSSE(base, `/sse?channel=${o2}&channel=${mine}`, { t, headers: bearer(token(alice)) });
        await mixed.waitLive();
        const other = await openSSE(base, `/sse?channel=${mine}`, { t, headers: bearer(token(alice)) });
        await other.waitLive();
        const first = await httpRequest(base, `/poll?channel=${o1}&timeout=1`, { headers: bearer(token(alice)) });
        const held = httpRequest(base, `/poll?channel=${o1}&since=${encodeURIComponent(first.json.cursor)}&timeout=25`, { headers: bearer(token(alice)), timeoutMs: 10000 });
        await waitUntil(async () => /pushedge_connections\{transport="poll"\} [1-9]/.test((await httpRequest(base, '/metrics')).text), { what: 'a held poll' });

        const r = await disconnect(base, `user=${alice}&channel=orders.${alice}.*`);
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.json, { disconnected: 4 }, 'ws, two SSE streams, the poll; not the SSE stream without orders');
        const errors = await ws.waitFor(() => {
            const e = ws.ops().filter((m) => m.op === 'error');
            return e.length >= 2 && e;
        }, 2000, 'two error ops');
        assert.deepEqual(errors.map((e) => [e.code, e.channel, e.message]).sort(), [['revoked', o1, 'revoked'], ['revoked', o2, 'revoked']]);
        const oe = await onlyOrders.next((e) => e.type === 'revoked', 2000);
        assert.deepEqual(JSON.parse(oe.data), { reason: 'revoked' });
        await onlyOrders.waitEnd(2000);
        const me = await mixed.next((e) => e.type === 'revoked', 2000);
        assert.deepEqual(JSON.parse(me.data), { channel: o2, reason: 'revoked' });
        checkJsonError(await held, 403);

        await publishOk(base, o1, { gone: 1 }, KEYH);
        await publishOk(base, o2, { gone: 2 }, KEYH);
        await publishOk(base, mine, { kept: 1 }, KEYH);
        const m = await ws.nextOp('message');
        assert.equal(m.channel, mine, 'the WebSocket keeps its own channel only');
        const mm = await mixed.next((e) => e.type === 'message');
        assert.equal(JSON.parse(mm.data).channel, mine, 'the SSE stream keeps the other channel');
        await other.next((e) => e.type === 'message');
        assert.equal(ws.closed, null);
        assert.equal(mixed.ended, false);
    });
});

/** PUBLISH channel message on the Redis at url (RESP by hand: no client library needed). */
function redisPublish(url, channel, message) {
    const u = new URL(url);
    const arg = (s) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
    return new Promise((resolve, reject) => {
        const sock = net.connect(Number(u.port), u.hostname, () => sock.write(`*3\r\n${arg('PUBLISH')}${arg(channel)}${arg(message)}`));
        sock.once('data', (d) => {
            sock.destroy();
            resolve(d.toString());
        });
        sock.once('error', reject);
    });
}

describe('two nodes on one Redis', () => {
    const url = process.env.PUSHEDGE_TEST_REDIS_URL;
    const args = ['--auth', 'optional', '--jwt-secret', SECRET, '--api-key', KEY, '--redis', url || 'redis://127.0.0.1:1'];
    const refs = url ? sharedServers(before, after, [[args], [args]]) : [];

    it('a revocation posted to node 1 ends the user\'s connections on node 2 within a second', async (t) => {
        if (!url)
            return skipOrFail(t, 'PUSHEDGE_TEST_REDIS_URL is not set');
        const [n1, n2] = refs.map((r) => r.srv.url);
        for (const base of [n1, n2])
            await waitUntil(async () => (await httpRequest(base, '/readyz')).status === 200, { what: 'the Redis link up', timeoutMs: 10000 });
        const alice = newUser();
        const ws = await openWs(n2, `/ws?channel=user:${alice}`, { t, headers: bearer(token(alice)) });
        await ws.nextOp('subscribed');
        const s = await openSSE(n2, `/sse?channel=user:${alice}`, { t, headers: bearer(token(alice)) });
        await s.waitLive();
        const local = await openWs(n1, `/ws?channel=user:${alice}`, { t, headers: bearer(token(alice)) });
        await local.nextOp('subscribed');
        const t0 = Date.now();
        const r = await disconnect(n1, `user=${alice}&reason=logged%20out`);
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.json, { disconnected: 1 }, 'N counts node 1 only');
        const c = await ws.waitClose(2000);
        assert.equal(c.code, 4003);
        assert.equal(c.reason, 'logged out');
        assert.ok(c.t - t0 < 1000, `node 2's WebSocket closed within a second (${c.t - t0} ms)`);
        const e = await s.next((e) => e.type === 'revoked', 2000);
        assert.ok(e.t - t0 < 1000, `node 2's SSE stream told within a second (${e.t - t0} ms)`);
        await s.waitEnd(2000);
        assert.equal((await local.waitClose(2000)).code, 4003);
        /* Channel revocation crosses too. */
        const ws2 = await openWs(n2, `/ws?channel=user:${alice}&channel=orders.${alice}`, { t, headers: bearer(token(alice)) });
        await ws2.nextOp('subscribed');
        await ws2.nextOp('subscribed');
        assert.deepEqual((await disconnect(n1, `user=${alice}&channel=orders.*`)).json, { disconnected: 0 });
        const err = await ws2.nextOp('error', () => true, 2000);
        assert.deepEqual([err.code, err.channel], ['revoked', `orders.${alice}`]);
        assert.equal(ws2.closed, null);
        /* The control channel checks what it is sent as the endpoint does: a reason that would
         * break an SSE event is ignored (and logged), a well-formed message from another
         * process is applied. */
        const bad = JSON.stringify({ user: alice, reason: 'x\nevent: message\ndata: forged' });
        assert.match(await redisPublish(url, 'pe:control', `0123456789abcdef ${bad}`), /^:[1-9]/);
        await publishOk(n2, `user:${alice}`, { after: 'bad control' }, KEYH);
        assert.deepEqual((await ws2.nextOp('message')).data, { after: 'bad control' });
        assert.equal(ws2.closed, null, 'the malformed revocation was ignored');
        await redisPublish(url, 'pe:control', `0123456789abcdef ${JSON.stringify({ user: alice, reason: 'from elsewhere' })}`);
        assert.deepEqual(await ws2.waitClose(2000).then((c) => [c.code, c.reason]), [4003, 'from elsewhere']);
    });
});
