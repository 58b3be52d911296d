/*
 * The corporate-proxy path over TLS: headless Chromium (Debian's, driven by playwright-core)
 * whose every request goes through squid, configured as corporate proxies usually are: CONNECT,
 * the opaque tunnel that TLS needs, only to the TLS port (standing in for 443); plain HTTP
 * requests pass; ws:// is refused (Chromium sends a WebSocket through a proxy as a CONNECT too).
 *
 * pushedge serves both sides itself: --listen (clear) and --listen-tls with a certificate from a
 * throwaway CA made here with openssl (in a temporary directory, deleted at the end; nothing is
 * committed). Chromium trusts that certificate through --ignore-certificate-errors-spki-list
 * (the hash of its public key), not by turning verification off.
 *
 * Cases:
 *   (a) an https page (served by pushedge over TLS, through the tunnel): the JS client, given no
 *       URL, derives wss:// from the page and stays on WebSocket through the CONNECT tunnel;
 *       every message once and in order; squid logged the tunnels and refused nothing.
 *   (b) the same proxy, an http page: the client's ws:// CONNECT to the clear port is refused by
 *       squid (403, in its log) and the client falls back to SSE over plain HTTP through the
 *       proxy, every message once and in order.
 *   (c) https page: the SSE fallback works over https as well (the client told to skip
 *       WebSocket), through the tunnel.
 *
 * Skipped as a whole (exit 77) when Chromium, squid or openssl is missing or the pushedge under
 * test has no --listen-tls; with CI=true each of these fails instead (lib.mjs skipFileUnless).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { delay, freePort, publishOk, serverBin, skipFileUnless, startServer, uniqueChannel, waitUntil } from './lib.mjs';
import { haveChromium, squidConnect } from './proxies.mjs';

const CHROMIUM = '/usr/bin/chromium';

function run(cmd, args, opts = {}) {
    return spawnSync(cmd, args, { encoding: 'utf8', timeout: 30000, ...opts });
}

const hasTls = (() => {
    const r = run(serverBin(), ['--help']);
    return `${r.stdout}${r.stderr}`.includes('--listen-tls');
})();
const hasOpenssl = run('openssl', ['version']).status === 0;
const hasSquid = fs.existsSync('/usr/sbin/squid') || run('sh', ['-c', 'command -v squid']).status === 0;
skipFileUnless(
    (!hasTls && `${serverBin()} has no --listen-tls`) ||
    (!hasOpenssl && 'openssl is not installed') ||
    (!hasSquid && 'squid is not installed') ||
    (!haveChromium() && `${CHROMIUM} is not installed or does not run (--version failed)`));
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

/**
 * A throwaway CA and a server certificate it signed for 127.0.0.1 and localhost (ECDSA P-256),
 * in dir. Returns the paths and the base64 SHA-256 of the server key's SubjectPublicKeyInfo.
 */
function makeCerts(dir) {
    const f = (name) => path.join(dir, name);
    const steps = [
        ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
            '-subj', '/CN=pushedge test CA', '-keyout', f('ca.key'), '-out', f('ca.pem')],
        ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1',
            '-keyout', f('server.key'), '-out', f('server.csr')],
    ];
    for (const s of steps) {
        const r = run('openssl', s);
        assert.equal(r.status, 0, `openssl ${s.join(' ')}: ${r.stderr}`);
    }
    fs.writeFileSync(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
    let r = run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'),
        '-CAcreateserial', '-days', '1', '-extfile', f('ext.cnf'), '-out', f('server.pem')]);
    assert.equal(r.status, 0, `openssl x509 -req: ${r.stderr}`);
    /* The chain pushedge serves: the leaf, then the CA that signed it. */
    fs.writeFileSync(f('chain.pem'), fs.readFileSync(f('server.pem'), 'utf8') + fs.readFileSync(f('ca.pem'), 'utf8'));
    r = run('sh', ['-c', `openssl x509 -in '${f('server.pem')}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`]);
    assert.equal(r.status, 0, `SPKI hash: ${r.stderr}`);
    return { cert: f('chain.pem'), key: f('server.key'), ca: f('ca.pem'), spki: r.stdout.trim() };
}

/** A fresh Chromium (its own profile) sending everything through proxyUrl, trusting spki. */
async function launch(proxyUrl, spki) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-chromium-'));
    const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
        /* <-loopback>: without it Chromium never sends loopback requests through a proxy. */
        `--proxy-server=${proxyUrl}`, '--proxy-bypass-list=<-loopback>',
        `--ignore-certificate-errors-spki-list=${spki}`];
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
 * Opens origin's /healthz, records every WebSocket URL the page opens, imports the client from
 * the same origin and subscribes to channel from '0' with the client's default base URL (the
 * page's origin).
 */
async function openClient(ctx, origin, channel, options = {}) {
    const page = await ctx.newPage();
    const log = [];
    page.on('console', (m) => log.push(m.text()));
    page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
    const resp = await page.goto(`${origin}/healthz`);
    assert.ok(resp && resp.ok(), `${origin}/healthz through the proxy: ${resp && resp.status()}`);
    await page.evaluate(async ({ options, channel }) => {
        window.wsUrls = [];
        const Native = window.WebSocket;
        window.WebSocket = class extends Native {
            constructor(url, protocols) {
                window.wsUrls.push(String(url));
                super(url, protocols);
            }
        };
        const { PushEdge } = await import('/pushedge.js');
        window.got = [];
        window.states = [];
        const client = new PushEdge(undefined, options);
        client.on('state', (s) => window.states.push(s));
        client.subscribe(channel, (m) => window.got.push({ id: m.id, n: m.data.n }), { since: '0' });
        window.client = client;
    }, { options: { ...CLIENT_OPTIONS, ...options }, channel });
    return {
        page,
        log,
        got: () => page.evaluate(() => window.got),
        transport: () => page.evaluate(() => window.client.transport),
        wsUrls: () => page.evaluate(() => window.wsUrls),
        states: () => page.evaluate(() => window.states),
        protocol: () => page.evaluate(() => location.protocol),
        async waitTransport(want, timeoutMs = 30000) {
            await waitUntil(async () => (await this.transport()) === want, { timeoutMs, intervalMs: 100, what: `transport ${want}` });
        },
    };
}

/** Publishes count messages {n} to channel (clear text, straight to pushedge); returns the IDs. */
async function publishSome(base, channel, count) {
    const ids = [];
    for (let n = 1; n <= count; n++) {
        ids.push(await publishOk(base, channel, { n }));
        if (n % 5 === 0)
            await delay(100);
    }
    return ids;
}

/** Every ID once, in order, then a sentinel (anything duplicated would arrive before it). */
async function expectExactly(c, ids, what, { base, channel }) {
    try {
        await waitUntil(async () => (await c.got()).length >= ids.length, { timeoutMs: 30000, intervalMs: 100, what });
    } catch {
        throw new Error(`${what}: ${(await c.got()).length} of ${ids.length} arrived; states ${JSON.stringify(await c.states())}; console ${c.log.join(' | ')}`);
    }
    const sentinel = await publishOk(base, channel, { n: 0 });
    await waitUntil(async () => (await c.got()).some((m) => m.id === sentinel), { timeoutMs: 30000, intervalMs: 100, what: `${what}: the sentinel` });
    assert.deepEqual((await c.got()).map((m) => m.id), [...ids, sentinel], `${what}: every message exactly once, in order`);
}

/** squid's access log lines for method and host:port (written when each transaction ends). */
function logLines(proxy, method, hostPort) {
    return proxy.accessLog().split('\n').filter((l) => l.includes(` ${method} `) && l.includes(hostPort));
}

describe('TLS through a corporate proxy (squid: CONNECT to the TLS port only)', () => {
    let dir, certs, srv, tlsPort, proxy, browser;
    before(async () => {
        dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-tls-proxy-'));
        certs = makeCerts(dir);
        tlsPort = await freePort();
        srv = await startServer(['--listen-tls', `127.0.0.1:${tlsPort}`, '--tls-cert', certs.cert, '--tls-key', certs.key,
            '--ping-interval', '2']);
        proxy = await squidConnect(tlsPort);
        browser = await launch(proxy.url, certs.spki);
    });
    after(async () => {
        if (browser)
            await browser.close();
        if (proxy)
            await proxy.stop();
        if (srv) {
            const r = await srv.stop();
            assert.equal(r.code, 0, `server exit ${r.code}: ${r.stderr.slice(-2000)}`);
        }
        if (dir)
            fs.rmSync(dir, { recursive: true, force: true });
    });

    it('(a) https page: wss:// derived from the page, WebSocket through the CONNECT tunnel', { timeout: 90000 }, async (t) => {
        const origin = `https://127.0.0.1:${tlsPort}`;
        const ch = uniqueChannel('tlsproxy');
        const c = await openClient(browser.ctx, origin, ch);
        assert.equal(await c.protocol(), 'https:');
        await c.waitTransport('websocket');
        const ids = await publishSome(srv.url, ch, 20);
        await expectExactly(c, ids, 'wss through squid', { base: srv.url, channel: ch });
        const urls = await c.wsUrls();
        assert.ok(urls.length >= 1, 'the client opened a WebSocket');
        for (const u of urls)
            assert.ok(u.startsWith(`wss://127.0.0.1:${tlsPort}/`), `a WebSocket from an https page is wss:// to the page's origin: ${u}`);
        assert.equal(await c.transport(), 'websocket', 'still on WebSocket');
        await c.page.close();
        /* A tunnel is logged when it closes: the page's are closed now (or soon). */
        await waitUntil(() => logLines(proxy, 'CONNECT', `127.0.0.1:${tlsPort}`).some((l) => l.includes('TCP_TUNNEL/200')),
            { timeoutMs: 15000, intervalMs: 200, what: 'squid logging the CONNECT tunnel' });
        /* Only the server's ports: Chromium's own background requests (to Google's hosts) are refused too. */
        assert.deepEqual(logLines(proxy, 'CONNECT', `127.0.0.1:${tlsPort}`).filter((l) => l.includes('TCP_DENIED')), [],
            'squid refused nothing on the TLS path');
        t.diagnostic(`ws URLs: ${urls.join(' ')}; squid: ${logLines(proxy, 'CONNECT', `127.0.0.1:${tlsPort}`).length} tunnel(s) to the TLS port`);
    });

    it('(b) http page through the same proxy: ws:// CONNECT refused (403), the client falls back to SSE', { timeout: 90000 }, async (t) => {
        const ch = uniqueChannel('clearproxy');
        const c = await openClient(browser.ctx, srv.url, ch);
        assert.equal(await c.protocol(), 'http:');
        await c.waitTransport('sse');
        const ids = await publishSome(srv.url, ch, 20);
        await expectExactly(c, ids, 'sse through squid', { base: srv.url, channel: ch });
        const urls = await c.wsUrls();
        assert.ok(urls.some((u) => u.startsWith(`ws://127.0.0.1:${srv.port}/`)), `the client tried ws:// first: ${JSON.stringify(urls)}`);
        const denied = logLines(proxy, 'CONNECT', `127.0.0.1:${srv.port}`).filter((l) => l.includes('TCP_DENIED/403'));
        assert.ok(denied.length >= 1, `squid refused the ws:// CONNECT:\n${proxy.accessLog()}`);
        assert.ok(logLines(proxy, 'GET', `127.0.0.1:${srv.port}/sse`).length + logLines(proxy, 'GET', `127.0.0.1:${srv.port}/healthz`).length >= 1,
            'plain HTTP went through the proxy');
        t.diagnostic(`ended on ${await c.transport()}; ${denied.length} refused CONNECT(s)`);
        await c.page.close();
    });

    it('(c) https page, WebSocket not offered: SSE over https through the tunnel', { timeout: 90000 }, async () => {
        const origin = `https://127.0.0.1:${tlsPort}`;
        const ch = uniqueChannel('tlssse');
        const c = await openClient(browser.ctx, origin, ch, { transports: ['sse', 'poll'] });
        await c.waitTransport('sse');
        const ids = await publishSome(srv.url, ch, 10);
        await expectExactly(c, ids, 'https SSE through squid', { base: srv.url, channel: ch });
        assert.deepEqual(await c.wsUrls(), [], 'no WebSocket was tried');
        await c.page.close();
    });
});
