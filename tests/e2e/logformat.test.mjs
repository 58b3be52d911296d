/*
 * --log-format (docs/operations.md "Logs").
 *
 * Covered: with json, every line of stderr is one JSON object with time, level and module; a
 * connection open line and a close line (transport, peer, duration, reason, bytes) for SSE and
 * WebSocket, with the reasons client_left and drain (the node drains while a WebSocket is open:
 * the one place the drain reason is observable, since the node exits before a scrape); a
 * refused request line (status, code, method, path, peer); a `token` query parameter, escaped
 * or not, never appears in any line; a flood of refused requests is logged up to the per-thread
 * bound (1,000 per 10 s) and no further. With the default (text) no line is JSON and there are
 * no connection lines at info. A bad value exits 2 naming the option.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { httpRequest, openSSE, publishOk, runOnce, startServer, uniqueChannel, waitUntil } from './lib.mjs';
import { RawWS } from './wslib.mjs';

const SECRET = 'eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.NEVER-LOG-ME';

function jsonLines(stderr) {
    return stderr
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => {
            try {
                return JSON.parse(l);
            } catch {
                throw new Error(`not a JSON line: ${JSON.stringify(l)}`);
            }
        });
}

describe('--log-format json', () => {
    it('one JSON object per line; open/close per connection; refused requests; no token', { timeout: 30000 }, async (t) => {
        const srv = await startServer(['--log-format', 'json', '--threads', '1', '--drain-timeout', '3']);
        t.after(() => srv.stop('SIGKILL'));
        const ch = uniqueChannel('log');
        const sse = await openSSE(srv.url, `/sse?channel=${ch}&token=${SECRET}`, { t });
        await sse.waitLive();
        await publishOk(srv.url, ch, { n: 1 });
        await sse.waitFor(() => sse.envelopes().length >= 1, 5000, 'one message');
        sse.close();
        /* A refusal whose URL carries a token, plain and percent-escaped. */
        const bad = await httpRequest(srv.url, `/poll?channel=bad!name&token=${SECRET}&t%6Fken=${SECRET}&x=1`);
        assert.equal(bad.status, 400);
        const ws = await RawWS.open(srv.port, `/ws?channel=${ch}&token=${SECRET}`, { t, autoPong: true });
        assert.equal(ws.status, 101);
        await waitUntil(() => /"event":"close","transport":"sse"/.test(srv.output().stderr), { what: 'the SSE close line' });

        const r = await srv.stop('SIGTERM');
        assert.equal(r.code, 0, r.stderr);
        assert.ok(!r.stderr.includes('NEVER-LOG-ME'), 'the token is not logged');
        const lines = jsonLines(r.stderr);
        for (const l of lines) {
            assert.match(l.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
            assert.ok(['error', 'warn', 'info', 'debug'].includes(l.level), JSON.stringify(l));
            assert.equal(typeof l.module, 'string');
            assert.ok(typeof l.msg === 'string' || typeof l.event === 'string', JSON.stringify(l));
        }
        const ev = (event, tr) => lines.filter((l) => l.event === event && (tr === undefined || l.transport === tr));
        for (const tr of ['sse', 'ws']) {
            const open = ev('open', tr);
            assert.equal(open.length, 1, `one ${tr} open line`);
            assert.match(open[0].peer, /^127\.0\.0\.1:\d+$/);
            assert.ok(open[0].path.startsWith(`/${tr}?channel=${ch}`), open[0].path);
            assert.ok(!open[0].path.includes('token'), open[0].path);
            const close = ev('close', tr);
            assert.equal(close.length, 1, `one ${tr} close line`);
            assert.equal(close[0].peer, open[0].peer);
            assert.equal(typeof close[0].duration, 'number');
            assert.ok(close[0].duration >= 0);
            assert.ok(Number.isInteger(close[0].bytes) && close[0].bytes > 0, `${tr} bytes ${close[0].bytes}`);
        }
        assert.equal(ev('close', 'sse')[0].reason, 'client_left');
        assert.equal(ev('close', 'ws')[0].reason, 'drain', 'the WebSocket open at SIGTERM was drained');
        const refused = ev('refused').filter((l) => l.status === 400);
        assert.equal(refused.length, 1, JSON.stringify(ev('refused')));
        assert.equal(refused[0].code, 'bad_channel');
        assert.equal(refused[0].method, 'GET');
        assert.equal(refused[0].path, '/poll?channel=bad!name&x=1');
        assert.match(refused[0].peer, /^127\.0\.0\.1:\d+$/);
    });
});

describe('--log-format json: a flood of refusals', () => {
    it('1,200 refused requests within the window: 1,000 lines', { timeout: 60000 }, async (t) => {
        const srv = await startServer(['--log-format', 'json', '--threads', '1']);
        t.after(() => srv.stop('SIGKILL'));
        const N = 1200;
        /* Ten keep-alive connections (fetch pools them), 120 requests each. */
        let answers = 0;
        await Promise.all(Array.from({ length: 10 }, async () => {
            for (let i = 0; i < N / 10; i++) {
                const r = await fetch(`${srv.url}/nope`);
                await r.arrayBuffer();
                assert.equal(r.status, 404);
                answers++;
            }
        }));
        assert.equal(answers, N);
        const r = await srv.stop('SIGTERM');
        const refused = jsonLines(r.stderr).filter((l) => l.event === 'refused');
        assert.equal(refused.length, 1000, 'the per-thread bound');
    });
});

describe('--log-format text (the default)', () => {
    it('text lines, no connection lines at info', { timeout: 20000 }, async (t) => {
        const srv = await startServer(['--threads', '1']);
        t.after(() => srv.stop('SIGKILL'));
        const ch = uniqueChannel('txt');
        const sse = await openSSE(srv.url, `/sse?channel=${ch}&token=${SECRET}`, { t });
        await sse.waitLive();
        sse.close();
        const r = await srv.stop('SIGTERM');
        const lines = r.stderr.split('\n').filter((l) => l !== '');
        assert.ok(lines.length > 0);
        for (const l of lines)
            assert.match(l, /^\d{4}-\d\d-\d\dT[\d:.]+Z (error|warn|info|debug) \[[^\]]+\] /, l);
        assert.ok(!lines.some((l) => / open transport=| close transport=/.test(l)), 'connection lines are debug in text');
    });

    it('debug shows the connection lines as text, without the token', { timeout: 20000 }, async (t) => {
        const srv = await startServer(['--threads', '1', '--log-level', 'debug']);
        t.after(() => srv.stop('SIGKILL'));
        const sse = await openSSE(srv.url, `/sse?channel=${uniqueChannel('dbg')}&token=${SECRET}`, { t });
        await sse.waitLive();
        sse.close();
        await waitUntil(() => /\[conn\] close transport="sse"/.test(srv.output().stderr), { what: 'the close line' });
        const r = await srv.stop('SIGTERM');
        assert.match(r.stderr, /\[conn\] open transport="sse" peer="127\.0\.0\.1:\d+" path="\/sse\?channel=/);
        assert.match(r.stderr, /\[conn\] close transport="sse" .*reason="client_left" bytes=\d+/);
        assert.ok(!r.stderr.includes('NEVER-LOG-ME'));
    });

    it('a bad value exits 2 naming the option', { timeout: 10000 }, async () => {
        const r = await runOnce(['--log-format', 'xml']);
        assert.equal(r.code, 2);
        assert.match(r.stderr, /log-format.*text or json/);
    });
});
