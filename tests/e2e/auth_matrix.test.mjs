/*
 * The token matrix (issue 13 item 8): every case on each transport (ws, sse, poll), against
 * tokens minted by PyJWT (python3-jwt, tests/e2e/jwt_mint.py) with keys openssl makes here at
 * run time: an implementation independent of the server's (OpenSSL EVP in edge/identity) and of
 * node's crypto (auth.test.mjs, whose cases on SSE and of token sources this file does not
 * repeat one by one; it runs them all on the three transports instead).
 *
 * - valid: HS256/384/512 (--jwt-secret), RS256 and PS256 (a PEM --jwt-key, no kid), RS256 and
 *   ES256 from a JWKS by kid; by header, cookie and query;
 * - bad signature; wrong algorithm (an RS256 public key used as an HMAC secret, with and without
 *   its kid; an RS256 header on a PS256 signature and the reverse; ES256 under an RSA kid;
 *   algorithms no key allows); alg none in several spellings;
 * - expired (token_expired), and within the leeway; nbf in the future, and within the leeway;
 *   wrong or missing iss and aud;
 * - malformed base64 (a signature that covers it), malformed JSON, a payload that is not an
 *   object, a duplicate member, too few or too many segments, an empty token;
 * - oversized (over PE_JWT_MAX_LEN, 8 KiB) and just under it;
 * - an unknown kid (a key without kid still verifies it, as docs/auth.md says; an unknown key
 *   does not); key rotation by kid with SIGHUP: add, then retire;
 * - a channel outside the claims alone and inside a multi-channel subscription with its cursor,
 *   the refusal identical whether the channel exists or not; a cursor naming a channel outside
 *   the subscription opens nothing;
 * - {sub} patterns: bound to the subject; a subject that would widen them gets nothing;
 * - the token query never reaches the log (text and json, debug level, every refusal).
 *
 * Registered twice: on clear text (e2e-auth_matrix) and with every client over TLS
 * (e2e-auth_matrix_tls, E2E_TLS=1).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { httpRequest, publishOk, sharedServer, skipFileUnless, startServer, tlsClientOptions, waitUntil } from './lib.mjs';
import { openWs } from './wslib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MINT = path.join(HERE, 'jwt_mint.py');

/* Debian's python3-jwt lives in the system python; a python3 earlier on PATH may lack it. */
function findPython() {
    for (const py of ['python3', '/usr/bin/python3']) {
        try {
            execFileSync(py, ['-c', 'import jwt, cryptography'], { stdio: 'ignore' });
            return py;
        } catch {
            /* next */
        }
    }
    return null;
}
const PY = findPython();
let haveOpenssl = true;
try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
} catch {
    haveOpenssl = false;
}
skipFileUnless((!PY && 'python3-jwt (PyJWT) is not installed (deploy/install-deps.sh --test)') || (!haveOpenssl && 'openssl is not installed'));

const SECRET = 'matrix-secret-0123456789abcdef0123456789';
const ISS = 'https://login.example';
const AUD = 'pushedge';
const now = () => Math.floor(Date.now() / 1000);
const b64 = (s) => Buffer.from(s).toString('base64url');

/* Keys, made by openssl in a temporary directory. */
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-matrix-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const f = (n) => path.join(tmp, n);
function keypair(name, kind) {
    const args = kind === 'ec' ? ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'];
    execFileSync('openssl', ['genpkey', ...args, '-out', f(`${name}.key`)], { stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync('openssl', ['pkey', '-in', f(`${name}.key`), '-pubout', '-out', f(`${name}.pub`)], { stdio: ['ignore', 'ignore', 'pipe'] });
    return { key: f(`${name}.key`), pub: f(`${name}.pub`) };
}
const rsaA = keypair('rsa-a', 'rsa'); /* the PEM --jwt-key: no kid */
const rsaB = keypair('rsa-b', 'rsa'); /* JWKS kid rsa-b */
const ecA = keypair('ec-a', 'ec'); /* JWKS kid ec-a */
const ecX = keypair('ec-x', 'ec'); /* configured nowhere */
const rsaX = keypair('rsa-x', 'rsa'); /* configured nowhere */

/** Runs jwt_mint.py once for a list of jobs; returns its results in order. */
function mintAll(jobs) {
    const out = execFileSync(PY, [MINT], { input: JSON.stringify(jobs), maxBuffer: 16 << 20 });
    return JSON.parse(out.toString('utf8'));
}
const mint = (job) => mintAll([{ kind: 'token', ...job }])[0];
const jwks = (keys) => mintAll([{ kind: 'jwks', keys }])[0];

const JWKS = f('keys.json');
fs.writeFileSync(JWKS, jwks([{ pub: rsaB.pub, kid: 'rsa-b' }, { pub: ecA.pub, kid: 'ec-a', alg: 'ES256' }]));

const claims = (extra = {}) => {
    const c = { sub: 'alice', iss: ISS, aud: AUD, exp: now() + 3600, channels: ['user:{sub}', 'orders.*', 'room:{sub}:inbox', 'team:{sub}:*'], ...extra };
    for (const k of Object.keys(c))
        if (c[k] === undefined)
            delete c[k];
    return c;
};
const hs = (extra, opts = {}) => ({ kind: 'token', alg: 'HS256', secret: SECRET, claims: claims(extra), ...opts });

/* ---- one attempt on one transport -------------------------------------------------------- */

const TRANSPORTS = ['ws', 'sse', 'poll'];
const OK_STATUS = { ws: 101, sse: 200, poll: 200 };

/** The head of a GET whose 200 is a stream that never ends (SSE): the body only of a refusal. */
function streamHead(base, p, headers) {
    const u = new URL(base);
    return new Promise((resolve, reject) => {
        const req = (u.protocol === 'https:' ? https : http).request({ host: u.hostname, port: u.port, path: p, headers, agent: false, ...tlsClientOptions() });
        const timer = setTimeout(() => req.destroy(new Error(`GET ${p.slice(0, 120)}: no answer within 5 s`)), 5000);
        req.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
        });
        req.on('response', (res) => {
            clearTimeout(timer);
            if (res.statusCode === 200) {
                req.destroy();
                resolve({ status: 200, headers: res.headers });
                return;
            }
            const parts = [];
            res.on('data', (c) => parts.push(c));
            res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(parts).toString('utf8') }));
        });
        req.end();
    });
}

/**
 * Subscribes on `transport` to the query `q` (e.g. "channel=user:alice") with the token from
 * `source` (header, cookie, query; none: no token). Resolves to {status, code, text}.
 */
async function attempt(base, transport, q, token, source = 'header') {
    const headers = {};
    if (token !== undefined && source === 'header')
        headers.authorization = `Bearer ${token}`;
    if (token !== undefined && source === 'cookie')
        headers.cookie = `pushedge_token=${token}`;
    if (token !== undefined && source === 'query')
        q += `&token=${token}`;
    let r;
    if (transport === 'ws') {
        try {
            const ws = await openWs(base, `/ws?${q}`, { headers });
            ws.ws.terminate();
            return { status: 101 };
        } catch (e) {
            if (!e.status)
                throw e;
            r = { status: e.status, text: e.body };
        }
    } else if (transport === 'sse') {
        r = await streamHead(base, `/sse?${q}`, headers);
    } else {
        const p = await httpRequest(base, `/poll?${q}&timeout=1`, { headers });
        r = { status: p.status, text: p.text, json: p.json };
    }
    let code;
    try {
        code = JSON.parse(r.text).error.code;
    } catch {
        code = undefined;
    }
    return { status: r.status, code, text: r.text, json: r.json };
}

/**
 * Runs every case on every transport (all at once: a valid long-poll is held a second) and
 * checks each: expect 'ok', or the error code with its status (401 unauthorized/token_expired,
 * 403 forbidden, 400...).
 */
async function runCases(base, cases, transports = TRANSPORTS) {
    const STATUS = { unauthorized: 401, token_expired: 401, forbidden: 403, origin_not_allowed: 403, bad_channel: 400 };
    const runs = [];
    for (const c of cases)
        for (const tr of transports)
            runs.push((async () => ({ c, tr, r: await attempt(base, tr, c.q ?? 'channel=user:alice', c.token, c.source) }))());
    const failures = [];
    for (const { c, tr, r } of await Promise.all(runs)) {
        const want = c.expect === 'ok' ? [OK_STATUS[tr], undefined] : [STATUS[c.expect], c.expect];
        if (r.status !== want[0] || (c.expect !== 'ok' && r.code !== want[1]))
            failures.push(`${tr} ${c.name}: expected ${want[0]} ${want[1] ?? ''}, got ${r.status} ${r.text ? r.text.slice(0, 160) : ''}`);
    }
    assert.deepEqual(failures, [], failures.join('\n'));
}

/* ---- the cases ----------------------------------------------------------------------------- */

describe('token matrix (--auth optional, secret + PEM key + JWKS, iss and aud)', () => {
    const ref = sharedServer(before, after, ['--auth', 'optional', '--jwt-secret', SECRET, '--jwt-key', rsaA.pub, '--jwt-key', JWKS,
        '--jwt-issuer', ISS, '--jwt-audience', AUD, '--public-channel', 'news']);

    it('valid tokens of every algorithm and key source, by header, cookie and query', async () => {
        const jobs = {
            HS256: hs(),
            HS384: hs({}, { alg: 'HS384' }),
            HS512: hs({}, { alg: 'HS512' }),
            'RS256 (PEM, no kid)': { kind: 'token', alg: 'RS256', key: rsaA.key, claims: claims() },
            'PS256 (PEM, no kid)': { kind: 'token', alg: 'PS256', key: rsaA.key, claims: claims() },
            'RS256 (JWKS kid rsa-b)': { kind: 'token', alg: 'RS256', key: rsaB.key, claims: claims(), headers: { kid: 'rsa-b' } },
            'PS256 (JWKS kid rsa-b)': { kind: 'token', alg: 'PS256', key: rsaB.key, claims: claims(), headers: { kid: 'rsa-b' } },
            'ES256 (JWKS kid ec-a)': { kind: 'token', alg: 'ES256', key: ecA.key, claims: claims(), headers: { kid: 'ec-a' } },
            'aud as an array holding ours': hs({ aud: ['other', AUD] }),
        };
        const names = Object.keys(jobs);
        const toks = mintAll(Object.values(jobs));
        const cases = names.map((name, i) => ({ name, token: toks[i], expect: 'ok' }));
        for (const source of ['cookie', 'query'])
            cases.push({ name: `HS256 by ${source}`, token: toks[0], source, expect: 'ok' }, { name: `ES256 by ${source}`, token: toks[7], source, expect: 'ok' });
        await runCases(ref.srv.url, cases);
    });

    it('bad signatures', async () => {
        const good = mint(hs());
        const [h, p, s] = good.split('.');
        /* Flip one bit in the middle of the signature (the last character may hold padding bits). */
        const sig = Buffer.from(s, 'base64url');
        sig[10] ^= 1;
        const toks = mintAll([
            hs({}, { secret: 'another-secret-0123456789abcdef0123456789' }),
            { kind: 'token', alg: 'RS256', key: rsaX.key, claims: claims() },
            { kind: 'token', alg: 'RS256', key: rsaX.key, claims: claims(), headers: { kid: 'rsa-b' } },
            { kind: 'token', alg: 'ES256', key: ecX.key, claims: claims(), headers: { kid: 'ec-a' } },
            { kind: 'token', alg: 'PS256', key: rsaX.key, claims: claims() },
        ]);
        await runCases(ref.srv.url, [
            { name: 'HS256, another secret', token: toks[0], expect: 'unauthorized' },
            { name: 'RS256, a key configured nowhere', token: toks[1], expect: 'unauthorized' },
            { name: 'RS256, another key under kid rsa-b', token: toks[2], expect: 'unauthorized' },
            { name: 'ES256, another key under kid ec-a', token: toks[3], expect: 'unauthorized' },
            { name: 'PS256, a key configured nowhere', token: toks[4], expect: 'unauthorized' },
            { name: 'one bit flipped', token: `${h}.${p}.${b64(sig)}`, expect: 'unauthorized' },
            { name: 'signature cut short', token: `${h}.${p}.${s.slice(0, 20)}`, expect: 'unauthorized' },
            { name: 'signature empty', token: `${h}.${p}.`, expect: 'unauthorized' },
            { name: 'payload of another token', token: `${h}.${b64(JSON.stringify(claims({ channels: ['*'] })))}.${s}`, expect: 'unauthorized' },
        ]);
    });

    it('wrong algorithm: public keys as HMAC secrets, RS256/PS256 swapped, ES256 under an RSA kid, algorithms no key allows', async () => {
        const body = b64(JSON.stringify(claims()));
        const head = (alg, kid) => b64(JSON.stringify({ alg, typ: 'JWT', ...(kid ? { kid } : {}) }));
        const jobs = {
            'RS256 PEM public key as an HS256 secret': { kind: 'token', alg: 'HS256', secret_file: rsaA.pub, claims: claims() },
            'the same, HS512': { kind: 'token', alg: 'HS512', secret_file: rsaA.pub, claims: claims() },
            'JWKS RSA public key (PEM) as an HS256 secret under its kid': { kind: 'token', alg: 'HS256', secret_file: rsaB.pub, claims: claims(), headers: { kid: 'rsa-b' } },
            'EC public key as an HS256 secret under its kid': { kind: 'token', alg: 'HS256', secret_file: ecA.pub, claims: claims(), headers: { kid: 'ec-a' } },
            'the JWKS file as an HS256 secret under kid rsa-b': { kind: 'token', alg: 'HS256', secret_file: JWKS, claims: claims(), headers: { kid: 'rsa-b' } },
            'header RS256, PS256 signature': { kind: 'token', alg: 'PS256', key: rsaA.key, signing_input: `${head('RS256')}.${body}` },
            'header PS256, RS256 signature': { kind: 'token', alg: 'RS256', key: rsaA.key, signing_input: `${head('PS256')}.${body}` },
            'ES256 signature under RSA kid rsa-b': { kind: 'token', alg: 'ES256', key: ecA.key, claims: claims(), headers: { kid: 'rsa-b' } },
            'RS256 signature under EC kid ec-a': { kind: 'token', alg: 'RS256', key: rsaB.key, claims: claims(), headers: { kid: 'ec-a' } },
            'RS512 by the configured RSA key': { kind: 'token', alg: 'RS512', key: rsaA.key, claims: claims() },
            'PS512 by the configured RSA key': { kind: 'token', alg: 'PS512', key: rsaA.key, claims: claims() },
            'ES384-labelled ES256 signature': { kind: 'token', alg: 'ES256', key: ecA.key, signing_input: `${head('ES384', 'ec-a')}.${body}` },
            'HS256 label on an HS512 MAC': { kind: 'token', alg: 'HS512', secret: SECRET, signing_input: `${head('HS256')}.${body}` },
        };
        const toks = mintAll(Object.values(jobs));
        await runCases(ref.srv.url, Object.keys(jobs).map((name, i) => ({ name, token: toks[i], expect: 'unauthorized' })));
    });

    it('alg none, in any spelling and with or without a signature', async () => {
        const toks = mintAll([
            { kind: 'token', alg: 'none', claims: claims() },
            { kind: 'token', alg: 'none', header_alg: 'None', claims: claims() },
            { kind: 'token', alg: 'none', header_alg: 'NONE', claims: claims() },
            { kind: 'token', alg: 'none', header_alg: 'nOnE', claims: claims(), headers: { kid: 'rsa-b' } },
            { kind: 'token', alg: 'none', claims: claims(), signature: 'c2lnbmF0dXJl' },
            { kind: 'token', alg: 'none', header_alg: '', claims: claims() },
        ]);
        await runCases(ref.srv.url, toks.map((token, i) => ({ name: `none #${i}`, token, expect: 'unauthorized' })));
    });

    it('time: expired, nbf in the future, both within the 30 s leeway', async () => {
        /* Minted now: the leeway cases are only seconds away from their limit. */
        const t = now();
        const toks = mintAll([hs({ exp: t - 3600 }), hs({ exp: t - 5 }), hs({ nbf: t + 3600 }), hs({ nbf: t + 10 }), hs({ exp: t - 3600, nbf: t + 3600 }),
            { kind: 'token', alg: 'ES256', key: ecA.key, claims: claims({ exp: t - 3600 }), headers: { kid: 'ec-a' } }]);
        await runCases(ref.srv.url, [
            { name: 'expired an hour ago', token: toks[0], expect: 'token_expired' },
            { name: 'expired 5 s ago (leeway 30 s)', token: toks[1], expect: 'ok' },
            { name: 'nbf in an hour', token: toks[2], expect: 'unauthorized' },
            { name: 'nbf in 10 s (leeway 30 s)', token: toks[3], expect: 'ok' },
            { name: 'expired and not yet valid', token: toks[4], expect: 'unauthorized' },
            { name: 'ES256 expired', token: toks[5], expect: 'token_expired' },
        ]);
    });

    it('issuer and audience', async () => {
        const toks = mintAll([hs({ iss: 'https://evil.example' }), hs({ iss: undefined }), hs({ iss: `${ISS}/` }), hs({ aud: 'other' }),
            hs({ aud: ['a', 'b'] }), hs({ aud: undefined }), hs({ aud: [] }), hs({ iss: [ISS] })]);
        const names = ['wrong iss', 'no iss', 'iss with a trailing slash', 'wrong aud', 'aud array without ours', 'no aud', 'empty aud array', 'iss as an array'];
        await runCases(ref.srv.url, toks.map((token, i) => ({ name: names[i], token, expect: 'unauthorized' })));
    });

    it('malformed: base64, JSON, segments', async () => {
        const header = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
        const json = JSON.stringify(claims());
        const std = Buffer.from(json).toString('base64'); /* + / and = padding: not base64url */
        const impossible = (t) => {
            while (t.length % 4 !== 1)
                t += 'A';
            return t;
        };
        const jobs = {
            'payload in standard base64 with padding': hs({}, { signing_input: `${header}.${std.endsWith('=') ? std : std + '='}` }),
            'payload with a character outside base64url': hs({}, { signing_input: `${header}.${b64(json).slice(0, 10)}*${b64(json).slice(10)}` }),
            'header with a character outside base64url': hs({}, { signing_input: `${header.slice(0, 5)}!${header.slice(5)}.${b64(json)}` }),
            'payload of an impossible length (4n + 1)': hs({}, { signing_input: `${header}.${impossible(b64(json))}` }),
            'payload not JSON': hs({}, { raw_payload: '{"sub": "alice", ' }),
            'payload a JSON array': hs({}, { raw_payload: '["alice"]' }),
            'payload a JSON string': hs({}, { raw_payload: '"alice"' }),
            'payload with a duplicate member': hs({}, { raw_payload: json.replace('{', '{"sub":"mallory",') }),
            'payload with trailing bytes': hs({}, { raw_payload: `${json} x` }),
            'header not JSON': hs({}, { signing_input: `${b64('{"alg":"HS256",')}.${b64(json)}` }),
            'channels not an array': hs({ channels: 'user:{sub}' }),
            'exp not a number': hs({ exp: String(now() + 3600) }),
            'sub not a string': hs({ sub: 42 }),
        };
        const toks = mintAll(Object.values(jobs));
        const good = mint(hs());
        const cases = Object.keys(jobs).map((name, i) => ({ name, token: toks[i], expect: 'unauthorized' }));
        const [h, p, s] = good.split('.');
        cases.push(
            { name: 'two segments', token: `${h}.${p}`, expect: 'unauthorized' },
            { name: 'four segments', token: `${h}.${p}.${s}.${s}`, expect: 'unauthorized' },
            { name: 'one segment', token: p, expect: 'unauthorized' },
            { name: 'empty token (query)', token: '', source: 'query', expect: 'unauthorized' },
            { name: 'bad percent-escape (query)', token: `${h}.${p}.%zz${s}`, source: 'query', expect: 'unauthorized' },
            { name: 'dots only', token: '..', expect: 'unauthorized' },
        );
        await runCases(ref.srv.url, cases);
    });

    it('oversized: past 8 KiB refused by every source, just under accepted', async () => {
        const toks = mintAll([hs({ pad: 'x'.repeat(9000) }), hs({ pad: 'x'.repeat(5600) })]);
        assert.ok(toks[0].length > 8192 && toks[1].length < 8192 && toks[1].length > 7500, `lengths ${toks[0].length} ${toks[1].length}`);
        const cases = [];
        for (const source of ['header', 'cookie', 'query'])
            cases.push({ name: `${toks[0].length} bytes by ${source}`, token: toks[0], source, expect: 'unauthorized' },
                { name: `${toks[1].length} bytes by ${source}`, token: toks[1], source, expect: 'ok' });
        await runCases(ref.srv.url, cases);
    });

    it('unknown kid: the keys without a kid still verify it (docs/auth.md), an unknown key does not', async () => {
        const toks = mintAll([
            { kind: 'token', alg: 'RS256', key: rsaX.key, claims: claims(), headers: { kid: 'no-such-kid' } },
            { kind: 'token', alg: 'ES256', key: ecA.key, claims: claims(), headers: { kid: 'no-such-kid' } },
            { kind: 'token', alg: 'RS256', key: rsaA.key, claims: claims(), headers: { kid: 'no-such-kid' } },
            hs({}, { headers: { kid: 'no-such-kid' } }),
            { kind: 'token', alg: 'ES256', key: ecA.key, claims: claims() },
        ]);
        await runCases(ref.srv.url, [
            { name: 'RS256 by an unknown key, unknown kid', token: toks[0], expect: 'unauthorized' },
            { name: 'ES256 by a JWKS key under an unknown kid (JWKS keys are chosen by kid only)', token: toks[1], expect: 'unauthorized' },
            { name: 'RS256 by the PEM key (no kid), unknown kid', token: toks[2], expect: 'ok' },
            { name: 'HS256, unknown kid', token: toks[3], expect: 'ok' },
            { name: 'ES256 by a JWKS key without its kid', token: toks[4], expect: 'unauthorized' },
        ]);
    });

    it('a channel outside the claims, alone and within a multi-channel subscription and cursor: the same refusal whether it exists or not', async () => {
        const base = ref.srv.url;
        const [alice, admin] = mintAll([hs(), hs({ sub: 'root', channels: ['*'] })]);
        const ghost = `user:ghost-${process.pid}-${Date.now()}`;
        await publishOk(base, 'user:bob', { secret: 'bob' });
        await publishOk(base, 'user:alice', { n: 1 });
        /* A cursor over alice's and bob's channels, as a reader of both gets it. */
        const p = await httpRequest(base, '/poll?channel=user:alice&channel=user:bob&since=0&timeout=1', { headers: { authorization: `Bearer ${admin}` } });
        assert.equal(p.status, 200, p.text);
        const cursor = p.json.cursor;
        assert.match(cursor, /_/, `a multi-channel cursor: ${cursor}`);
        await runCases(base, [
            { name: 'user:bob alone (exists)', q: 'channel=user:bob', token: alice, expect: 'forbidden' },
            { name: 'a channel that never existed', q: `channel=${ghost}`, token: alice, expect: 'forbidden' },
            { name: 'user:bob after user:alice', q: 'channel=user:alice&channel=user:bob', token: alice, expect: 'forbidden' },
            { name: 'user:bob before user:alice, with the cursor', q: `channel=user:bob&channel=user:alice&since=${cursor}`, token: alice, expect: 'forbidden' },
            { name: 'with the cursor', q: `channel=user:alice&channel=user:bob&since=${cursor}`, token: alice, expect: 'forbidden' },
            { name: 'anonymous: user:bob with a public channel', q: 'channel=news&channel=user:bob', token: undefined, expect: 'unauthorized' },
        ]);
        /* Identical answers: a refusal tells nothing about the channel. */
        for (const tr of TRANSPORTS) {
            const a = await attempt(base, tr, 'channel=user:alice&channel=user:bob', alice);
            const b = await attempt(base, tr, `channel=user:alice&channel=${ghost}`, alice);
            const c = await attempt(base, tr, `channel=user:alice&channel=user:bob&since=${cursor}`, alice);
            assert.equal(a.text, b.text, `${tr}: existing and missing channels refused alike`);
            assert.equal(a.text, c.text, `${tr}: with and without a cursor alike`);
        }
        /* A cursor naming bob's channel opens nothing by itself: entries outside the subscription
         * are ignored. */
        await publishOk(base, 'user:bob', { secret: 'bob-2' });
        await publishOk(base, 'user:alice', { n: 2 });
        const own = await httpRequest(base, `/poll?channel=user:alice&since=${cursor}&timeout=1`, { headers: { authorization: `Bearer ${alice}` } });
        assert.equal(own.status, 200, own.text);
        assert.ok(!own.text.includes('bob'), `nothing of bob's: ${own.text}`);
        assert.deepEqual(own.json.messages.map((m) => [m.channel, m.data]), [['user:alice', { n: 2 }]], own.text);
    });

    it('{sub} patterns: bound to the subject; subjects that would widen them get nothing', async () => {
        const [alice, ab, star, dotted] = mintAll([hs(), hs({ sub: 'a:b' }), hs({ sub: '*' }), hs({ sub: 'al.ice' })]);
        const bad = mint(hs({ channels: ['user:{sub}*'] }));
        await runCases(ref.srv.url, [
            { name: 'alice: user:alice', q: 'channel=user:alice', token: alice, expect: 'ok' },
            { name: 'alice: room:alice:inbox', q: 'channel=room:alice:inbox', token: alice, expect: 'ok' },
            { name: 'alice: team:alice:x', q: 'channel=team:alice:x', token: alice, expect: 'ok' },
            { name: 'alice: room:bob:inbox', q: 'channel=room:bob:inbox', token: alice, expect: 'forbidden' },
            { name: 'alice: user:alicex', q: 'channel=user:alicex', token: alice, expect: 'forbidden' },
            { name: 'alice: user:alic', q: 'channel=user:alic', token: alice, expect: 'forbidden' },
            { name: 'a:b: user:a:b (nothing follows {sub})', q: 'channel=user:a:b', token: ab, expect: 'ok' },
            { name: 'a:b: team:a:b:x (would be subject a\'s)', q: 'channel=team:a:b:x', token: ab, expect: 'forbidden' },
            { name: 'a:b: room:a:b:inbox', q: 'channel=room:a:b:inbox', token: ab, expect: 'forbidden' },
            { name: '*: user:x', q: 'channel=user:x', token: star, expect: 'forbidden' },
            { name: '*: team:x:y', q: 'channel=team:x:y', token: star, expect: 'forbidden' },
            { name: 'al.ice: user:al.ice', q: 'channel=user:al.ice', token: dotted, expect: 'ok' },
            { name: 'a pattern user:{sub}* makes the token invalid', q: 'channel=user:alice', token: bad, expect: 'unauthorized' },
        ]);
    });
});

describe('key rotation by kid with SIGHUP', () => {
    it('a new kid verifies after the reload, the retired one no longer does, on every transport', async (t) => {
        const file = f('rotating.json');
        fs.writeFileSync(file, jwks([{ pub: rsaA.pub, kid: 'k1' }]));
        const srv = await startServer(['--auth', 'required', '--jwt-key', file]);
        t.after(() => srv.stop());
        const c = (extra) => ({ sub: 'a', exp: now() + 3600, channels: ['*'], ...extra });
        const [t1, t2, t2ec] = mintAll([
            { kind: 'token', alg: 'RS256', key: rsaA.key, claims: c(), headers: { kid: 'k1' } },
            { kind: 'token', alg: 'PS256', key: rsaB.key, claims: c(), headers: { kid: 'k2' } },
            { kind: 'token', alg: 'ES256', key: ecA.key, claims: c(), headers: { kid: 'k3' } },
        ]);
        const reloads = () => srv.output().stderr.split('JWT keys reloaded').length - 1;
        const reload = async (keys) => {
            const n = reloads();
            fs.writeFileSync(file, jwks(keys));
            process.kill(srv.pid, 'SIGHUP');
            await waitUntil(() => reloads() > n, { what: 'the reload log line' });
        };
        const q = 'channel=anything';
        await runCases(srv.url, [
            { name: 'k1 before', q, token: t1, expect: 'ok' },
            { name: 'k2 before it is published', q, token: t2, expect: 'unauthorized' },
        ]);
        await reload([{ pub: rsaA.pub, kid: 'k1' }, { pub: rsaB.pub, kid: 'k2' }, { pub: ecA.pub, kid: 'k3' }]);
        await runCases(srv.url, [
            { name: 'k1 during the overlap', q, token: t1, expect: 'ok' },
            { name: 'k2 during the overlap', q, token: t2, expect: 'ok' },
            { name: 'k3 (EC) during the overlap', q, token: t2ec, expect: 'ok' },
        ]);
        await reload([{ pub: rsaB.pub, kid: 'k2' }]);
        await runCases(srv.url, [
            { name: 'k1 retired', q, token: t1, expect: 'unauthorized' },
            { name: 'k3 retired', q, token: t2ec, expect: 'unauthorized' },
            { name: 'k2 after', q, token: t2, expect: 'ok' },
        ]);
        /* The same kid on a new key: the old key's tokens stop, the new key's start. */
        await reload([{ pub: rsaX.pub, kid: 'k2' }]);
        const t2x = mint({ alg: 'PS256', key: rsaX.key, claims: c(), headers: { kid: 'k2' } });
        await runCases(srv.url, [
            { name: 'k2 old key', q, token: t2, expect: 'unauthorized' },
            { name: 'k2 new key', q, token: t2x, expect: 'ok' },
        ]);
    });
});

describe('the token query never reaches the log', () => {
    for (const format of ['text', 'json']) {
        it(`--log-format ${format} --log-level debug: accepted and refused requests of every transport`, async (t) => {
            const srv = await startServer(['--auth', 'optional', '--jwt-secret', SECRET, '--public-channel', 'news', '--allowed-origin', 'https://app.example',
                '--log-level', 'debug', '--log-format', format]);
            t.after(() => srv.stop());
            const base = srv.url;
            const [ok, forbidden, expired] = mintAll([hs({ iss: undefined, aud: undefined }), hs({ iss: undefined, aud: undefined, channels: ['x'] }),
                hs({ iss: undefined, aud: undefined, exp: now() - 3600 })]);
            const bad = mint(hs({}, { secret: 'another-secret-0123456789abcdef0123456789' }));
            const secrets = [ok, forbidden, expired, bad].flatMap((tok) => tok.split('.').slice(1));
            for (const tr of TRANSPORTS) {
                await attempt(base, tr, 'channel=user:alice', ok, 'query');
                await attempt(base, tr, 'channel=user:alice', forbidden, 'query');
                await attempt(base, tr, 'channel=user:alice', expired, 'query');
                await attempt(base, tr, 'channel=user:alice', bad, 'query');
                await attempt(base, tr, 'channel=bad%20channel', ok, 'query'); /* 400 */
                await attempt(base, tr, `channel=user:alice&t%6Fken=${bad}&x=1`, undefined); /* the name escaped */
            }
            /* Refusals on other paths and for other reasons. */
            await httpRequest(base, `/nope?token=${ok}`);
            await httpRequest(base, `/sse?channel=news&token=${bad}`, { headers: { origin: 'https://evil.example' } });
            await httpRequest(base, `/api/publish?channel=news&token=${ok}`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
            const out = srv.output().stderr;
            /* The debug log did see these requests (so the check below means something). */
            assert.match(out, /refused/);
            for (const s of secrets)
                assert.ok(!out.includes(s), `a token part is in the log: ...${s.slice(0, 16)}...`);
            assert.ok(!/token=/.test(out), 'no token= parameter in the log');
        });
    }
});
