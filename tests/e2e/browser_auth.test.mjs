/*
 * The JS client's authentication in real headless Chromium (Debian's, driven by
 * playwright-core, as browser.test.mjs) against a real pushedge with --auth required; tokens
 * minted by the test with node's crypto (HS256).
 *
 * Covered: (1) cookie auth: the page's origin holds a `pushedge_token` cookie and the client
 * (tokenVia 'cookie') sends no token itself: the browser's own WebSocket handshake and fetch
 * carry it (same origin, so the cross-site WebSocket check lets it through); every message
 * once, in order, on WebSocket and on SSE; a cookie that does not verify raises `auth`.
 * (2) getToken(): the page asks the test (standing in for the app's login service) for 4 s
 * tokens, renewed every 2 s while messages are published; every message once, in order, on
 * WebSocket (the in-band auth op, then refreshes) and on SSE (the Authorization header, a new
 * request per token).
 *
 * Skipped as a whole when /usr/bin/chromium is missing or does not run.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { delay, publishOk, skipFileUnless, startServer, uniqueChannel, waitUntil } from './lib.mjs';
import { haveChromium } from './proxies.mjs';

const CHROMIUM = '/usr/bin/chromium';
skipFileUnless(!haveChromium() && `${CHROMIUM} is not installed or does not run (--version failed)`);
const { chromium } = await import('playwright-core');

const SECRET = 'browser-auth-secret-0123456789abcdef01';
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);
function mint(claims, key = SECRET) {
    const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
    return `${input}.${crypto.createHmac('sha256', key).update(input).digest('base64url')}`;
}
const alice = (ttl = 600, key = SECRET) => mint({ sub: 'alice', exp: now() + ttl, channels: ['user:{sub}', 'room.*'] }, key);

const CLIENT_OPTIONS = { connectTimeout: 5000, probeTimeout: 3000, heartbeatTimeout: 8000, reprobeInterval: 600000, backoffBase: 200, backoffCap: 2000 };

/** A fresh Chromium profile; closed by the returned close(). */
async function launch() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-chromium-auth-'));
    const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'];
    const ctx = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args });
    return {
        ctx,
        async close() {
            await ctx.close().catch(() => {});
            fs.rmSync(dir, { recursive: true, force: true });
        },
    };
}

/**
 * Opens the server's /healthz in ctx, imports /pushedge.js there and subscribes to channel with
 * `options` (plus, with withGetToken, a getToken() that calls the test's mintToken()).
 */
async function openClient(ctx, origin, channel, options, { withGetToken = false } = {}) {
    const page = await ctx.newPage();
    const log = [];
    page.on('console', (m) => log.push(m.text()));
    page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
    await page.goto(`${origin}/healthz`);
    await page.evaluate(async ({ options, channel, withGetToken }) => {
        const { PushEdge } = await import('/pushedge.js');
        window.got = [];
        window.states = [];
        window.auths = [];
        window.tokenCalls = 0;
        if (withGetToken)
            options.getToken = async () => {
                window.tokenCalls++;
                return window.mintToken();
            };
        const client = new PushEdge(location.origin, options);
        client.on('state', (s) => window.states.push(s.state + (s.transport ? ':' + s.transport : '') + (s.reason ? `(${s.reason})` : '')));
        client.on('auth', (a) => window.auths.push(a));
        client.subscribe(channel, (m) => window.got.push(m.id), {});
        window.client = client;
    }, { options: { ...CLIENT_OPTIONS, ...options }, channel, withGetToken });
    const c = {
        page,
        log,
        got: () => page.evaluate(() => window.got),
        transport: () => page.evaluate(() => window.client.transport),
        states: () => page.evaluate(() => window.states),
        auths: () => page.evaluate(() => window.auths),
        tokenCalls: () => page.evaluate(() => window.tokenCalls),
    };
    return c;
}

async function waitTransport(c, want) {
    await waitUntil(async () => (await c.transport()) === want, { timeoutMs: 20000, intervalMs: 100, what: `transport ${want}` }).catch(async (e) => {
        throw new Error(`${e.message}; states ${(await c.states()).join(' ')}; console ${c.log.join(' | ')}`);
    });
}

/** Every id once, in order, then a sentinel last (a duplicate would have come before it). */
async function expectExactly(c, ids, what, base, channel) {
    await waitUntil(async () => (await c.got()).length >= ids.length, { timeoutMs: 20000, intervalMs: 100, what }).catch(async () => {
        throw new Error(`${what}: ${(await c.got()).length} of ${ids.length}; states ${(await c.states()).join(' ')}; console ${c.log.join(' | ')}`);
    });
    const sentinel = await publishOk(base, channel, { n: 0 });
    await waitUntil(async () => (await c.got()).includes(sentinel), { timeoutMs: 20000, intervalMs: 100, what: `${what}: the sentinel` });
    assert.deepEqual(await c.got(), [...ids, sentinel], `${what}: every message once, in order`);
}

describe('browser: the JS client with --auth required', () => {
    let srv;
    before(async () => {
        srv = await startServer(['--auth', 'required', '--jwt-secret', SECRET, '--ping-interval', '2']);
    });
    after(async () => {
        if (srv) {
            const r = await srv.stop();
            assert.equal(r.code, 0, `server exit ${r.code}: ${r.stderr.slice(-2000)}`);
        }
    });

    it('cookie auth: the pushedge_token cookie alone, on WebSocket and on SSE; a bad cookie raises auth', { timeout: 90000 }, async (t) => {
        const b = await launch();
        t.after(() => b.close());
        await b.ctx.addCookies([{ name: 'pushedge_token', value: alice(), url: srv.url }]);
        for (const tr of ['websocket', 'sse']) {
            const ch = uniqueChannel('room.cookie');
            const c = await openClient(b.ctx, srv.url, ch, { tokenVia: 'cookie', transports: [tr] });
            await waitTransport(c, tr);
            const ids = [];
            for (let n = 1; n <= 20; n++)
                ids.push(await publishOk(srv.url, ch, { n }));
            await expectExactly(c, ids, `cookie on ${tr}`, srv.url, ch);
            assert.deepEqual(await c.auths(), []);
            await c.page.close();
        }
        await b.ctx.clearCookies();
        await b.ctx.addCookies([{ name: 'pushedge_token', value: alice(600, 'not-the-server-secret-0123456789abcdef'), url: srv.url }]);
        const bad = await openClient(b.ctx, srv.url, 'user:alice', { tokenVia: 'cookie' });
        await waitUntil(async () => (await bad.auths()).length > 0, { timeoutMs: 20000, intervalMs: 100, what: 'the auth event' });
        const [a] = await bad.auths();
        assert.equal(a.code, 'unauthorized', JSON.stringify(a));
        t.diagnostic(`bad cookie: ${(await bad.states()).join(' ')}`);
        await bad.page.close();
    });

    it('getToken(): 4 s tokens renewed every 2 s while messages flow, on WebSocket and on SSE', { timeout: 90000 }, async (t) => {
        const b = await launch();
        t.after(() => b.close());
        /* The app's login service, as far as the page can tell. */
        await b.ctx.exposeFunction('mintToken', () => alice(4));
        for (const tr of ['websocket', 'sse']) {
            const ch = uniqueChannel('room.gettoken');
            const c = await openClient(b.ctx, srv.url, ch, { transports: [tr], refreshMargin: 2000 }, { withGetToken: true });
            await waitTransport(c, tr);
            const ids = [];
            const t0 = Date.now();
            for (let n = 1; Date.now() - t0 < 7000; n++) {
                ids.push(await publishOk(srv.url, ch, { n }));
                await delay(50);
            }
            await expectExactly(c, ids, `getToken on ${tr}`, srv.url, ch);
            const calls = await c.tokenCalls();
            assert.ok(calls >= 3, `${tr}: renewed again and again (${calls} calls)`);
            assert.deepEqual(await c.auths(), []);
            t.diagnostic(`${tr}: ${ids.length} messages, ${calls} tokens; ${(await c.states()).join(' ')}`);
            await c.page.close();
        }
    });
});
