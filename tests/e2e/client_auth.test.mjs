/*
 * The JS client's authentication (docs/client.md "Authentication") in Node against a real
 * pushedge with --auth required, tokens minted here with node's crypto (HS256), each transport
 * forced alone as client.test.mjs does:
 * - getToken() at start: the client connects and receives on each transport (the WebSocket's
 *   auth op, the SSE and long-poll Authorization header; also tokenVia 'query');
 * - an expired token at start: the refusal (401 token_expired, the auth op's error) makes it
 *   ask for a new one and connect;
 * - refresh with messages flowing, on each transport: short-lived tokens renewed again and
 *   again while messages are published; every message arrives exactly once, in order;
 * - refusals: a token the server cannot verify raises `auth` (unauthorized) after exactly one
 *   retry; a channel outside the token's claims raises `auth` (forbidden) for that channel;
 * - the server's side of expiry (expiring notices, the end at exp, revocation) where the server
 *   has it: see the describe blocks below for what each needs.
 *
 * Not here: fallback through proxies, timers (tests/client/), the browser (browser_auth).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import { PushEdge } from '../../web/src/pushedge.js';
import { delay, publishOk, sharedServer, uniqueChannel, waitUntil } from './lib.mjs';

const SECRET = 'client-auth-secret-0123456789abcdef012';
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

/** An HS256 JWS over `claims`, signed with `key`. */
function mint(claims, key = SECRET) {
    const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
    return `${input}.${crypto.createHmac('sha256', key).update(input).digest('base64url')}`;
}

/** A getToken() minting a token for alice that lives `ttl` seconds; counts its calls. */
function tokenSource({ ttl = 600, channels = ['user:{sub}', 'room.*'], key = SECRET, first = null } = {}) {
    const f = async () => {
        f.calls++;
        if (first && f.calls === 1)
            return first;
        return mint({ sub: 'alice', exp: now() + ttl, channels }, key);
    };
    f.calls = 0;
    return f;
}

const OPTS = { WebSocket, probeTimeout: 3000, connectTimeout: 5000, backoffBase: 100, backoffCap: 1000, reprobeInterval: 600000 };
const TRANSPORTS = ['websocket', 'sse', 'poll'];
const clients = new Set();
after(() => {
    for (const c of clients)
        c.close();
});

function client(base, opts) {
    const c = new PushEdge(base, { ...OPTS, ...opts });
    clients.add(c);
    c.got = [];
    c.auths = [];
    c.states = [];
    c.on('auth', (a) => c.auths.push(a));
    c.on('state', (s) => c.states.push(s.state + (s.reason ? `(${s.reason})` : '')));
    return c;
}

function sub(c, channel, since) {
    return c.subscribe(channel, (m) => c.got.push({ channel: m.channel, id: m.id, n: m.data.n }), since === undefined ? {} : { since });
}

async function connected(c, transport) {
    await waitUntil(() => c.transport === transport, { timeoutMs: 10000, what: `connected over ${transport} (${c.states.join(' ')})` });
}

/* Waits for n messages, then a sentinel on `channel`: a duplicate or stray message would have
 * come before it. The sentinel is taken out of c.got. */
async function waitCount(c, n, what, base, channel) {
    await waitUntil(() => c.got.length >= n, { timeoutMs: 15000, what: `${what}: ${n} messages (have ${c.got.length}; ${c.states.join(' ')})` });
    const id = await publishOk(base, channel, { n: -1 });
    await waitUntil(() => c.got.some((m) => m.id === id), { timeoutMs: 10000, what: `${what}: the sentinel` });
    const i = c.got.findIndex((m) => m.id === id);
    assert.equal(i, c.got.length - 1, `${what}: nothing after the sentinel`);
    c.got.splice(i, 1);
}

describe('client auth (Node, --auth required)', () => {
    const ref = sharedServer(before, after, ['--auth', 'required', '--jwt-secret', SECRET, '--poll-timeout', '2']);

    for (const tr of TRANSPORTS) {
        for (const via of ['header', 'query']) {
            it(`${tr}, tokenVia ${via}: getToken() at start, then messages on the token's channels`, { timeout: 20000 }, async () => {
                const base = ref.srv.url;
                const mine = 'user:alice', room = uniqueChannel('room.');
                const getToken = tokenSource();
                const c = client(base, { transports: [tr], getToken, tokenVia: via });
                sub(c, mine);
                sub(c, room);
                await connected(c, tr);
                const sent = [];
                for (let n = 1; n <= 6; n++) {
                    const channel = n % 2 ? room : mine;
                    sent.push({ channel, id: await publishOk(base, channel, { n }) });
                }
                await waitCount(c, 6, `${tr}/${via}`, base, room);
                /* Once each, in order per channel: the order across two channels is not promised
                 * (docs/protocol.md; one long-poll answer lists them channel by channel). */
                for (const ch of [mine, room])
                    assert.deepEqual(c.got.filter((m) => m.channel === ch).map((m) => m.id), sent.filter((m) => m.channel === ch).map((m) => m.id), ch);
                assert.equal(c.got.length, sent.length);
                assert.equal(getToken.calls, 1);
                assert.deepEqual(c.auths, []);
                c.close();
            });
        }

        it(`${tr}: an expired token at start is refused (token_expired); a new one connects`, { timeout: 20000 }, async () => {
            const base = ref.srv.url;
            const room = uniqueChannel('room.');
            const getToken = tokenSource({ first: mint({ sub: 'alice', exp: now() - 3600, channels: ['room.*'] }) });
            const c = client(base, { transports: [tr], getToken });
            sub(c, room, '0');
            const id = await publishOk(base, room, { n: 1 });
            await connected(c, tr);
            await waitCount(c, 1, tr, base, room);
            assert.deepEqual(c.got.map((m) => m.id), [id]);
            assert.equal(getToken.calls, 2);
            assert.ok(c.states.includes('disconnected(token_expired)'), c.states.join(' '));
            assert.deepEqual(c.auths, []);
            c.close();
        });

        it(`${tr}: refresh with messages flowing (4 s tokens renewed every 2 s): every message once, in order`, { timeout: 40000 }, async () => {
            const base = ref.srv.url;
            const room = uniqueChannel('room.');
            const getToken = tokenSource({ ttl: 4 });
            const c = client(base, { transports: [tr], getToken, refreshMargin: 2000 });
            sub(c, room);
            await connected(c, tr);
            const ids = [];
            const t0 = Date.now();
            for (let n = 1; Date.now() - t0 < 7000; n++) {
                ids.push(await publishOk(base, room, { n }));
                await delay(50);
            }
            await waitCount(c, ids.length, `${tr} across refreshes`, base, room);
            assert.deepEqual(c.got.map((m) => m.id), ids, 'every message once, in order');
            assert.ok(getToken.calls >= 3, `renewed again and again: ${getToken.calls} calls`);
            assert.deepEqual(c.auths, []);
            c.close();
        });

        it(`${tr}: a token that does not verify raises auth (unauthorized) after one retry`, { timeout: 20000 }, async () => {
            const getToken = tokenSource({ key: 'not-the-server-secret-0123456789abcdef' });
            const c = client(ref.srv.url, { transports: [tr], getToken });
            sub(c, 'user:alice');
            await waitUntil(() => c.auths.length > 0, { timeoutMs: 10000, what: `auth event (${c.states.join(' ')})` });
            assert.equal(c.auths[0].code, 'unauthorized');
            assert.equal(c.auths[0].transport, tr);
            assert.equal(getToken.calls, 2, 'start, and once more after the refusal');
            await delay(500);
            assert.equal(c.auths.length, 1);
            assert.equal(getToken.calls, 2, 'nothing more');
            assert.equal(c.transport, null);
            c.close();
        });

        it(`${tr}: a channel outside the token's claims raises auth (forbidden)`, { timeout: 20000 }, async () => {
            const getToken = tokenSource();
            const c = client(ref.srv.url, { transports: [tr], getToken });
            sub(c, 'user:bob');
            await waitUntil(() => c.auths.length > 0, { timeoutMs: 10000, what: `auth event (${c.states.join(' ')})` });
            assert.equal(c.auths[0].code, 'forbidden');
            if (tr === 'websocket')
                assert.equal(c.auths[0].channel, 'user:bob');
            else
                assert.equal(c.auths[0].status, 403);
            assert.equal(getToken.calls, 2, 'one new token was tried');
            c.close();
        });
    }

    it('without getToken: a static token works, and its refusal is final at once', { timeout: 20000 }, async () => {
        const base = ref.srv.url;
        const room = uniqueChannel('room.');
        const c = client(base, { transports: ['sse'], token: mint({ sub: 'alice', exp: now() + 600, channels: ['room.*'] }) });
        sub(c, room);
        await connected(c, 'sse');
        const id = await publishOk(base, room, { n: 1 });
        await waitCount(c, 1, 'static token', base, room);
        assert.deepEqual(c.got.map((m) => m.id), [id]);
        c.close();
        const anon = client(base, { transports: ['poll'] });
        sub(anon, room);
        await waitUntil(() => anon.auths.length > 0, { timeoutMs: 10000, what: 'auth event' });
        assert.equal(anon.auths[0].code, 'unauthorized');
        anon.close();
    });
});

/*
 * The server's side of expiry and revocation (docs/auth.md "Expiry", "Revocation"): its
 * notices drive the renewal (the client's own timer set to exp itself), its end of a connection
 * at exp raises `auth` token_expired when there is no getToken(), and POST /api/disconnect
 * raises `auth` revoked with the reason. Each test skips itself on a server without
 * /api/disconnect (one that has none of this).
 */
describe('client auth (Node): the server ends and warns', () => {
    const KEY = 'client-auth-api-key';
    const ref = sharedServer(before, after, ['--auth', 'required', '--jwt-secret', SECRET, '--jwt-leeway', '0', '--poll-timeout', '2',
        '--api-key', KEY]);
    let lifecycle = null;
    async function needsLifecycle(t) {
        if (lifecycle === null) {
            const r = await fetch(`${ref.srv.url}/api/disconnect?user=nobody`, { method: 'POST', headers: { authorization: `Bearer ${KEY}` } });
            lifecycle = r.status === 200;
        }
        if (!lifecycle)
            t.skip('this server has no expiry notices or revocation (POST /api/disconnect answers 404)');
        return lifecycle;
    }
    const publish = (ch, n) => publishOk(ref.srv.url, ch, { n }, { authorization: `Bearer ${KEY}` });

    for (const tr of TRANSPORTS) {
        it(`${tr}: the server's expiring notice brings the new token (no timer of our own before exp); every message once`, { timeout: 40000 }, async (t) => {
            if (!(await needsLifecycle(t)))
                return;
            const room = uniqueChannel('room.');
            const getToken = tokenSource({ ttl: 6 });
            const c = client(ref.srv.url, { transports: [tr], getToken, refreshMargin: 0 });
            sub(c, room);
            await connected(c, tr);
            const ids = [];
            const t0 = Date.now();
            for (let n = 1; Date.now() - t0 < 9000; n++) {
                ids.push(await publish(room, n));
                await delay(50);
            }
            const id = await publish(room, -1);
            await waitUntil(() => c.got.some((m) => m.id === id), { timeoutMs: 15000, what: `${tr}: the last message (${c.states.join(' ')})` });
            assert.deepEqual(c.got.map((m) => m.id), [...ids, id], 'every message once, in order');
            assert.ok(getToken.calls >= 2, `renewed on the notice: ${getToken.calls} calls`);
            assert.deepEqual(c.auths, []);
            if (tr === 'websocket')
                assert.ok(!c.states.some((s) => s.startsWith('disconnected')), `refreshed in place: ${c.states.join(' ')}`);
            c.close();
        });

        it(`${tr}: a static token that expires: the server ends it and the client raises auth (token_expired)`, { timeout: 30000 }, async (t) => {
            if (!(await needsLifecycle(t)))
                return;
            const room = uniqueChannel('room.');
            const c = client(ref.srv.url, { transports: [tr], token: mint({ sub: 'alice', exp: now() + 3, channels: ['room.*'] }) });
            sub(c, room);
            await connected(c, tr);
            await waitUntil(() => c.auths.length > 0, { timeoutMs: 15000, what: `${tr}: auth event (${c.states.join(' ')})` });
            assert.equal(c.auths[0].code, 'token_expired');
            assert.equal(c.transport, null);
            c.close();
        });

        it(`${tr}: POST /api/disconnect raises auth (revoked) with the reason, and nothing is retried`, { timeout: 30000 }, async (t) => {
            if (!(await needsLifecycle(t)))
                return;
            const user = `rev-${tr}-${process.pid}`;
            const getToken = async () => {
                getToken.calls++;
                return mint({ sub: user, exp: now() + 600, channels: ['room.*'] });
            };
            getToken.calls = 0;
            const room = uniqueChannel('room.');
            const c = client(ref.srv.url, { transports: [tr], getToken });
            sub(c, room);
            await connected(c, tr);
            if (tr === 'poll')
                await delay(300); /* a poll held by the server when the revocation comes */
            const r = await fetch(`${ref.srv.url}/api/disconnect?user=${user}&reason=account%20suspended`, { method: 'POST', headers: { authorization: `Bearer ${KEY}` } });
            assert.equal(r.status, 200);
            await waitUntil(() => c.auths.length > 0, { timeoutMs: 10000, what: `${tr}: auth event (${c.states.join(' ')})` });
            assert.equal(c.auths[0].code, 'revoked');
            assert.equal(c.auths[0].message, 'account suspended');
            await delay(500);
            assert.equal(getToken.calls, 1, 'no new token asked');
            assert.equal(c.transport, null);
            c.close();
        });
    }
});
