/*
 * /readyz while the node's link to Redis is black-holed (issue 16: a node that cannot reach its
 * engine must leave the load balancer's pool; docs/failure-scenarios.md, docs/operations.md).
 *
 * A private redis-server behind a TCP proxy this file controls: blackhole() stops forwarding in
 * both directions without closing anything (bytes wait in the kernel; new connections are
 * accepted and left waiting), restore() lets everything flow again. For a node with one and with
 * two event-loop threads (the second thread's link has no periodic command of its own), idle
 * (no client, no publish: only the node's own heartbeat crosses the link), it measures by
 * polling /readyz every 50 ms:
 *   - how long after the hole /readyz turns 503 (the link's command timeout noticing the
 *     heartbeat unanswered), bounded: 503 within 6 s, and it stays 503 while the hole lasts;
 *   - how long after the link heals it is 200 again (reconnect backoff), bounded: 10 s;
 *   - a publish during the hole is answered 503 (never a hang past the timeout, never 200).
 * Prints "# readyz {...}" lines with the times.
 *
 * Not covered: a hole between the load balancer and the node (HAProxy's own check times out),
 * and Redis Cluster or Sentinel links (the same timeout applies to every command connection).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { delay, httpRequest, skipFileUnless, startServer, uniqueChannel } from './lib.mjs';
import { linkProxy } from './proxies.mjs';
import { HAVE_REDIS, startRedis } from './redislib.mjs';

skipFileUnless(!HAVE_REDIS && 'redis-server is not installed');


async function readyz(base) {
    try {
        return (await httpRequest(base, '/readyz', { timeoutMs: 2000 })).status;
    } catch {
        return 0;
    }
}

/* Polls /readyz every 50 ms until want(status) or ms pass; the time it took, or null. */
async function timeUntil(base, want, ms) {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) {
        if (want(await readyz(base)))
            return Date.now() - t0;
        await delay(50);
    }
    return null;
}

describe('/readyz with the Redis link black-holed', () => {
    for (const threads of [1, 2]) {
        it(`turns 503 while the link hangs and 200 once it heals (--threads ${threads})`, { timeout: 90000 }, async () => {
            const redis = await startRedis();
            const proxy = await linkProxy(redis.port);
            const srv = await startServer(['--redis', `redis://127.0.0.1:${proxy.port}`, '--threads', String(threads)]);
            try {
                assert.notEqual(await timeUntil(srv.url, (s) => s === 200, 15000), null, 'ready before the hole');
                proxy.blackhole();
                const holeAt = Date.now();
                const toDown = await timeUntil(srv.url, (s) => s === 503, 8000);
                assert.notEqual(toDown, null, `/readyz still 200 8 s into the hole (threads ${threads})`);
                assert.ok(toDown <= 6000, `/readyz took ${toDown} ms to turn 503 (at most 6 s)`);
                /* A publish meanwhile: a clear refusal, not a hang and never a false 200. */
                const t = Date.now();
                const r = await httpRequest(srv.url, `/api/publish?channel=${uniqueChannel('bh')}`, {
                    method: 'POST', body: '{"x":1}', headers: { 'content-type': 'application/json' }, timeoutMs: 10000 });
                assert.equal(r.status, 503, `publish during the hole: ${r.status} ${r.body}`);
                const publishMs = Date.now() - t;
                /* Still 503 for the rest of a 10 s hole. */
                let flapped = 0;
                while (Date.now() - holeAt < 10000) {
                    if ((await readyz(srv.url)) !== 503)
                        ++flapped;
                    await delay(100);
                }
                assert.equal(flapped, 0, `/readyz answered 200 ${flapped} times during the hole`);
                proxy.restore();
                const toUp = await timeUntil(srv.url, (s) => s === 200, 15000);
                assert.notEqual(toUp, null, '/readyz 200 again after the link healed');
                assert.ok(toUp <= 10000, `/readyz took ${toUp} ms to come back (at most 10 s)`);
                console.log(`# readyz ${JSON.stringify({ threads, down_after_ms: toDown, publish_answer_ms: publishMs, up_after_heal_ms: toUp })}`);
            } finally {
                proxy.restore();
                await srv.stop();
                proxy.close();
                await redis.stop();
            }
        });
    }
});
