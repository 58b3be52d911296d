/*
 * Day one for an operator: the loop-lag metric reads seconds of lag, the client is importable
 * from any origin, and a node leaves a load balancer's pool before it stops listening
 * (--drain-delay: /readyz 503 while it still serves), tested behind HAProxy's health checks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, httpRequest, getMetrics, publishOk, openSSE, uniqueChannel, waitUntil, delay, checkJsonError, rawExchange } from './lib.mjs';
import { haproxyHealth } from './proxies.mjs';
import { openWs } from './wslib.mjs';

async function stopClean(srv) {
    const r = await srv.stop();
    assert.equal(r.killed, false, 'stopped in time');
    assert.equal(r.code, 0, `clean exit (signal ${r.signal})\n${r.stderr.slice(-4000)}`);
    return r;
}

function lags(samples) {
    return samples.filter((s) => s.name === 'pushedge_loop_lag_seconds').map((s) => s.value);
}

test('pushedge_loop_lag_seconds reads seconds of lag: near 0 when idle, the stall when the loops were stopped', async () => {
    const srv = await startServer(['--threads', '2']);
    try {
        /* The first timer fires a second after start: wait for a reading, then check it. */
        await delay(1300);
        const idle = lags(await getMetrics(srv.url));
        assert.equal(idle.length, 2, 'one sample per thread');
        for (const v of idle)
            assert.ok(v >= 0 && v < 0.5, `an idle loop lags well under a second (got ${v}; the Unix time before the fix)`);
        /* Stop every loop for 2 s: the lag timer due in that window fires at least 1 s late. */
        process.kill(srv.pid, 'SIGSTOP');
        await delay(2000);
        process.kill(srv.pid, 'SIGCONT');
        const stalled = lags(await getMetrics(srv.url));
        assert.ok(Math.max(...stalled) >= 0.9 && Math.max(...stalled) < 10, `a 2 s stall shows (got ${stalled})`);
    } finally {
        await stopClean(srv);
    }
});

test('/pushedge.js may be imported from any origin (Access-Control-Allow-Origin: *), with or without --allowed-origin', async () => {
    for (const args of [[], ['--allowed-origin', 'https://app.example.com']]) {
        const srv = await startServer(args);
        try {
            const r = await httpRequest(srv.url, '/pushedge.js', { headers: { origin: 'https://other.example.net' } });
            assert.equal(r.status, 200);
            assert.equal(r.headers['access-control-allow-origin'], '*');
            assert.match(r.headers['content-type'], /^text\/javascript/);
        } finally {
            await stopClean(srv);
        }
    }
});

test('--drain-delay: after SIGTERM /readyz is 503 while the node still accepts and serves, then it drains and exits 0', async () => {
    const srv = await startServer(['--drain-delay', '2', '--drain-timeout', '2']);
    const ch = uniqueChannel('predrain');
    const sse = await openSSE(srv.url, `/sse?channel=${ch}`);
    await sse.waitLive();
    const t0 = Date.now();
    process.kill(srv.pid, 'SIGTERM');
    await waitUntil(async () => (await httpRequest(srv.url, '/readyz')).status === 503, { timeoutMs: 1500, what: '/readyz 503' });
    const ready = await httpRequest(srv.url, '/readyz');
    assert.equal(ready.json.error.code, 'not_ready');
    assert.equal((await httpRequest(srv.url, '/healthz')).status, 200, 'still healthy');
    const id = await publishOk(srv.url, ch, { n: 1 });
    await sse.waitFor(() => sse.envelopes().some((e) => e.id === id), 2000, 'the message on the open stream');
    const late = await openSSE(srv.url, `/sse?channel=${ch}`);
    assert.equal(late.status, 200, 'a new stream is still accepted');
    late.close();
    assert.ok(Date.now() - t0 < 2000, 'all of that within the pre-drain');
    await sse.waitEnd(8000);
    assert.ok(Date.now() - t0 >= 1900, `the drain started after the delay (${Date.now() - t0} ms)`);
    const r = await srv.stop(null);
    assert.equal(r.code, 0, `exit 0 after the drain\n${r.stderr.slice(-2000)}`);
});

test('behind HAProxy health checks, a node with --drain-delay leaves the pool before it stops listening: no request fails', async (t) => {
    const a = await startServer(['--drain-delay', '3', '--drain-timeout', '1']);
    const b = await startServer([]);
    let lb;
    try {
        lb = await haproxyHealth(a.port, b.port);
    } catch (e) {
        await a.stop();
        await b.stop();
        if (e.name === 'ProxyMissing' && process.env.CI !== 'true') {
            t.skip(e.message);
            return;
        }
        throw e;
    }
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const failures = [];
    let sent = 0;
    let stopLoad = false;
    const ch = uniqueChannel('lb');
    const load = (async () => {
        /* Bounded: at most 30 s or 3,000 requests. */
        const end = Date.now() + 30000;
        while (!stopLoad && Date.now() < end && sent < 3000) {
            sent++;
            try {
                const r = await httpRequest(lb.url, `/api/publish?channel=${ch}`, { method: 'POST', body: '{"n":1}', agent, timeoutMs: 5000 });
                if (r.status !== 200)
                    failures.push(`${r.status} ${r.text.slice(0, 120)}`);
            } catch (e) {
                failures.push(e.message);
            }
            await delay(10);
        }
    })();
    try {
        await waitUntil(() => sent >= 50, { timeoutMs: 10000, what: 'traffic through the balancer' });
        process.kill(a.pid, 'SIGTERM');
        const r = await a.stop(null);
        assert.equal(r.code, 0, `node A exits 0\n${r.stderr.slice(-2000)}`);
        const after = sent;
        await waitUntil(() => sent >= after + 50, { timeoutMs: 10000, what: 'traffic after node A left' });
    } finally {
        stopLoad = true;
        await load;
        agent.destroy();
        await lb.stop();
        await stopClean(b);
    }
    assert.deepEqual(failures, [], `${failures.length} of ${sent} requests failed`);
});

test('under --allowed-origin, SSE and long-poll from another origin are refused readably (403 origin_not_allowed with that origin in ACAO) and logged, rate-limited', async () => {
    const srv = await startServer(['--allowed-origin', 'https://app.example.com', '--threads', '2']);
    try {
        const ch = uniqueChannel('origin');
        for (const path of [`/sse?channel=${ch}`, `/poll?channel=${ch}&timeout=1`]) {
            const r = await httpRequest(srv.url, path, { headers: { origin: 'https://evil.example.net' } });
            checkJsonError(r, 403, path);
            assert.equal(r.json.error.code, 'origin_not_allowed');
            assert.equal(r.headers['access-control-allow-origin'], 'https://evil.example.net', 'the refused page can read why');
            assert.match(r.headers.vary || '', /Origin/);
        }
        const ok = await httpRequest(srv.url, `/poll?channel=${ch}&timeout=1`, { headers: { origin: 'https://app.example.com' } });
        assert.equal(ok.status, 200, 'an allowed origin');
        assert.equal(ok.headers['access-control-allow-origin'], 'https://app.example.com');
        const same = await httpRequest(srv.url, `/poll?channel=${ch}&timeout=1`, { headers: { origin: srv.url } });
        assert.equal(same.status, 200, 'the same origin');
        const none = await httpRequest(srv.url, `/poll?channel=${ch}&timeout=1`);
        assert.equal(none.status, 200, 'no Origin (not a browser)');

        await waitUntil(() => /refused GET \/sse from 127\.0\.0\.1 \(Origin https:\/\/evil\.example\.net\): 403 origin_not_allowed/.test(srv.output().stderr),
            { timeoutMs: 3000, what: 'the refusal in the log' });
        for (let i = 0; i < 60; i++)
            await httpRequest(srv.url, `/sse?channel=${ch}`, { headers: { origin: 'https://evil.example.net' } });
        const lines = srv.output().stderr.split('\n').filter((l) => l.includes('refused GET /sse'));
        assert.ok(lines.length <= 2 * 20, `at most 20 refusal lines per thread per 10 s (got ${lines.length} for 61)`);
    } finally {
        await stopClean(srv);
    }
});

test('behind a proxy that drops the port from Host, a WebSocket from the page\'s origin passes once that origin is listed', async () => {
    const handshake = (port, origin) => [
        'GET /ws HTTP/1.1', 'Host: 127.0.0.1', 'Upgrade: websocket', 'Connection: Upgrade',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', `Origin: ${origin}`, '', ''].join('\r\n');
    const srv = await startServer(['--allowed-origin', 'https://app.example.com']);
    try {
        const r = await rawExchange(srv.port, handshake(srv.port, `http://127.0.0.1:${srv.port}`), { until: (t) => t.includes('\r\n\r\n') });
        assert.equal(r.status, 403, 'Host without the port: not taken for the same origin');
    } finally {
        await stopClean(srv);
    }
    const srv2 = await startServer(['--allowed-origin', 'https://app.example.com', '--allowed-origin', 'http://127.0.0.1:8081']);
    try {
        const r = await rawExchange(srv2.port, handshake(srv2.port, 'http://127.0.0.1:8081'), { until: (t) => t.includes('\r\n\r\n') });
        assert.equal(r.status, 101, 'the page\'s public origin listed: accepted');
    } finally {
        await stopClean(srv2);
    }
});

test('the WebSocket publish refusal says what is missing: the API key once one is set', async () => {
    const srv = await startServer(['--api-key', 'k3y']);
    try {
        const ws = await openWs(srv.url, '/ws');
        const e = await ws.request({ op: 'publish', channel: 'x', data: 1 });
        assert.equal(e.code, 'forbidden');
        assert.match(e.message, /API key/);
        assert.doesNotMatch(e.message, /loopback/, 'loopback is not enough once a key is set');
        ws.close();
    } finally {
        await stopClean(srv);
    }
});

test('on a Redis without keyspace events the node warns at start that a plain XADD is not delivered live', { skip: process.env.PUSHEDGE_TEST_REDIS_URL ? false : (process.env.CI === 'true' ? false : 'needs PUSHEDGE_TEST_REDIS_URL') }, async () => {
    assert.ok(process.env.PUSHEDGE_TEST_REDIS_URL, 'CI=true: PUSHEDGE_TEST_REDIS_URL is required');
    const srv = await startServer(['--redis', process.env.PUSHEDGE_TEST_REDIS_URL]);
    try {
        await waitUntil(() => /notify-keyspace-events has no K and t/.test(srv.output().stderr), { timeoutMs: 5000, what: 'the warning' });
        const lines = srv.output().stderr.split('\n').filter((l) => l.includes('notify-keyspace-events has no K and t'));
        assert.equal(lines.length, 1, 'once per process, not per thread');
    } finally {
        await stopClean(srv);
    }
});
