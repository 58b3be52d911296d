/*
 * Identity and access (docs/auth.md), against tokens minted here with node's own crypto (an
 * implementation independent of the server's OpenSSL code):
 * - --auth optional: anonymous readers get --public-channel channels only (401 otherwise); a
 *   token opens the channels of its claims, {sub} bound to its subject (403 otherwise, the same
 *   whether or not the channel exists); on SSE, long-poll and WebSocket (the handshake's query
 *   channels and later subscribe ops), every channel of a multi-channel request checked;
 * - token sources: Authorization: Bearer, the pushedge_token cookie, the token query parameter;
 *   a WebSocket handshake with a cookie token from another site's page is refused (CSWSH);
 * - refusals: bad signature, alg none, an RS256 public key used as an HMAC secret (algorithm
 *   confusion), expired (token_expired), not yet valid, wrong issuer / audience, malformed
 *   base64 and JSON, oversized;
 * - RS256 (PEM), PS256 and ES256 (JWKS, by kid); SIGHUP reloads the key file (rotation), and a
 *   broken file at reload keeps the old keys; a bad key file at start exits 2;
 * - --auth required: anonymous readers refused even on public channels.
 *
 * - publishing with a token: POST /api/publish, POST /api/batch (item by item) and the WebSocket
 *   publish op where the "publish" claim allows, the API key as before.
 *
 * - the WebSocket auth op (first message only).
 *
 * - cookies and cross-site requests (issue 13 item 7): a cookie token from another site's page
 *   is refused 403 origin_not_allowed on ws, sse and poll before the token is read (a bad cookie
 *   too), also without Origin when Sec-Fetch-Site says another site; "*" in --allowed-origin
 *   does not extend to cookies; a header or query token is not ambient and is not checked;
 *   Access-Control-Allow-Credentials only for an origin listed by name, with --auth on.
 *
 * Elsewhere: the auth deadline, expiry notices and refresh (auth_expiry.test.mjs), revocation
 * (auth_revoke.test.mjs), every transport against every token source (auth_matrix.test.mjs).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkJsonError, httpRequest, openSSE, publishOk, runOnce, sharedServer, startServer, uniqueChannel, waitUntil } from './lib.mjs';
import { openWs } from './wslib.mjs';

const SECRET = 'e2e-secret-0123456789abcdef0123456789';
const b64 = (b) => Buffer.from(b).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

/** A compact JWS: alg HS*, RS256, PS256 or ES256 (raw R||S, dsaEncoding ieee-p1363). */
function mint(payload, { alg = 'HS256', key = SECRET, kid, header = {} } = {}) {
    const h = { alg, typ: 'JWT', ...(kid ? { kid } : {}), ...header };
    const input = `${b64(JSON.stringify(h))}.${b64(typeof payload === 'string' ? payload : JSON.stringify(payload))}`;
    let sig;
    if (alg.startsWith('HS'))
        sig = crypto.createHmac(`sha${alg.slice(2)}`, key).update(input).digest();
    else if (alg === 'RS256')
        sig = crypto.sign('sha256', Buffer.from(input), key);
    else if (alg === 'PS256')
        sig = crypto.sign('sha256', Buffer.from(input), { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
    else if (alg === 'ES256')
        sig = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    else
        sig = Buffer.alloc(0);
    return `${input}.${b64(sig)}`;
}

const bearer = (tok) => ({ authorization: `Bearer ${tok}` });
const alice = (extra = {}) => mint({ sub: 'alice', exp: now() + 600, channels: ['user:{sub}', 'orders.*'], ...extra });

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-auth-'));
const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsa2 = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsaPem = rsa.publicKey.export({ type: 'spki', format: 'pem' });
const rsaPemFile = path.join(tmp, 'rsa.pem');
fs.writeFileSync(rsaPemFile, rsaPem);
const jwk = (pub, kid) => ({ ...pub.export({ format: 'jwk' }), kid, use: 'sig' });
const jwksFile = path.join(tmp, 'keys.json');
fs.writeFileSync(jwksFile, JSON.stringify({ keys: [jwk(ec.publicKey, 'ec-1'), jwk(rsa2.publicKey, 'rsa-2')] }));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('--auth optional', () => {
    const ref = sharedServer(before, after, ['--auth', 'optional', '--jwt-secret', SECRET, '--jwt-key', rsaPemFile, '--jwt-key', jwksFile,
        '--public-channel', 'news', '--public-channel', 'public.*', '--jwt-issuer', 'https://login.example', '--jwt-audience', 'pushedge']);
    const claims = (extra = {}) => ({ sub: 'alice', exp: now() + 600, iss: 'https://login.example', aud: ['x', 'pushedge'], channels: ['user:{sub}', 'orders.*'], ...extra });
    const good = (extra, opts) => mint(claims(extra), opts);

    it('SSE: anonymous readers get public channels, 401 elsewhere', async (t) => {
        const base = ref.srv.url;
        const s = await openSSE(base, '/sse?channel=public.a', { t });
        assert.equal(s.status, 200);
        const s2 = await openSSE(base, '/sse?channel=news', { t });
        assert.equal(s2.status, 200);
        const r = await httpRequest(base, '/sse?channel=user:alice');
        checkJsonError(r, 401);
        assert.equal(r.json.error.code, 'unauthorized');
        assert.match(String(r.headers['www-authenticate']), /^Bearer/);
    });

    it('SSE: a token opens its channels, {sub} bound to the subject; 403 elsewhere, existing or not', async (t) => {
        const base = ref.srv.url;
        const ch = `user:alice`;
        const s = await openSSE(base, `/sse?channel=${ch}`, { t, headers: bearer(good()) });
        assert.equal(s.status, 200);
        await s.waitLive();
        await publishOk(base, ch, { hello: 1 });
        const ev = await s.next((e) => e.type === 'message');
        assert.deepEqual(JSON.parse(ev.data).data, { hello: 1 });

        await publishOk(base, 'user:bob', { secret: 1 }); /* bob's channel exists now */
        const r1 = await httpRequest(base, '/sse?channel=user:bob', { headers: bearer(good()) });
        checkJsonError(r1, 403);
        assert.equal(r1.json.error.code, 'forbidden');
        const r2 = await httpRequest(base, `/sse?channel=user:nobody-${Date.now()}`, { headers: bearer(good()) });
        checkJsonError(r2, 403);
        assert.deepEqual(r2.json, r1.json, 'the same answer whether or not the channel exists');
        const s3 = await openSSE(base, '/sse?channel=orders.42&channel=public.x', { t, headers: bearer(good()) });
        assert.equal(s3.status, 200, 'a pattern with * and a public channel together');
    });

    it('every channel of a multi-channel request is checked', async () => {
        const base = ref.srv.url;
        const r = await httpRequest(base, '/sse?channel=user:alice&channel=user:bob', { headers: bearer(good()) });
        checkJsonError(r, 403);
        const p = await httpRequest(base, '/poll?channel=user:alice&channel=user:bob&timeout=1', { headers: bearer(good()) });
        checkJsonError(p, 403);
        const a = await httpRequest(base, '/poll?channel=news&channel=user:alice&timeout=1');
        checkJsonError(a, 401);
    });

    it('token sources: Authorization, cookie, query', async (t) => {
        const base = ref.srv.url;
        const tok = good();
        const c = await openSSE(base, '/sse?channel=user:alice', { t, headers: { cookie: `theme=dark; pushedge_token=${tok}; x=1` } });
        assert.equal(c.status, 200, 'cookie');
        const q = await openSSE(base, `/sse?channel=user:alice&token=${tok}`, { t });
        assert.equal(q.status, 200, 'query');
        const p = await httpRequest(base, `/poll?channel=user:alice&timeout=1&token=${tok}`);
        assert.equal(p.status, 200, `poll with ?token=: ${p.text}`);
        /* The header is used first: an invalid one is refused even with a good cookie. */
        const r = await httpRequest(base, '/sse?channel=user:alice', { headers: { ...bearer('x.y.z'), cookie: `pushedge_token=${tok}` } });
        checkJsonError(r, 401);
        const stderr = ref.srv.output().stderr;
        assert.ok(!stderr.includes(tok.split('.')[2]), 'the token never reaches the log');
    });

    it('refusals: signature, none, algorithm confusion, time, issuer, audience, malformed, oversized', async () => {
        const base = ref.srv.url;
        const cases = {
            'bad signature': mint(claims(), { key: 'another-secret-0123456789abcdef0123456789' }),
            'alg none': mint(claims(), { alg: 'none' }),
            'RS256 public key as HMAC secret': mint(claims(), { key: rsaPem }),
            'not yet valid': good({ nbf: now() + 3600 }),
            'wrong issuer': good({ iss: 'https://evil.example' }),
            'no issuer': good({ iss: undefined }),
            'wrong audience': good({ aud: 'other' }),
            'bad base64': good().replace('.', '.%%'),
            'bad JSON': mint('{"sub": "alice", ', {}),
            'exp not a number': good({ exp: 'tomorrow' }),
            'pattern {sub}*': good({ channels: ['user:{sub}*'] }),
            oversized: good({ pad: 'x'.repeat(9000) }),
            'RS256 signed by an unknown key': mint(claims(), { alg: 'RS256', key: rsa2.privateKey }),
        };
        for (const [what, tok] of Object.entries(cases)) {
            const r = await httpRequest(base, '/sse?channel=user:alice', { headers: bearer(tok) });
            checkJsonError(r, 401, what);
            assert.equal(r.json.error.code, 'unauthorized', what);
        }
        const e = await httpRequest(base, '/sse?channel=user:alice', { headers: bearer(good({ exp: now() - 3600 })) });
        checkJsonError(e, 401);
        assert.equal(e.json.error.code, 'token_expired');
        const pe = await httpRequest(base, '/poll?channel=news&timeout=1', { headers: bearer(good({ exp: now() - 3600 })) });
        checkJsonError(pe, 401, 'an expired token is refused even for a public channel');
        assert.equal(pe.json.error.code, 'token_expired');
        const skew = await httpRequest(base, '/poll?channel=user:alice&timeout=1', { headers: bearer(good({ exp: now() - 5 })) });
        assert.equal(skew.status, 200, 'within the 30 s leeway');
    });

    it('RS256 from a PEM file, PS256, ES256 and RS256 from a JWKS by kid', async () => {
        const base = ref.srv.url;
        const ok = [
            mint(claims(), { alg: 'RS256', key: rsa.privateKey }),
            mint(claims(), { alg: 'PS256', key: rsa.privateKey }),
            mint(claims(), { alg: 'ES256', key: ec.privateKey, kid: 'ec-1' }),
            mint(claims(), { alg: 'RS256', key: rsa2.privateKey, kid: 'rsa-2' }),
            mint(claims(), { alg: 'HS512', kid: 'unknown-kid-falls-back-to-the-secret' }),
        ];
        for (const tok of ok) {
            const r = await httpRequest(base, '/poll?channel=user:alice&timeout=1', { headers: bearer(tok) });
            assert.equal(r.status, 200, `${JSON.parse(Buffer.from(tok.split('.')[0], 'base64url'))?.alg}: ${r.text}`);
        }
        const wrongKid = mint(claims(), { alg: 'ES256', key: ec.privateKey, kid: 'rsa-2' });
        checkJsonError(await httpRequest(base, '/poll?channel=user:alice&timeout=1', { headers: bearer(wrongKid) }), 401, 'an EC signature under an RSA kid');
        const der = mint(claims(), { alg: 'ES256', key: ec.privateKey, kid: 'ec-1' }).split('.');
        der[2] = b64(crypto.sign('sha256', Buffer.from(`${der[0]}.${der[1]}`), ec.privateKey)); /* DER, not R||S */
        checkJsonError(await httpRequest(base, '/poll?channel=user:alice&timeout=1', { headers: bearer(der.join('.')) }), 401, 'a DER ES256 signature');
    });

    it('WebSocket: the handshake checks its query channels; subscribe ops are checked one by one', async (t) => {
        const base = ref.srv.url;
        await assert.rejects(openWs(base, '/ws?channel=user:bob', { t, headers: bearer(good()) }), (e) => e.status === 403 && /forbidden/.test(e.body));
        await assert.rejects(openWs(base, '/ws?channel=user:alice', { t }), (e) => e.status === 401 && /unauthorized/.test(e.body));
        await assert.rejects(openWs(base, '/ws', { t, headers: bearer(good({ exp: now() - 3600 })) }), (e) => e.status === 401 && /token_expired/.test(e.body));
        const ws = await openWs(base, '/ws?channel=user:alice', { t, headers: bearer(good()) });
        await ws.nextOp('subscribed');
        const r1 = await ws.request({ op: 'subscribe', channel: 'user:bob' });
        assert.equal(r1.op, 'error');
        assert.equal(r1.code, 'forbidden');
        const r2 = await ws.request({ op: 'subscribe', channel: 'orders.7' });
        assert.equal(r2.op, 'subscribed');
        await publishOk(base, 'orders.7', { n: 7 });
        const m = await ws.next((j) => j.channel === 'orders.7' && j.data);
        assert.deepEqual(m.data, { n: 7 });
        const anon = await openWs(base, '/ws', { t });
        const r3 = await anon.request({ op: 'subscribe', channel: 'user:alice' });
        assert.equal(r3.code, 'unauthorized');
        const r4 = await anon.request({ op: 'subscribe', channel: 'news' });
        assert.equal(r4.op, 'subscribed', 'public channels for anonymous WebSocket clients');
        const q = await openWs(base, `/ws?channel=user:alice&token=${good()}`, { t });
        await q.nextOp('subscribed');
    });

    it('WebSocket auth op: the first message of an anonymous connection', async (t) => {
        const base = ref.srv.url;
        const ws = await openWs(base, '/ws', { t });
        const a = await ws.request({ op: 'auth', token: good() });
        assert.equal(a.op, 'authenticated', JSON.stringify(a));
        assert.equal(a.user, 'alice');
        assert.equal(typeof a.exp, 'number');
        assert.equal((await ws.request({ op: 'subscribe', channel: 'user:alice' })).op, 'subscribed');
        assert.equal((await ws.request({ op: 'subscribe', channel: 'user:bob' })).code, 'forbidden');
        assert.equal((await ws.request({ op: 'auth', token: good() })).code, 'bad_request', 'only once');

        const late = await openWs(base, '/ws', { t });
        await late.request({ op: 'ping' });
        assert.equal((await late.request({ op: 'auth', token: good() })).code, 'bad_request', 'only first');
        const bad = await openWs(base, '/ws', { t });
        assert.equal((await bad.request({ op: 'auth', token: good({ exp: now() - 3600 }) })).code, 'token_expired');
        const bad2 = await openWs(base, '/ws', { t });
        assert.equal((await bad2.request({ op: 'auth', token: 'x.y.z' })).code, 'unauthorized');
        assert.equal((await bad2.request({ op: 'subscribe', channel: 'user:alice' })).code, 'unauthorized', 'still anonymous');
    });

    it('WebSocket with a cookie token: another site\'s page is refused (CSWSH), the own page is not', async (t) => {
        const base = ref.srv.url;
        const cookie = { cookie: `pushedge_token=${good()}` };
        await assert.rejects(openWs(base, '/ws?channel=user:alice', { t, headers: cookie, origin: 'https://evil.example' }),
            (e) => e.status === 403 && /origin_not_allowed/.test(e.body));
        const own = await openWs(base, '/ws?channel=user:alice', { t, headers: cookie, origin: base });
        await own.nextOp('subscribed');
        const tool = await openWs(base, '/ws?channel=user:alice', { t, headers: cookie });
        await tool.nextOp('subscribed', undefined, 5000);
        const hdr = await openWs(base, '/ws?channel=user:alice', { t, headers: bearer(good()), origin: 'https://evil.example' });
        await hdr.nextOp('subscribed', undefined, 5000);
    });
});

describe('--auth required', () => {
    const ref = sharedServer(before, after, ['--auth', 'required', '--jwt-secret', SECRET, '--public-channel', 'news']);

    it('anonymous readers are refused, even on public channels; a token reads them', async (t) => {
        const base = ref.srv.url;
        checkJsonError(await httpRequest(base, '/sse?channel=news'), 401);
        checkJsonError(await httpRequest(base, '/poll?channel=news&timeout=1'), 401);
        await assert.rejects(openWs(base, '/ws?channel=news', { t }), (e) => e.status === 401);
        const s = await openSSE(base, '/sse?channel=news', { t, headers: bearer(alice()) });
        assert.equal(s.status, 200);
    });
});

describe('--auth required with --api-key', () => {
    const KEY = 'e2e-api-key-2';
    const ref = sharedServer(before, after, ['--auth', 'required', '--jwt-secret', SECRET, '--api-key', KEY]);

    it('a backend with the key publishes over WebSocket and is not held to the auth deadline', { timeout: 30000 }, async (t) => {
        const ws = await openWs(ref.srv.url, '/ws', { t, headers: bearer(KEY) });
        assert.equal((await ws.request({ op: 'publish', channel: 'c', data: 1 })).op, 'published');
        await new Promise((r) => setTimeout(r, 11000)); /* past the 10 s deadline of anonymous connections */
        const r = await ws.request({ op: 'publish', channel: 'c', data: 2 });
        assert.equal(r.op, 'published', `still open: ${JSON.stringify(r)}`);
        assert.equal((await ws.request({ op: 'subscribe', channel: 'c' })).code, 'unauthorized', 'the key reads nothing');
    });
});

describe('publishing with a token', () => {
    const KEY = 'e2e-api-key';
    const ref = sharedServer(before, after, ['--auth', 'optional', '--jwt-secret', SECRET, '--api-key', KEY, '--public-channel', 'chat:*']);
    const writer = (extra = {}) => mint({ sub: 'alice', exp: now() + 600, publish: ['chat:{sub}'], ...extra });
    const post = (channel, headers) =>
        httpRequest(ref.srv.url, `/api/publish?channel=${channel}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"m":1}' });

    it('POST /api/publish: a token publishes where its "publish" claim allows, the API key everywhere', async () => {
        const ok = await post('chat:alice', bearer(writer()));
        assert.equal(ok.status, 200, ok.text);
        const other = await post('chat:bob', bearer(writer()));
        checkJsonError(other, 403);
        assert.equal(other.json.error.code, 'forbidden');
        const expired = await post('chat:alice', bearer(writer({ exp: now() - 3600 })));
        checkJsonError(expired, 401);
        const forged = await post('chat:alice', bearer(mint({ sub: 'alice', publish: ['*'] }, { key: 'forged-secret-0123456789abcdef0123456789' })));
        checkJsonError(forged, 401, 'a token that does not verify is no credential');
        assert.equal(forged.json.error.code, 'unauthorized');
        assert.equal(expired.json.error.code, 'token_expired');
        const reader = await post('chat:alice', bearer(mint({ sub: 'alice', channels: ['*'] })));
        checkJsonError(reader, 403, 'a token without "publish"');
        const wrongKey = await post('chat:alice', bearer('not-the-key'));
        checkJsonError(wrongKey, 403);
        assert.equal((await post('chat:bob', bearer(KEY))).status, 200, 'the API key still publishes anywhere');
    });

    it('POST /api/batch: each item within the token\'s "publish" claim', async () => {
        const r = await httpRequest(ref.srv.url, '/api/batch', {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...bearer(writer()) },
            body: JSON.stringify([{ channel: 'chat:alice', data: 1 }, { channel: 'chat:bob', data: 2 }]),
        });
        assert.equal(r.status, 200, r.text);
        const items = r.json.results ?? r.json;
        assert.ok(JSON.stringify(items).includes('forbidden'), `chat:bob refused: ${r.text}`);
        assert.ok(/"id"/.test(JSON.stringify(items[0] ?? items)), `chat:alice stored: ${r.text}`);
        const bad = await httpRequest(ref.srv.url, '/api/batch', { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(writer({ exp: now() - 3600 })) }, body: '[]' });
        checkJsonError(bad, 401);
        assert.equal(bad.json.error.code, 'token_expired');
    });

    it('WebSocket publish op: by the token of the handshake', async (t) => {
        const ws = await openWs(ref.srv.url, '/ws?channel=chat:alice', { t, headers: bearer(writer()) });
        await ws.nextOp('subscribed');
        const r1 = await ws.request({ op: 'publish', channel: 'chat:alice', data: { hi: 1 } });
        assert.equal(r1.op, 'published', JSON.stringify(r1));
        const r2 = await ws.request({ op: 'publish', channel: 'chat:bob', data: { hi: 2 } });
        assert.equal(r2.op, 'error');
        assert.equal(r2.code, 'forbidden');
        const anon = await openWs(ref.srv.url, '/ws', { t });
        const r3 = await anon.request({ op: 'publish', channel: 'chat:alice', data: 1 });
        assert.equal(r3.code, 'forbidden', 'anonymous clients publish with the API key only');
    });

    it('WebSocket with the API key as Bearer: anonymous for reading, publishes anywhere (the key is not read as a token)', async (t) => {
        const ws = await openWs(ref.srv.url, '/ws?channel=chat:room', { t, headers: bearer(KEY) });
        await ws.nextOp('subscribed');
        const r = await ws.request({ op: 'publish', channel: 'chat:bob', data: { k: 1 } });
        assert.equal(r.op, 'published', JSON.stringify(r));
        const sub = await ws.request({ op: 'subscribe', channel: 'private' });
        assert.equal(sub.code, 'unauthorized', JSON.stringify(sub));
        await assert.rejects(openWs(ref.srv.url, '/ws?channel=chat:room', { t, headers: bearer(KEY + 'x') }), (e) => e.status === 401,
            'a wrong key is an invalid token');
    });
});

describe('keys', () => {
    it('SIGHUP rereads the key file; a broken file at reload keeps the old keys', async (t) => {
        const file = path.join(tmp, 'rotating.json');
        fs.writeFileSync(file, JSON.stringify({ keys: [jwk(rsa.publicKey, 'k1')] }));
        const srv = await startServer(['--auth', 'required', '--jwt-key', file]);
        t.after(() => srv.stop());
        const tok1 = mint({ sub: 'a', channels: ['*'] }, { alg: 'RS256', key: rsa.privateKey, kid: 'k1' });
        const tok2 = mint({ sub: 'a', channels: ['*'] }, { alg: 'RS256', key: rsa2.privateKey, kid: 'k2' });
        const status = async (tok) => (await httpRequest(srv.url, '/poll?channel=x&timeout=1', { headers: bearer(tok) })).status;
        assert.equal(await status(tok1), 200);
        assert.equal(await status(tok2), 401);

        fs.writeFileSync(file, JSON.stringify({ keys: [jwk(rsa.publicKey, 'k1'), jwk(rsa2.publicKey, 'k2')] }));
        process.kill(srv.pid, 'SIGHUP');
        await waitUntil(() => srv.output().stderr.includes('JWT keys reloaded'), { what: 'the reload log line' });
        assert.equal(await status(tok2), 200, 'the new key verifies after SIGHUP');
        assert.equal(await status(tok1), 200, 'the old key still does');

        fs.writeFileSync(file, '{"keys": [');
        process.kill(srv.pid, 'SIGHUP');
        await waitUntil(() => srv.output().stderr.includes('keys not reloaded'), { what: 'the failed reload log line' });
        assert.equal(await status(tok2), 200, 'the previous keys stay in service');
    });

    it('a bad key file or a missing key at start exits 2 naming the problem', async () => {
        const bad = path.join(tmp, 'bad.pem');
        fs.writeFileSync(bad, 'not a key\n');
        const r = await runOnce(['--auth', 'optional', '--jwt-key', bad]);
        assert.equal(r.code, 2);
        assert.match(r.stderr, /--jwt-key .*bad\.pem/);
        const r2 = await runOnce(['--auth', 'required']);
        assert.equal(r2.code, 2);
        assert.match(r2.stderr, /--jwt-secret or --jwt-key/);
        const r3 = await runOnce(['--jwt-secret', SECRET]);
        assert.equal(r3.code, 2);
        assert.match(r3.stderr, /--auth/);
    });
});

describe('cookies and cross-site requests', () => {
    const EVIL = 'https://evil.example', APP = 'https://app.example';
    const claims = (extra = {}) => ({ sub: 'alice', exp: now() + 600, channels: ['user:{sub}'], ...extra });
    /* The answer's status, error code and CORS headers, on each transport. SSE answers 200 with a
     * stream that never ends: only its head is read. */
    async function attempt(base, transport, headers, channel = 'user:alice') {
        if (transport === 'ws') {
            const { origin, ...rest } = headers;
            try {
                const ws = await openWs(base, `/ws?channel=${channel}`, { headers: rest, ...(origin ? { origin } : {}) });
                const h = ws.upgradeHeaders;
                ws.ws.terminate();
                return { status: 101, headers: h ?? {} };
            } catch (e) {
                if (!e.status)
                    throw e;
                let code;
                try {
                    code = JSON.parse(e.body).error.code;
                } catch {
                    code = undefined;
                }
                return { status: e.status, code, headers: {} };
            }
        }
        if (transport === 'sse') {
            const s = await openSSE(base, `/sse?channel=${channel}`, { headers });
            s.close();
            if (s.status === 200)
                return { status: 200, headers: s.headers };
        }
        const r = await httpRequest(base, `/${transport}?channel=${channel}&timeout=1`, { headers });
        return { status: r.status, code: r.json?.error?.code, headers: r.headers };
    }
    const TRANSPORTS = ['ws', 'sse', 'poll'];

    describe('without --allowed-origin', () => {
        const ref = sharedServer(before, after, ['--auth', 'optional', '--jwt-secret', SECRET, '--public-channel', 'news']);

        it('a cookie token from another site is refused before it is read; the own page and tools are not', async () => {
            const base = ref.srv.url;
            const own = new URL(base).origin;
            const cookie = `pushedge_token=${mint(claims())}`;
            const badCookie = `pushedge_token=${mint(claims(), { key: 'another-secret-0123456789abcdef0123456789' })}`;
            for (const tr of TRANSPORTS) {
                const evil = await attempt(base, tr, { cookie, origin: EVIL });
                assert.equal(evil.status, 403, `${tr}: cookie from another site`);
                assert.equal(evil.code, 'origin_not_allowed', tr);
                assert.equal(evil.headers['access-control-allow-credentials'], undefined, tr);
                const bad = await attempt(base, tr, { cookie: badCookie, origin: EVIL });
                assert.deepEqual([bad.status, bad.code], [403, 'origin_not_allowed'], `${tr}: an invalid cookie from another site is not verified`);
                const nul = await attempt(base, tr, { cookie, origin: 'null' });
                assert.equal(nul.status, 403, `${tr}: an opaque origin (sandboxed page)`);
                assert.equal((await attempt(base, tr, { cookie, origin: own })).status, tr === 'ws' ? 101 : 200, `${tr}: the server's own page`);
                assert.equal((await attempt(base, tr, { cookie })).status, tr === 'ws' ? 101 : 200, `${tr}: a tool (no Origin)`);
                /* A header or query token was put there by the page itself: not ambient. */
                assert.equal((await attempt(base, tr, { ...bearer(mint(claims())), origin: EVIL })).status, tr === 'ws' ? 101 : 200, `${tr}: header token`);
                assert.equal((await attempt(base, tr, { origin: EVIL }, `user:alice&token=${mint(claims())}`)).status, tr === 'ws' ? 101 : 200,
                    `${tr}: query token`);
                assert.equal((await attempt(base, tr, { origin: EVIL }, 'news')).status, tr === 'ws' ? 101 : 200, `${tr}: anonymous, public channel`);
            }
        });

        it('no Origin but Sec-Fetch-Site cross-site or same-site (an <img> or <script> of another page): refused with a cookie', async () => {
            const base = ref.srv.url;
            const cookie = `pushedge_token=${mint(claims())}`;
            for (const tr of ['sse', 'poll']) {
                for (const site of ['cross-site', 'same-site']) {
                    const r = await attempt(base, tr, { cookie, 'sec-fetch-site': site });
                    assert.deepEqual([r.status, r.code], [403, 'origin_not_allowed'], `${tr} ${site}`);
                }
                for (const site of ['same-origin', 'none'])
                    assert.equal((await attempt(base, tr, { cookie, 'sec-fetch-site': site })).status, 200, `${tr} ${site}`);
            }
        });

        it('no CORS header at all without a list', async () => {
            const base = ref.srv.url;
            const r = await attempt(base, 'poll', { ...bearer(mint(claims())), origin: EVIL });
            assert.equal(r.headers['access-control-allow-origin'], undefined);
            assert.equal(r.headers['access-control-allow-credentials'], undefined);
        });
    });

    describe('--allowed-origin', () => {
        const named = sharedServer(before, after, ['--auth', 'optional', '--jwt-secret', SECRET, '--public-channel', 'news',
            '--allowed-origin', APP]);
        const star = sharedServer(before, after, ['--auth', 'optional', '--jwt-secret', SECRET, '--public-channel', 'news',
            '--allowed-origin', '*', '--allowed-origin', APP]);
        const off = sharedServer(before, after, ['--allowed-origin', APP]);

        it('a listed origin gets credentials (cookie accepted, Allow-Credentials with its own origin), preflight included', async () => {
            const cookie = `pushedge_token=${mint(claims())}`;
            for (const ref of [named, star]) {
                const base = ref.srv.url;
                for (const tr of TRANSPORTS) {
                    const r = await attempt(base, tr, { cookie, origin: APP });
                    assert.equal(r.status, tr === 'ws' ? 101 : 200, tr);
                    if (tr !== 'ws') {
                        assert.equal(r.headers['access-control-allow-origin'], APP, tr);
                        assert.equal(r.headers['access-control-allow-credentials'], 'true', tr);
                    }
                }
                const pre = await httpRequest(base, '/sse?channel=user:alice', {
                    method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'GET', 'access-control-request-headers': 'last-event-id' },
                });
                assert.equal(pre.status, 204);
                assert.equal(pre.headers['access-control-allow-origin'], APP);
                assert.equal(pre.headers['access-control-allow-credentials'], 'true');
                const pub = await httpRequest(base, '/api/publish', { method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'POST' } });
                assert.equal(pub.headers['access-control-allow-credentials'], undefined, 'publishing reads no cookie');
            }
        });

        it('"*" does not extend to cookies: another site is refused with one, served without credentials otherwise', async () => {
            const base = star.srv.url;
            const cookie = `pushedge_token=${mint(claims())}`;
            for (const tr of TRANSPORTS) {
                const r = await attempt(base, tr, { cookie, origin: EVIL });
                assert.deepEqual([r.status, r.code], [403, 'origin_not_allowed'], tr);
                assert.equal(r.headers['access-control-allow-credentials'], undefined, tr);
                const hdr = await attempt(base, tr, { ...bearer(mint(claims())), origin: EVIL });
                assert.equal(hdr.status, tr === 'ws' ? 101 : 200, `${tr}: header token`);
                if (tr !== 'ws') {
                    assert.equal(hdr.headers['access-control-allow-origin'], '*', tr);
                    assert.equal(hdr.headers['access-control-allow-credentials'], undefined, `${tr}: never with *`);
                }
            }
            const pre = await httpRequest(base, '/poll?channel=news', { method: 'OPTIONS', headers: { origin: EVIL, 'access-control-request-method': 'GET' } });
            assert.equal(pre.status, 204);
            assert.equal(pre.headers['access-control-allow-credentials'], undefined, 'preflight: never with *');
        });

        it('an unlisted origin gets no credentials, even on its readable refusal; --auth off sends none', async () => {
            const r = await attempt(named.srv.url, 'sse', { origin: EVIL }, 'news');
            assert.deepEqual([r.status, r.code], [403, 'origin_not_allowed']);
            assert.equal(r.headers['access-control-allow-credentials'], undefined);
            const o = await attempt(off.srv.url, 'poll', { origin: APP }, 'x');
            assert.equal(o.status, 200);
            assert.equal(o.headers['access-control-allow-origin'], APP);
            assert.equal(o.headers['access-control-allow-credentials'], undefined, 'cookies mean nothing with --auth off');
        });
    });
});
