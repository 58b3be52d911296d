/*
 * The JS client in real headless Chromium (Debian's, driven by playwright-core) against a real
 * pushedge, through real hostile proxies (tests/e2e/proxies.mjs).
 *
 * Each case loads a page of the server's origin (through the proxy when there is one), imports
 * /pushedge.js there, subscribes to a fresh channel from '0', and the test publishes straight to
 * pushedge while the client connects, falls back or reconnects. The page must receive every
 * published message exactly once and in order; the case checks (or, where either answer is
 * right, reports) the transport the client ended on.
 *
 * Covered: (a) upgrades refused by haproxy (403) -> sse; ws:// blocked by squid and tinyproxy
 * (forward proxies, no CONNECT) -> sse with heartbeats keeping the idle-killing proxy happy;
 * (b) a proxy that accepts the upgrade and then forwards nothing -> sse; (c) nginx buffering
 * responses -> poll; (d) haproxy ending every connection idle for 3 s, with publishing paused
 * for longer than that again and again; (e) pushedge killed and restarted mid-stream (Redis
 * engine: node A serves the page, node B takes the publishes); (f) a client that remembered
 * 'sse' re-probes WebSocket in the background and switches without loss; the demo page at /.
 *
 * Skipped as a whole when /usr/bin/chromium is missing or does not run (tests/run.sh installs
 * it); a proxy that is not installed skips its case. With CI=true each of these fails instead.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { delay, publishOk, skipFileUnless, skipOrFail, startServer, unavailable, uniqueChannel, waitUntil } from './lib.mjs';
import { ProxyMissing, blackHole, haproxy, haveChromium, nginxBuffering, squid, tinyproxy } from './proxies.mjs';

const CHROMIUM = '/usr/bin/chromium';
skipFileUnless(!haveChromium() && `${CHROMIUM} is not installed or does not run (--version failed)`);
const { chromium } = await import('playwright-core');

/* Deadlines short enough for a test, long enough for a loaded 2-core machine. */
const CLIENT_OPTIONS = {
    connectTimeout: 5000,
    probeTimeout: 3000,
    heartbeatTimeout: 8000,
    reprobeInterval: 600000,
    backoffBase: 200,
    backoffCap: 2000,
};

const browsers = new Set();

/** A fresh Chromium (its own profile); proxy: a forward proxy URL for every request. */
async function launch(proxy) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-chromium-'));
    const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1'];
    /* <-loopback>: without it Chromium never sends loopback requests through a proxy. */
    if (proxy)
        args.push(`--proxy-server=${proxy}`, '--proxy-bypass-list=<-loopback>');
    const ctx = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args });
    const handle = {
        ctx,
        async close() {
            browsers.delete(handle);
            await ctx.close().catch(() => {});
            fs.rmSync(dir, { recursive: true, force: true });
        },
    };
    browsers.add(handle);
    return handle;
}

/**
 * Opens origin's /healthz (any page of the origin will do), imports the client there and
 * subscribes to channel from '0'. The page records every message, state and transport change.
 */
async function openClient(ctx, origin, channel, options = {}, { seedStorage = null } = {}) {
    const page = await ctx.newPage();
    const log = [];
    page.on('console', (m) => log.push(m.text()));
    page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
    await page.goto(`${origin}/healthz`);
    await page.evaluate(async ({ options, channel, seedStorage }) => {
        if (seedStorage)
            for (const [k, v] of Object.entries(seedStorage))
                localStorage.setItem(k, v);
        const { PushEdge } = await import('/pushedge.js');
        window.got = [];
        window.states = [];
        window.switches = [];
        window.gaps = [];
        window.t0 = Date.now();
        const client = new PushEdge(location.origin, options);
        client.on('state', (s) => window.states.push({ ...s, at: Date.now() }));
        client.on('transport', (s) => window.switches.push(s));
        client.on('gap', (g) => window.gaps.push(g));
        client.subscribe(channel, (m) => window.got.push({ id: m.id, n: m.data.n }), { since: '0' });
        window.client = client;
    }, { options: { ...CLIENT_OPTIONS, ...options }, channel, seedStorage });
    return {
        page,
        log,
        got: () => page.evaluate(() => window.got),
        transport: () => page.evaluate(() => window.client.transport),
        states: () => page.evaluate(() => window.states),
        switches: () => page.evaluate(() => window.switches),
        gaps: () => page.evaluate(() => window.gaps),
        t0: () => page.evaluate(() => window.t0),
        async waitTransport(want, timeoutMs = 20000) {
            await waitUntil(async () => (await this.transport()) === want, { timeoutMs, intervalMs: 100, what: `transport ${want}` });
        },
    };
}

/**
 * Publishes count messages {n} to channel on base, in bursts of `burst` separated by `pauseMs`
 * (longer than a proxy's idle timeout where that matters); returns the IDs in order.
 */
async function publishPaced(base, channel, count, { burst = 5, pauseMs = 200, first = 1, onEach = null } = {}) {
    const ids = [];
    for (let i = 0; i < count; i++) {
        if (i && i % burst === 0)
            await delay(pauseMs);
        const n = first + i;
        if (onEach)
            await onEach(n);
        ids.push(await publishOk(base, channel, { n }));
    }
    return ids;
}

/**
 * Waits until the page has every ID, then publishes a sentinel on the channel (through base)
 * and waits for it: anything extra (a duplicate) would have arrived before it. Then checks:
 * exactly those IDs, once each, in order, and the sentinel last.
 */
async function expectExactly(client, ids, what, { base, channel, timeoutMs = 30000 }) {
    try {
        await waitUntil(async () => (await client.got()).length >= ids.length, { timeoutMs, intervalMs: 100, what });
    } catch (e) {
        const got = await client.got();
        throw new Error(`${what}: ${got.length} of ${ids.length} messages arrived; states ${JSON.stringify(await client.states())}; console ${client.log.join(' | ')}`);
    }
    const sentinel = await publishOk(base, channel, { n: 0 });
    await waitUntil(async () => (await client.got()).some((m) => m.id === sentinel), { timeoutMs, intervalMs: 100, what: `${what}: the sentinel` });
    const got = await client.got();
    assert.deepEqual(got.map((m) => m.id), [...ids, sentinel], `${what}: every message exactly once, in order, then the sentinel`);
}

/** Reports where the client ended and how long it took to get there (for docs/client.md). */
async function report(t, c) {
    const states = await c.states();
    const t0 = await c.t0();
    const final = await c.transport();
    const first = states.find((s) => s.state === 'connected');
    const settled = states.find((s) => s.state === 'connected' && s.transport === final);
    const trail = states.map((s) => s.state + (s.transport ? ':' + s.transport : '') + (s.reason ? `(${s.reason})` : '')).join(' ');
    t.diagnostic(`ended on ${final}; first connected after ${first ? first.at - t0 : '-'} ms, on ${final} after ${settled ? settled.at - t0 : '-'} ms; ${trail}`);
}

/** Starts a proxy (stopped after the test); null, with the test skipped, when not installed. */
async function proxyOrSkip(t, start) {
    try {
        const proxy = await start();
        t.after(() => proxy.stop());
        return proxy;
    } catch (e) {
        if (!(e instanceof ProxyMissing))
            throw e;
        skipOrFail(t, e.message);
        return null;
    }
}

/**
 * A server with the default 25 s heartbeat (only the client can keep a stream busy) behind
 * haproxy ending connections idle for 3 s; proxy is null (the test skipped) without haproxy.
 */
async function behindIdleCut(t) {
    const quiet = await startServer([]);
    t.after(() => quiet.stop());
    return { quiet, proxy: await proxyOrSkip(t, () => haproxy(quiet.port, { idleS: 3 })) };
}

describe('browser: the JS client in Chromium', () => {
    let srv, browser;
    before(async () => {
        srv = await startServer(['--ping-interval', '2']);
        browser = await launch(null);
    });
    after(async () => {
        for (const b of [...browsers])
            await b.close();
        if (srv) {
            const r = await srv.stop();
            assert.equal(r.code, 0, `server exit ${r.code}: ${r.stderr.slice(-2000)}`);
        }
    });

    it('direct: WebSocket, every message once, in order', { timeout: 60000 }, async (t) => {
        const ch = uniqueChannel('direct');
        const c = await openClient(browser.ctx, srv.url, ch);
        await c.waitTransport('websocket');
        const ids = await publishPaced(srv.url, ch, 30);
        await expectExactly(c, ids, 'direct', { base: srv.url, channel: ch });
        await report(t, c);
        await c.page.close();
    });

    it('(a) haproxy refuses the upgrade (403): SSE, every message once', { timeout: 60000 }, async (t) => {
        const proxy = await proxyOrSkip(t, () => haproxy(srv.port, { denyWs: true, idleS: 30 }));
        if (!proxy)
            return;
        const ch = uniqueChannel('denyws');
        const c = await openClient(browser.ctx, proxy.url, ch);
        await c.waitTransport('sse');
        const ids = await publishPaced(srv.url, ch, 30);
        await expectExactly(c, ids, 'haproxy deny upgrade', { base: srv.url, channel: ch });
        assert.equal(await c.transport(), 'sse');
        await report(t, c);
        await c.page.close();
    });

    for (const [name, start] of [['squid', squid], ['tinyproxy', tinyproxy]]) {
        it(`(a) ${name} as a forward proxy (no CONNECT, idle cut at 5 s): SSE kept alive by heartbeats`, { timeout: 60000 }, async (t) => {
            const proxy = await proxyOrSkip(t, () => start({ idleS: 5 }));
            if (!proxy)
                return;
            const b = await launch(proxy.url);
            t.after(() => b.close());
            const ch = uniqueChannel(name);
            const c = await openClient(b.ctx, srv.url, ch);
            await c.waitTransport('sse', 30000);
            /* Pauses longer than the proxy's idle cut: the 2 s heartbeats keep the stream. */
            const ids = await publishPaced(srv.url, ch, 20, { burst: 5, pauseMs: 6000 });
            await expectExactly(c, ids, name, { base: srv.url, channel: ch });
            await report(t, c);
        });
    }

    it('(b) a proxy that accepts the upgrade and forwards nothing: falls back to SSE', { timeout: 60000 }, async (t) => {
        const proxy = await blackHole(srv.port);
        t.after(() => proxy.stop());
        const ch = uniqueChannel('blackhole');
        const c = await openClient(browser.ctx, proxy.url, ch);
        /* Published while the client is still finding its way: resumed from '0', nothing lost. */
        const early = await publishPaced(srv.url, ch, 5);
        await c.waitTransport('sse');
        const ids = [...early, ...(await publishPaced(srv.url, ch, 25, { first: 6 }))];
        await expectExactly(c, ids, 'black hole', { base: srv.url, channel: ch });
        await report(t, c);
        const sw = await c.switches();
        assert.ok(sw.some((s) => s.from === 'websocket' && s.reason === 'ws_silent'), `a ws_silent fallback: ${JSON.stringify(sw)}`);
        await c.page.close();
    });

    it('(c) nginx buffering every response: SSE never starts, long-polling delivers', { timeout: 90000 }, async (t) => {
        const proxy = await proxyOrSkip(t, () => nginxBuffering(srv.port, { idleS: 60 }));
        if (!proxy)
            return;
        const ch = uniqueChannel('buffering');
        const c = await openClient(browser.ctx, proxy.url, ch);
        const early = await publishPaced(srv.url, ch, 5);
        await c.waitTransport('poll', 40000);
        const ids = [...early, ...(await publishPaced(srv.url, ch, 25, { first: 6 }))];
        await expectExactly(c, ids, 'nginx buffering', { base: srv.url, channel: ch });
        await report(t, c);
        assert.equal(await c.transport(), 'poll');
        await c.page.close();
    });

    it('(d) haproxy ending every connection idle for 3 s, publishing paused for 4 s again and again', { timeout: 90000 }, async (t) => {
        const { quiet, proxy } = await behindIdleCut(t);
        if (!proxy)
            return;
        const ch = uniqueChannel('idlecut');
        const c = await openClient(browser.ctx, proxy.url, ch, { pingInterval: 20000 });
        await c.waitTransport('websocket');
        const ids = await publishPaced(quiet.url, ch, 30, { burst: 5, pauseMs: 4000 });
        await expectExactly(c, ids, 'idle cuts', { base: quiet.url, channel: ch });
        await report(t, c);
        await c.page.close();
    });

    it('(d) SSE alone through the same idle cuts: cut again and again at 3 s, so it falls back to long-polling', { timeout: 90000 }, async (t) => {
        const { quiet, proxy } = await behindIdleCut(t);
        if (!proxy)
            return;
        const ch = uniqueChannel('ssecut');
        const c = await openClient(browser.ctx, proxy.url, ch, { transports: ['sse', 'poll'] });
        await c.waitTransport('sse');
        const ids = await publishPaced(quiet.url, ch, 25, { burst: 5, pauseMs: 4000 });
        await expectExactly(c, ids, 'sse idle cuts', { base: quiet.url, channel: ch });
        await report(t, c);
        assert.equal(await c.transport(), 'poll', `states ${JSON.stringify(await c.states())}`);
        assert.ok((await c.switches()).some((s) => s.from === 'sse' && s.to === 'poll'), 'demoted from sse to poll');
        await c.page.close();
    });

    it('(f) a client that remembered SSE re-probes WebSocket in the background and switches without loss', { timeout: 60000 }, async (t) => {
        const ch = uniqueChannel('reprobe');
        const seed = { [`pushedge.transport:${srv.url}`]: JSON.stringify({ transport: 'sse', until: Date.now() + 3600000 }) };
        const c = await openClient(browser.ctx, srv.url, ch, { reprobeInterval: 2000 }, { seedStorage: seed });
        await waitUntil(async () => (await c.states()).some((s) => s.state === 'connected'), { timeoutMs: 10000, what: 'connected' });
        assert.equal((await c.states()).find((s) => s.state === 'connected').transport, 'sse', 'started on the remembered transport');
        /* Messages flow across the switch. */
        const ids = await publishPaced(srv.url, ch, 60, { burst: 3, pauseMs: 100 });
        await c.waitTransport('websocket', 20000);
        ids.push(...(await publishPaced(srv.url, ch, 10, { first: 61 })));
        await expectExactly(c, ids, 're-probe switch', { base: srv.url, channel: ch });
        await report(t, c);
        assert.ok((await c.switches()).some((s) => s.from === 'sse' && s.to === 'websocket'), 'switched from sse to websocket');
        const remembered = await c.page.evaluate((k) => localStorage.getItem(k), `pushedge.transport:${srv.url}`);
        assert.equal(remembered, null, 'WebSocket works again: the fallback is forgotten');
        await c.page.close();
    });

    it("Chromium's own EventSource reads /sse (HTTP/1.1, the stream owns its socket): events, lastEventId, resume from lastEventId", { timeout: 30000 }, async () => {
        const ch = uniqueChannel('native');
        const page = await browser.ctx.newPage();
        await page.goto(`${srv.url}/healthz`);
        await page.evaluate((ch) => {
            window.ev = [];
            const es = new EventSource(`/sse?channel=${ch}&since=0`);
            es.onmessage = (e) => window.ev.push({ id: e.lastEventId, n: JSON.parse(e.data).data.n });
            window.es = es;
        }, ch);
        const ids = await publishPaced(srv.url, ch, 3);
        await waitUntil(async () => (await page.evaluate(() => window.ev.length)) >= 3, { timeoutMs: 10000, what: 'native events' });
        /* Resume on a new EventSource from the last lastEventId. */
        await page.evaluate(() => window.es.close());
        await page.evaluate((ch) => {
            const es = new EventSource(`/sse?channel=${ch}&since=${window.ev.at(-1).id}`);
            es.onmessage = (e) => window.ev.push({ id: e.lastEventId, n: JSON.parse(e.data).data.n });
        }, ch);
        ids.push(await publishOk(srv.url, ch, { n: 4 }));
        await waitUntil(async () => (await page.evaluate(() => window.ev.length)) >= 4, { timeoutMs: 10000, what: 'the event after resuming' });
        assert.deepEqual((await page.evaluate(() => window.ev)).map((e) => e.id), ids);
        await page.close();
    });

    it('the demo page at /: shows the live transport and cursor, publishes from its form, receives it', { timeout: 60000 }, async () => {
        const page = await browser.ctx.newPage();
        const errors = [];
        page.on('pageerror', (e) => errors.push(e.message));
        await page.goto(`${srv.url}/`);
        const ch = uniqueChannel('demo');
        await page.fill('#channels', ch);
        await page.click('#sub button');
        await waitUntil(async () => (await page.textContent('#transport')).trim() === 'websocket', { timeoutMs: 15000, what: 'demo transport' });
        await page.fill('#pubchannel', ch);
        await page.fill('#payload', '{"text":"from the demo"}');
        await page.click('#pub button');
        await waitUntil(async () => (await page.textContent('#log')).includes('from the demo'), { timeoutMs: 10000, what: 'the published message in the log' });
        const cursor = (await page.textContent('#cursor')).trim();
        assert.match(cursor, /^\d+-\d+$/, 'the cursor of a one-channel subscription is the last ID');
        assert.ok(await page.$('#chart'), 'a live chart');
        assert.deepEqual(errors, []);
        await page.close();
    });
});

describe('browser: pushedge restarted mid-stream', { skip: unavailable(!process.env.PUSHEDGE_TEST_REDIS_URL && 'needs PUSHEDGE_TEST_REDIS_URL (tests/run.sh starts a Redis)') }, () => {
    it('(e) node A killed and restarted on its port while node B takes publishes: every message once, in order', { timeout: 90000 }, async (t) => {
        const redis = ['--redis', process.env.PUSHEDGE_TEST_REDIS_URL, '--ping-interval', '2'];
        let a = await startServer(redis);
        const b = await startServer(redis);
        t.after(() => b.stop());
        const port = a.port;
        const browser = await launch(null);
        t.after(() => browser.close());
        const ch = uniqueChannel('restart');
        const c = await openClient(browser.ctx, a.url, ch);
        await c.waitTransport('websocket');
        const ids = await publishPaced(b.url, ch, 40, {
            burst: 2,
            pauseMs: 100,
            onEach: async (n) => {
                if (n === 15) {
                    await a.stop('SIGKILL');
                } else if (n === 25) {
                    a = await startServer(['--listen', `127.0.0.1:${port}`, ...redis], {}, { listen: false, port });
                }
            },
        });
        t.after(() => a.stop());
        await expectExactly(c, ids, 'restart', { base: b.url, channel: ch, timeoutMs: 40000 });
        assert.ok((await c.states()).some((s) => s.state === 'disconnected'), 'the client saw the restart');
        await report(t, c);
    });
});
