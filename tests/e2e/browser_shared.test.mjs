/*
 * The JS client's shared connection (option `shared`, docs/client.md "One connection for all
 * tabs") in real headless Chromium (Debian's, driven by playwright-core, as browser.test.mjs)
 * against a real pushedge on the memory engine.
 *
 * Covered: four pages of one origin with shared: true subscribed to one channel make exactly one
 * WebSocket connection on the server (pushedge_connections{transport="ws"} in /metrics); a page
 * without the option keeps its own. Messages are published while the leader page goes away twice
 * (4 -> 3 -> 2 pages): first closed (page.close()), then crashed (its renderer killed through the
 * DevTools protocol's Page.crash: no unload, no goodbye); each time a new leader's connection is
 * live within TAKEOVER_BOUND_MS and the server is back to one connection; the two pages left get every message exactly once and in
 * order, and the pages closed had, until their close, an in-order prefix without duplicates. The
 * takeover times (page closed or crashed -> the new connection's `connected`) are printed as diagnostics
 * (docs/benchmarks.md "Shared connection across tabs").
 *
 * Not covered: several origins, auth (browser_auth.test.mjs covers the hub's
 * token handling, which is the unshared client's).
 *
 * Skipped as a whole when /usr/bin/chromium is missing or does not run.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connectionsGauge, delay, publishOk, skipFileUnless, startServer, uniqueChannel, waitUntil } from './lib.mjs';
import { haveChromium } from './proxies.mjs';

const CHROMIUM = '/usr/bin/chromium';
skipFileUnless(!haveChromium() && `${CHROMIUM} is not installed or does not run (--version failed)`);
const { chromium } = await import('playwright-core');

const CLIENT_OPTIONS = { connectTimeout: 5000, probeTimeout: 3000, heartbeatTimeout: 8000, reprobeInterval: 600000, backoffBase: 200, backoffCap: 2000 };
/* Page closed -> the new leader connected: the lock is freed at once, the gather window is
 * 150 ms, a loopback WebSocket opens in milliseconds; the rest is slack for a loaded 2-core box. */
const TAKEOVER_BOUND_MS = 3000;
const PAGES = 4;

async function launch() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-chromium-shared-'));
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

/* A page of the server's origin with a client subscribed to channel (new messages only). */
async function openClient(ctx, origin, channel, options) {
    const page = await ctx.newPage();
    const log = [];
    page.on('console', (m) => log.push(m.text()));
    page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
    await page.goto(`${origin}/healthz`);
    await page.evaluate(async ({ options, channel }) => {
        const { PushEdge } = await import('/pushedge.js');
        window.got = [];
        window.states = [];
        const client = new PushEdge(location.origin, options);
        client.on('state', (s) => window.states.push({ state: s.state, transport: s.transport, at: Date.now() }));
        client.subscribe(channel, (m) => window.got.push(m.id));
        window.client = client;
    }, { options: { ...CLIENT_OPTIONS, ...options }, channel });
    return {
        page,
        log,
        got: () => page.evaluate(() => window.got),
        states: () => page.evaluate(() => window.states),
        transport: () => page.evaluate(() => window.client.transport),
        role: () => page.evaluate(() => window.client.shared),
    };
}

async function gaugeIs(base, n, what) {
    await waitUntil(async () => (await connectionsGauge(base, 'ws')) === n, { timeoutMs: 10000, intervalMs: 50, what });
    assert.equal(await connectionsGauge(base, 'sse'), 0, `${what}: no SSE`);
    assert.equal(await connectionsGauge(base, 'poll'), 0, `${what}: no long-poll`);
}

function assertPrefix(got, ids, what) {
    assert.deepEqual(got, ids.slice(0, got.length), `${what}: an in-order prefix of what was published, no duplicate`);
}

describe('browser: shared: true, one connection for the tabs of an origin', () => {
    let srv;
    before(async () => {
        srv = await startServer([]);
    });
    after(async () => {
        if (srv) {
            const r = await srv.stop();
            assert.equal(r.code, 0, `server exit ${r.code}: ${r.stderr.slice(-2000)}`);
        }
    });

    it(`${PAGES} pages, one connection; the leader closed, then crashed, mid-stream: no page misses or repeats a message`, { timeout: 120000 }, async (t) => {
        const b = await launch();
        t.after(() => b.close());
        const ch = uniqueChannel('shared');
        const pages = [];
        for (let i = 0; i < PAGES; i++)
            pages.push(await openClient(b.ctx, srv.url, ch, { shared: true }));
        for (const p of pages)
            await waitUntil(async () => (await p.transport()) === 'websocket', { timeoutMs: 20000, intervalMs: 100, what: 'every page connected' }).catch(async (e) => {
                throw new Error(`${e.message}; states ${JSON.stringify(await p.states())}; console ${p.log.join(' | ')}`);
            });
        const roles = await Promise.all(pages.map((p) => p.role()));
        assert.deepEqual(roles.filter((r) => r === 'leader').length, 1, `one leader: ${roles}`);
        await gaugeIs(srv.url, 1, `${PAGES} shared pages: one connection`);

        // A page without the option keeps its own connection.
        const own = await openClient(b.ctx, srv.url, ch, {});
        await waitUntil(async () => (await own.transport()) === 'websocket', { timeoutMs: 20000, intervalMs: 100, what: 'the unshared page connected' });
        assert.equal(await own.role(), null);
        await gaugeIs(srv.url, 2, 'plus one unshared page');
        await own.page.close();
        await gaugeIs(srv.url, 1, 'the unshared page gone');

        // Publish 60 messages, 20 ms apart; close the leader after 15, crash the next after 35.
        const ids = [];
        const publishing = (async () => {
            for (let n = 1; n <= 60; n++) {
                ids.push(await publishOk(srv.url, ch, { n }));
                await delay(20);
            }
        })();
        const alive = [...pages];
        const takeovers = [];
        for (const [at, how] of [[15, 'close'], [35, 'crash']]) {
            await waitUntil(() => ids.length >= at, { timeoutMs: 20000, intervalMs: 5, what: `${at} published` });
            const roles = await Promise.all(alive.map((p) => p.role()));
            const leader = alive[roles.indexOf('leader')];
            assert.ok(leader, `a leader among ${roles}`);
            assertPrefix(await leader.got(), ids, 'the leader page before its close');
            const cdp = how === 'crash' ? await b.ctx.newCDPSession(leader.page) : null;
            const t0 = Date.now();
            if (cdp) {
                const crashed = new Promise((resolve) => leader.page.once('crash', resolve));
                cdp.send('Page.crash').catch(() => {}); // answered by the page's death
                await crashed;
            } else
                await leader.page.close();
            alive.splice(alive.indexOf(leader), 1);
            const connectedAt = await waitUntil(async () => {
                for (const p of alive) {
                    const s = (await p.states()).find((x) => x.state === 'connected' && x.at >= t0);
                    if (s) return s.at;
                }
                return null;
            }, { timeoutMs: 20000, intervalMs: 10, what: 'the new leader connected' });
            takeovers.push(`${how} ${connectedAt - t0}`);
            assert.deepEqual((await Promise.all(alive.map((p) => p.role()))).filter((r) => r === 'leader').length, 1, 'one new leader');
            await gaugeIs(srv.url, 1, `after the leader's ${how} at ${at}: one connection again`);
        }
        await publishing;
        const sentinel = await publishOk(srv.url, ch, { n: 0 });
        for (const [i, p] of alive.entries()) {
            await waitUntil(async () => (await p.got()).includes(sentinel), { timeoutMs: 20000, intervalMs: 100, what: `page ${i}: the sentinel` }).catch(async (e) => {
                throw new Error(`${e.message}; got ${(await p.got()).length} of ${ids.length + 1}; states ${JSON.stringify(await p.states())}; console ${p.log.join(' | ')}`);
            });
            assert.deepEqual(await p.got(), [...ids, sentinel], `page ${i}: every message exactly once, in order`);
        }
        t.diagnostic(`tabs ${PAGES} -> connections 1; takeover ms (leader page gone -> new connection connected): ${takeovers.join(', ')}`);
        for (const tk of takeovers)
            assert.ok(Number(tk.split(' ')[1]) <= TAKEOVER_BOUND_MS, `takeover ${tk} ms within ${TAKEOVER_BOUND_MS} ms`);
    });
});
