/*
 * The load-balancer configurations of deploy/ run for real (docs/operations.md "Load
 * balancers"): deploy/haproxy/pushedge.cfg and deploy/nginx/pushedge.conf, each in front of
 * three pushedge nodes on one private Redis, on loopback. The files are used as they are, with
 * only their addresses, paths and HAProxy's check interval rewritten (each rewrite is asserted to
 * have matched, so a config that drifts from the test fails here rather than being tested
 * half).
 *
 * Covered, through each balancer: the JS client forced onto each transport (WebSocket, SSE,
 * long-poll) receives a message published on a node it is not connected to; /metrics is not
 * served through the balancer; then a node holding clients is taken out with SIGTERM
 * (--drain-delay: it fails /readyz first, then drains) while a publisher on another node
 * publishes all along: every client reconnects through the balancer and holds every
 * acknowledged message exactly once, in order (cursor resume), and the drained node's clients
 * are found on the others.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { PushEdge } from '../../web/src/pushedge.js';
import { delay, freePort, getMetrics, httpRequest, metricValue, publishOk, skipFileUnless, startServer, uniqueChannel, waitUntil } from './lib.mjs';
import { DEPLOY_EXAMPLE_NODES, deployHaproxy, rewrite, startProgram, tmpDir, which } from './proxies.mjs';
import { HAVE_REDIS, startRedis } from './redislib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const HAPROXY = which('haproxy');
const NGINX = which('nginx');
skipFileUnless((!HAVE_REDIS && 'redis-server is not on PATH') || (!HAPROXY && 'haproxy is not installed') ||
    (!NGINX && 'nginx is not installed'));

/* Behind a trusted proxy loopback is no credential: the test publishes with a key. */
const KEY = 'lb-test-key';
const AUTH = { Authorization: `Bearer ${KEY}` };

/* deploy/haproxy/pushedge.cfg (proxies.mjs deployHaproxy), or deploy/nginx/pushedge.conf
 * rewritten the same way, in front of the nodes on nodePorts. */
async function startBalancer(kind, nodePorts) {
    if (kind === 'haproxy')
        return deployHaproxy(nodePorts, { maxconn: 4000 });
    const dir = tmpDir(`lb-${kind}`); /* nginx workers drop root: tmpDir makes it writable */
    const port = await freePort();
    const site = rewrite(fs.readFileSync(path.join(ROOT, 'deploy/nginx/pushedge.conf'), 'utf8'), [
        ['listen 80;', `listen 127.0.0.1:${port};`],
        ...DEPLOY_EXAMPLE_NODES.map((a, i) => [a, `127.0.0.1:${nodePorts[i]}`]),
        [/\/var\/log\/nginx\//g, `${dir}/`],
    ], 'deploy/nginx/pushedge.conf');
    fs.writeFileSync(path.join(dir, 'pushedge.conf'), site);
    fs.writeFileSync(path.join(dir, 'nginx.conf'), [
        'worker_processes 1;', 'daemon off;', `pid ${dir}/nginx.pid;`, `error_log ${dir}/error.log warn;`,
        'events { worker_connections 1024; }',
        'http {',
        ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `    ${k}_temp_path ${dir}/tmp_${k};`),
        `    include ${dir}/pushedge.conf;`,
        '}', ''].join('\n'));
    return startProgram(kind, NGINX, ['-c', path.join(dir, 'nginx.conf'), '-p', dir], port, dir);
}

const TRANSPORTS = ['websocket', 'sse', 'poll'];

function client(url, transport, t) {
    const c = new PushEdge(url, {
        WebSocket,
        transports: [transport],
        probeTimeout: 3000,
        connectTimeout: 5000,
        backoffBase: 100,
        backoffCap: 800,
        reprobeInterval: 600000,
        pollTimeout: 3,
    });
    t.after(() => c.close());
    c.got = [];
    c.errors = [];
    c.on('error', (e) => c.errors.push(e));
    return c;
}

let redis;
before(async () => {
    redis = await startRedis();
});
after(async () => {
    await redis?.stop();
});

for (const kind of ['haproxy', 'nginx']) {
    describe(`${kind} (deploy/${kind === 'haproxy' ? 'haproxy/pushedge.cfg' : 'nginx/pushedge.conf'}) over three nodes`, () => {
        let nodes, lb;
        before(async () => {
            nodes = await Promise.all([0, 1, 2].map(() => startServer(['--redis', redis.url, '--threads', '1', '--ping-interval', '2',
                '--poll-timeout', '3', '--drain-delay', '2', '--drain-timeout', '4', '--trusted-proxy', '127.0.0.1/32', '--api-key', KEY])));
            lb = await startBalancer(kind, nodes.map((n) => n.port));
        });
        after(async () => {
            await lb?.stop();
            for (const n of nodes ?? [])
                await n.stop('SIGKILL');
        });

        it('each transport receives a message published on another node; /metrics is not served through it', { timeout: 40000 }, async (t) => {
            assert.equal((await httpRequest(lb.url, '/healthz')).status, 200);
            assert.equal((await httpRequest(lb.url, '/metrics')).status, 404);
            const ch = uniqueChannel(`lb${kind}`);
            const clients = TRANSPORTS.map((tr) => client(lb.url, tr, t));
            for (const c of clients)
                c.subscribe(ch, (m) => c.got.push(m.data.n));
            await waitUntil(() => clients.every((c, i) => c.transport === TRANSPORTS[i]), { timeoutMs: 15000, what: 'every client connected' });
            /* Published on each node in turn: whichever node a client is on, two of them are others. */
            for (let i = 0; i < 3; i++)
                await publishOk(nodes[i].url, ch, { n: i }, AUTH);
            await waitUntil(() => clients.every((c) => c.got.length >= 3), {
                timeoutMs: 15000,
                what: `three messages on every transport (${clients.map((c) => `${c.transport}: ${c.got}`).join('; ')})`,
            });
            for (const c of clients)
                assert.deepEqual(c.got, [0, 1, 2], c.transport);
        });

        it('a node taken out with SIGTERM: its clients reconnect through the balancer and miss nothing', { timeout: 90000 }, async (t) => {
            const ch = uniqueChannel(`drain${kind}`);
            const clients = [];
            for (let k = 0; k < 3; k++)
                for (const tr of TRANSPORTS)
                    clients.push(client(lb.url, tr, t));
            for (const c of clients)
                c.subscribe(ch, (m) => c.got.push(m.data.n));
            await waitUntil(() => clients.every((c) => c.transport !== null && c.transport !== undefined), { timeoutMs: 20000, what: 'every client connected' });
            /* The node holding the most streaming clients goes; the publisher uses another. */
            const held = [];
            for (const n of nodes) {
                const m = await getMetrics(n.url);
                held.push((metricValue(m, 'pushedge_connections', { transport: 'ws' }) ?? 0) + (metricValue(m, 'pushedge_connections', { transport: 'sse' }) ?? 0));
            }
            const victim = held.indexOf(Math.max(...held));
            assert.ok(held[victim] > 0, `some node holds streams (${held})`);
            const pubNode = nodes[(victim + 1) % 3];
            t.diagnostic(`streams per node ${held}; taking out node ${victim}`);

            const acked = [];
            let publishing = true;
            const publisher = (async () => {
                for (let n = 0; publishing && n < 2000; n++) {
                    await publishOk(pubNode.url, ch, { n }, AUTH);
                    acked.push(n);
                    await delay(25);
                }
            })();
            await delay(500);
            const t0 = Date.now();
            const r = await nodes[victim].stop('SIGTERM');
            assert.equal(r.code, 0, r.stderr);
            const drainedMs = Date.now() - t0;
            await delay(1000);
            publishing = false;
            await publisher;
            t.diagnostic(`node ${victim} drained and exited in ${drainedMs} ms; ${acked.length} messages published`);
            await waitUntil(() => clients.every((c) => c.got.length >= acked.length), {
                timeoutMs: 30000,
                what: `every client holds the ${acked.length} acknowledged messages (${clients.map((c) => `${c.transport} ${c.got.length}`).join(', ')})`,
            });
            await delay(300);
            for (const c of clients)
                assert.deepEqual(c.got, acked, `${c.transport}: every acknowledged message once, in order`);
            /* Every streaming client (3 WebSocket, 3 SSE) is now on the other two nodes. */
            const streams = async () => {
                let sum = 0;
                for (const [i, n] of nodes.entries())
                    if (i !== victim) {
                        const m = await getMetrics(n.url);
                        sum += (metricValue(m, 'pushedge_connections', { transport: 'ws' }) ?? 0) + (metricValue(m, 'pushedge_connections', { transport: 'sse' }) ?? 0);
                    }
                return sum;
            };
            await waitUntil(async () => (await streams()) === 6, { timeoutMs: 10000, what: 'the six streams on the two remaining nodes' });
            /* Bring the node back for a later case (the next balancer gets fresh nodes anyway). */
            nodes[victim] = await startServer(['--redis', redis.url, '--threads', '1', '--api-key', KEY]);
        });
    });
}
