/*
 * The documented embedding, in headless Chromium: a page on another origin imports the client
 * from pushedge (`import { PushEdge } from 'http://<pushedge>/pushedge.js'`) and receives
 * messages, with no --allowed-origin, with the page's origin listed and with `*`; a page whose
 * origin is not allowed gets an `error` event (origin_not_allowed) and its client stops instead
 * of retrying forever.
 * Needs Debian's chromium and npm's playwright-core (tests/run.sh installs both); without them
 * the file is skipped, except under CI=true where that is a failure.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startServer, publishOk, uniqueChannel, waitUntil, getMetrics, metricValue, delay } from './lib.mjs';
import { haveChromium } from './proxies.mjs';

const HAVE = haveChromium();
if (!HAVE && process.env.CI === 'true')
    throw new Error('CI=true: /usr/bin/chromium is required by the embedding suite (deploy/install-deps.sh --test installs it)');

/* A page server on its own port: another origin than pushedge's. set() says what the page does. */
async function pageServer() {
    let html = '';
    const render = (pushedgeUrl, channel, options) => `<!doctype html><meta charset="utf-8"><title>embed</title>
<script type="module">
window.got = []; window.errors = []; window.states = [];
try {
  const { PushEdge } = await import(${JSON.stringify(pushedgeUrl + '/pushedge.js')});
  const client = new PushEdge(${JSON.stringify(pushedgeUrl)}, ${JSON.stringify(options)});
  client.on('error', (e) => window.errors.push(e));
  client.on('state', (s) => window.states.push(s));
  client.subscribe(${JSON.stringify(channel)}, (m) => window.got.push(m.id), { since: '0' });
  window.client = client;
  window.imported = true;
} catch (e) {
  window.importError = String(e);
}
</script>`;
    const server = http.createServer((req, res) => {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(html);
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
        url: `http://127.0.0.1:${server.address().port}`,
        set: (pushedgeUrl, channel, options) => (html = render(pushedgeUrl, channel, options)),
        close: () => new Promise((r) => {
            server.close(r);
            server.closeAllConnections();
        }),
    };
}

describe('embedding the client from another origin (Chromium)', { skip: HAVE ? false : 'chromium is not installed' }, () => {
    let chromium, ctx, dir;
    before(async () => {
        ({ chromium } = await import('playwright-core'));
        dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-embed-'));
        ctx = await chromium.launchPersistentContext(dir, {
            executablePath: '/usr/bin/chromium', headless: true,
            args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                '--disable-component-update', '--disable-sync'],
        });
    });
    after(async () => {
        if (ctx)
            await ctx.close().catch(() => {});
        if (dir)
            fs.rmSync(dir, { recursive: true, force: true });
    });

    /* serverArgs(pageOrigin) gives pushedge's arguments. */
    async function run(serverArgs, transports, expectOk) {
        const ch = uniqueChannel('embed');
        const page = await pageServer();
        const srv = await startServer(serverArgs(page.url));
        page.set(srv.url, ch, { transports, backoffBase: 200, backoffCap: 1000 });
        const tab = await ctx.newPage();
        try {
            await tab.goto(page.url);
            await waitUntil(async () => tab.evaluate(() => window.imported === true || window.importError !== undefined),
                { timeoutMs: 10000, intervalMs: 100, what: 'the import to settle' });
            assert.equal(await tab.evaluate(() => window.importError), undefined, 'the cross-origin module import works');
            if (expectOk) {
                const id = await publishOk(srv.url, ch, { n: 1 });
                await waitUntil(async () => (await tab.evaluate(() => window.got)).includes(id),
                    { timeoutMs: 15000, intervalMs: 100, what: `the message over ${transports}` });
                assert.deepEqual(await tab.evaluate(() => window.errors), []);
            } else {
                await waitUntil(async () => (await tab.evaluate(() => window.errors)).length > 0,
                    { timeoutMs: 15000, intervalMs: 100, what: 'an error event' });
                const errors = await tab.evaluate(() => window.errors);
                assert.equal(errors[0].code, 'origin_not_allowed', JSON.stringify(errors));
                /* It stopped: no more requests reach the server. */
                const n0 = metricValue(await getMetrics(srv.url), 'pushedge_http_requests_total');
                await delay(2500);
                const n1 = metricValue(await getMetrics(srv.url), 'pushedge_http_requests_total');
                assert.ok(n1 - n0 <= 1, `the client stopped retrying (${n1 - n0} requests in 2.5 s, the scrape included)`);
            }
        } finally {
            await tab.close();
            await page.close();
            const r = await srv.stop();
            assert.equal(r.code, 0, `clean exit\n${r.stderr.slice(-2000)}`);
        }
    }

    it('no --allowed-origin: the import works and the client connects over WebSocket', { timeout: 60000 }, async () => {
        await run(() => [], ['websocket'], true);
    });
    it('--allowed-origin *: every transport', { timeout: 90000 }, async () => {
        for (const tr of [['websocket'], ['sse'], ['poll']])
            await run(() => ['--allowed-origin', '*'], tr, true);
    });
    it('the page\'s origin listed: every transport', { timeout: 90000 }, async () => {
        for (const tr of [['websocket'], ['sse'], ['poll']])
            await run((origin) => ['--allowed-origin', origin], tr, true);
    });
    it('an origin not allowed: an error event origin_not_allowed, and the client stops', { timeout: 60000 }, async () => {
        await run(() => ['--allowed-origin', 'https://app.example.com'], ['sse'], false);
    });
});
