/*
 * Threads as they run by default: publishers and subscribers spread over every loop thread at
 * once, on the engine E2E_ENGINE names. The server runs with at least 4 threads whatever the
 * machine's core count (more loops than cores is the case where cross-thread wake-ups interleave
 * most), and every message must reach every subscriber exactly once, in order, and the server
 * must exit cleanly (no sanitizer report) when stopped.
 *
 * Regression: with the memory engine and two or more threads, keep-alive publishers posting as
 * fast as they can crashed the server within seconds (h2o socket buffers recycled into the main
 * thread's free list from every loop; a heap-use-after-free under ASan).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, openSSE, waitUntil, uniqueChannel, assertAlive } from './lib.mjs';

const THREADS = Math.max(4, Number(process.env.E2E_STRESS_THREADS || 0));

/* POSTs on one keep-alive connection, one at a time, as fast as answers come. */
function keepAlivePublisher(base, channel, count, tag) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const ids = [];
    return new Promise((resolve, reject) => {
        let n = 0;
        const next = () => {
            if (n === count) {
                agent.destroy();
                resolve(ids);
                return;
            }
            const body = JSON.stringify({ tag, n: ++n });
            const req = http.request(`${base}/api/publish?channel=${channel}`,
                { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
                (res) => {
                    let text = '';
                    res.setEncoding('utf8');
                    res.on('data', (c) => (text += c));
                    res.on('end', () => {
                        if (res.statusCode !== 200) {
                            agent.destroy();
                            reject(new Error(`publish ${tag}#${n}: ${res.statusCode} ${text}`));
                            return;
                        }
                        ids.push(JSON.parse(text).id);
                        next();
                    });
                });
            req.on('error', (e) => {
                agent.destroy();
                reject(e);
            });
            req.end(body);
        };
        next();
    });
}

test(`keep-alive publishers and SSE subscribers across ${THREADS} threads: every message once, in order, clean exit`, async () => {
    const srv = await startServer(['--threads', String(THREADS)]);
    try {
        const channels = Array.from({ length: 4 }, () => uniqueChannel('stress'));
        const subs = [];
        for (let i = 0; i < 40; i++)
            subs.push({ channel: channels[i % 4], sse: await openSSE(srv.url, `/sse?channel=${channels[i % 4]}`) });
        await Promise.all(subs.map((s) => s.sse.waitLive()));
        const PER = 1500;
        const acked = await Promise.all(channels.map((c, i) => keepAlivePublisher(srv.url, c, PER, `p${i}`)));
        for (const s of subs) {
            const want = acked[channels.indexOf(s.channel)];
            await waitUntil(() => s.sse.envelopes().length >= want.length, { timeoutMs: 30000, what: `${want.length} messages on ${s.channel}` });
            assert.deepEqual(s.sse.envelopes().map((m) => m.id), want, `subscriber of ${s.channel} got exactly the acknowledged IDs, in order`);
            s.sse.close();
        }
        await assertAlive(srv, 'after the publish storm');
    } finally {
        const r = await srv.stop();
        assert.equal(r.killed, false, 'stopped in time');
        assert.equal(r.code, 0, `clean exit (signal ${r.signal})\n${r.stderr.slice(-4000)}`);
    }
});
