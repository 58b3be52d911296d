/*
 * Operations endpoints and static files (docs/protocol.md "Operations", docs/client.md).
 *
 * Covered: /healthz, /readyz (memory engine: always ready), /metrics in the Prometheus text
 * format with the published-messages counter and the per-transport connection gauge tracking
 * an SSE stream as it opens and closes; 404 with the JSON error body for unknown paths;
 * GET / (the demo page) and GET /pushedge.js (the browser client module).
 *
 * Not covered: /readyz 503 with an unreachable Redis (the Redis suite), latency histograms.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
    checkJsonError,
    getMetrics,
    httpRequest,
    metricValue,
    openSSE,
    parseMetrics,
    publishOk,
    rawExchange,
    sharedServer,
    waitUntil,
} from './lib.mjs';

/*
 * A fresh server of its own: the counters below start from zero. A short heartbeat lets the
 * server notice a departed idle SSE client by writing to it (HTTP/1.1 servers generally only
 * learn of a close on their next write).
 */
const ops = sharedServer(before, after, ['--ping-interval', '1']);

describe('health', () => {
    it('GET /healthz is 200', { timeout: 10000 }, async () => {
        const r = await httpRequest(ops.srv.url, '/healthz');
        assert.equal(r.status, 200);
    });

    it('GET /readyz is 200 with the memory engine', { timeout: 10000 }, async () => {
        const r = await httpRequest(ops.srv.url, '/readyz');
        assert.equal(r.status, 200, r.text);
    });

    it('HEAD /healthz is 200 without a body', { timeout: 10000 }, async () => {
        const r = await httpRequest(ops.srv.url, '/healthz', { method: 'HEAD' });
        assert.equal(r.status, 200);
        assert.equal(r.body.length, 0);
    });
});

describe('metrics', () => {
    it('is the Prometheus text format', { timeout: 10000 }, async () => {
        const r = await httpRequest(ops.srv.url, '/metrics');
        assert.equal(r.status, 200);
        assert.match(String(r.headers['content-type']), /^text\/plain/);
        const samples = parseMetrics(r.text);
        assert.ok(samples.length > 0, 'no samples');
        const typed = new Map();
        for (const line of r.text.split('\n')) {
            if (!line.startsWith('#'))
                continue;
            const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$/.exec(line);
            if (!m) {
                /* Other comments are allowed by the format. */
                continue;
            }
            if (m[1] === 'TYPE') {
                assert.match(m[3] || '', /^(counter|gauge|histogram|summary|untyped)$/, `bad TYPE line: ${line}`);
                assert.equal(typed.has(m[2]), false, `TYPE given twice for ${m[2]}`);
                typed.set(m[2], m[3]);
            }
        }
        for (const s of samples)
            assert.ok(s.name.startsWith('pushedge_') || /^(process|go)_/.test(s.name), `unprefixed metric ${s.name}`);
        if (typed.has('pushedge_messages_published_total'))
            assert.equal(typed.get('pushedge_messages_published_total'), 'counter');
        assert.ok(r.text.endsWith('\n'), 'the exposition ends with a newline');
    });

    it('counts published messages: pushedge_messages_published_total 3', { timeout: 10000 }, async () => {
        for (let i = 0; i < 3; i++)
            await publishOk(ops.srv.url, 'metrics', { i });
        const r = await httpRequest(ops.srv.url, '/metrics');
        assert.match(r.text, /^pushedge_messages_published_total 3$/m, `metrics:\n${r.text}`);
    });

    it('pushedge_connections{transport="sse"} follows an SSE stream opening and closing', { timeout: 15000 }, async (t) => {
        const before = metricValue(await getMetrics(ops.srv.url), 'pushedge_connections', { transport: 'sse' });
        assert.equal(before, 0, 'no SSE stream yet');
        const sse = await openSSE(ops.srv.url, '/sse?channel=metrics', { t });
        await sse.waitLive();
        const r = await httpRequest(ops.srv.url, '/metrics');
        assert.match(r.text, /^pushedge_connections\{transport="sse"\} 1$/m, `metrics:\n${r.text}`);
        sse.close();
        await waitUntil(
            async () => metricValue(await getMetrics(ops.srv.url), 'pushedge_connections', { transport: 'sse' }) === 0,
            { timeoutMs: 5000, what: 'pushedge_connections{transport="sse"} back to 0 after the client left' },
        );
    });

    it('counters never decrease', { timeout: 10000 }, async () => {
        const a = await getMetrics(ops.srv.url);
        await publishOk(ops.srv.url, 'metrics', 'more');
        const b = await getMetrics(ops.srv.url);
        for (const s of a) {
            if (!s.name.endsWith('_total'))
                continue;
            const v = metricValue(b, s.name, s.labels);
            assert.ok(v !== undefined && v >= s.value, `${s.name}${JSON.stringify(s.labels)} went from ${s.value} to ${v}`);
        }
        assert.equal(metricValue(b, 'pushedge_messages_published_total'), metricValue(a, 'pushedge_messages_published_total') + 1);
    });
});

describe('HTTP/1.1 connection handling', () => {
    it('pipelined requests are answered in order on one connection', { timeout: 10000 }, async () => {
        const req = (p) => `GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
        const r = await rawExchange(ops.srv.port, req('/healthz') + req('/metrics') + req('/readyz'), {
            timeoutMs: 5000,
            until: (s) => (s.match(/HTTP\/1\.1 \d{3}/g) || []).length >= 3 && /\r\n\r\n[^]*$/.test(s),
        });
        const statuses = (r.text.match(/^HTTP\/1\.1 (\d{3})/gm) || []).map((l) => Number(l.slice(9)));
        assert.deepEqual(statuses, [200, 200, 200], JSON.stringify(r.text.slice(0, 500)));
    });
});

describe('static files and unknown paths', () => {
    it('GET / serves the demo page (HTML)', { timeout: 10000 }, async () => {
        const r = await httpRequest(ops.srv.url, '/');
        assert.equal(r.status, 200);
        assert.match(String(r.headers['content-type']), /^text\/html/);
        assert.match(r.text, /<html|<!doctype html/i);
    });

    it('GET /pushedge.js serves the client as an ES module', { timeout: 10000 }, async () => {
        const r = await httpRequest(ops.srv.url, '/pushedge.js');
        assert.equal(r.status, 200);
        assert.match(String(r.headers['content-type']), /^(text|application)\/javascript/);
        assert.match(r.text, /export\s+(class|function|const|\{)[^]*PushEdge|PushEdge[^]*export\s*\{/);
    });

    for (const path of ['/nope', '/api/nope', '/ssex', '/healthz/extra', '/..%2f..%2fetc/passwd', '/web/../../etc/passwd']) {
        it(`404 with the JSON error body for ${path}`, { timeout: 10000 }, async () => {
            const r = await httpRequest(ops.srv.url, path);
            checkJsonError(r, 404, path);
            assert.ok(!r.text.includes('root:'), 'no file outside web/ may be served');
        });
    }
});
