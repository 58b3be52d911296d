/*
 * drain-spread.mjs: the reconnect spread at the node that remains when another drains
 * (docs/benchmarks.md "Drain: the reconnect spread", docs/operations.md "Draining and deploys").
 *
 * Two pushedge nodes, A and B, on one Redis. CLIENTS raw clients (a third each WebSocket, SSE,
 * long-poll; one socket each) subscribe on A. Then SIGTERM A: each client, when A tells it to
 * leave, waits the hint A gave it (WebSocket close reason {"reconnect_ms":N}, SSE `retry:`,
 * poll "reconnect_ms") stretched by up to a quarter at random, as the JS client does, and
 * connects to B (what a load balancer would pick: A no longer listens). Without a hint (an
 * older A) it does what the JS client does: WebSocket 1001/1012 a random 250-2500 ms, a poll
 * answer at once. The script counts the connections arriving at B (TCP connect, as the client
 * sees it) per 100 ms after the signal and prints the histogram, the busiest 100 ms and the
 * quantiles.
 *
 *   PUSHEDGE_BIN=build-rel/edge/pushedge PUSHEDGE_TEST_REDIS_URL=redis://127.0.0.1:6379 \
 *     CLIENTS=9000 A_ARGS='--drain-timeout 10' node tests/load/drain-spread.mjs
 *
 *   PUSHEDGE_BIN_A   the binary of node A (default PUSHEDGE_BIN): an older build measures "before"
 *   A_ARGS           extra arguments of node A (e.g. '--drain-spread 0')
 *   CLIENTS          total clients, split evenly over the three transports (default 9000: the
 *                    client process then holds up to 2 x CLIENTS descriptors of its 20,000)
 *   WORKERS          client threads (default 3): one event loop for 9,000 sockets stalls for
 *                    hundreds of ms in a reconnect wave and would count its own stalls as
 *                    bunched arrivals; each worker runs CLIENTS/WORKERS of them
 *   JSON=1           also print the 100 ms buckets as one JSON line
 *
 * Bounded: connecting waits at most 60 s, the reconnect wave at most 40 s; it exits non-zero if
 * a client never arrives at B.
 */
import net from 'node:net';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import WebSocket from 'ws';

const KINDS = ['websocket', 'sse', 'poll'];

if (isMainThread)
    await main();
else
    await worker();

/* ---- the clients (one worker thread runs workerData.n of them) --------------------------- */

async function worker() {
    const { aPort, bPort, channel, n, offset } = workerData;
    const { delay } = await import('../e2e/lib.mjs');
    const rec = { arrivals: { websocket: [], sse: [], poll: [] }, told: { websocket: [], sse: [], poll: [] }, hints: { websocket: 0, sse: 0, poll: 0 } };
    const open = new Set();
    const jitter = (ms) => ms * (1 + 0.25 * Math.random());

    /* Connects a raw TCP socket to port and sends head; resolves on connect. */
    const tcp = (port, head) => new Promise((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port });
        s.once('error', reject);
        s.once('connect', () => {
            s.removeListener('error', reject);
            s.on('error', () => {});
            open.add(s);
            s.on('close', () => open.delete(s));
            s.write(head);
            resolve(s);
        });
    });
    /* The second leg, to B: counted when the TCP connection is established. */
    const arrive = async (kind) => {
        const path = kind === 'sse' ? `/sse?channel=${channel}` : `/poll?channel=${channel}&timeout=30`;
        await tcp(bPort, `GET ${path} HTTP/1.1\r\nHost: b\r\n\r\n`);
        rec.arrivals[kind].push(Date.now());
    };

    async function wsClient(ready) {
        const ws = new WebSocket(`ws://127.0.0.1:${aPort}/ws?channel=${channel}`, { perMessageDeflate: false });
        ws.on('error', () => {});
        await new Promise((resolve, reject) => {
            ws.once('message', resolve); // {"op":"subscribed"}
            ws.once('close', () => reject(new Error('closed before subscribed')));
        });
        ready();
        const [code, reason] = await new Promise((resolve) => ws.once('close', (c, r) => resolve([c, r.toString()])));
        rec.told.websocket.push(Date.now());
        let hint;
        try {
            hint = JSON.parse(reason).reconnect_ms;
        } catch {
            hint = undefined;
        }
        if (Number.isInteger(hint))
            rec.hints.websocket++;
        await delay(Number.isInteger(hint) ? jitter(hint) : code === 1001 || code === 1012 ? 250 + Math.random() * 2250 : 0);
        /* The TCP connect of the WebSocket to B is the arrival (the handshake follows). */
        const b = new WebSocket(`ws://127.0.0.1:${bPort}/ws?channel=${channel}`, { perMessageDeflate: false });
        b.on('error', () => {});
        open.add(b);
        await new Promise((resolve) => {
            b.once('upgrade', resolve);
            b.once('close', resolve);
            b._req?.once('socket', (sock) => sock.once('connect', () => rec.arrivals.websocket.push(Date.now())));
        });
    }

    async function sseClient(ready) {
        const s = await tcp(aPort, `GET /sse?channel=${channel} HTTP/1.1\r\nHost: a\r\n\r\n`);
        let buf = '', live = false;
        const retries = [];
        s.setEncoding('utf8');
        s.on('data', (c) => {
            buf += c;
            if (!live && buf.includes('\r\n\r\n')) {
                live = true;
                ready();
            }
            for (const m of buf.matchAll(/\nretry: (\d+)\n/g))
                retries.push(Number(m[1]));
            buf = buf.slice(-64);
        });
        await new Promise((resolve) => s.once('close', resolve));
        if (!live)
            ready();
        rec.told.sse.push(Date.now());
        /* The stream's first retry: is the default (2000); a later one is the drain's hint. */
        const hint = retries.length >= 2 ? retries[retries.length - 1] : undefined;
        if (hint !== undefined)
            rec.hints.sse++;
        await delay(hint !== undefined ? jitter(hint) : 0);
        await arrive('sse');
    }

    async function pollClient(ready) {
        const s = await tcp(aPort, `GET /poll?channel=${channel}&timeout=30 HTTP/1.1\r\nHost: a\r\n\r\n`);
        ready();
        let buf = '';
        s.setEncoding('utf8');
        /* Told when the answer is complete (its Content-Length in), as fetch() would resolve. */
        await new Promise((resolve) => {
            s.on('data', (c) => {
                buf += c;
                const end = buf.indexOf('\r\n\r\n');
                const cl = /\r\ncontent-length: *(\d+)/i.exec(buf);
                if (end >= 0 && cl && Buffer.byteLength(buf.slice(end + 4)) >= Number(cl[1]))
                    resolve();
            });
            s.once('close', resolve);
        });
        s.destroy();
        rec.told.poll.push(Date.now());
        const m = /"reconnect_ms":(\d+)/.exec(buf);
        if (m)
            rec.hints.poll++;
        await delay(m ? jitter(Number(m[1])) : 0);
        await arrive('poll');
    }

    const runners = [];
    let ready = 0;
    for (let i = 0; i < n; i += 100) {
        const wave = [];
        for (let j = i; j < Math.min(n, i + 100); j++) {
            const kind = KINDS[(offset + j) % 3];
            const fn = kind === 'websocket' ? wsClient : kind === 'sse' ? sseClient : pollClient;
            let done;
            wave.push(new Promise((r) => (done = r)));
            runners.push(fn(() => {
                ready++;
                done();
            }).catch(() => done()));
        }
        await Promise.race([Promise.all(wave), delay(10000)]);
    }
    parentPort.postMessage({ ready });
    /* Report when every client arrived at B, or when told to (the main thread's bound). */
    await Promise.race([Promise.all(runners), new Promise((r) => parentPort.once('message', r))]);
    parentPort.postMessage({ rec });
    for (const s of open)
        s.terminate ? s.terminate() : s.destroy();
    process.exit(0);
}

/* ---- the nodes, the signal and the report -------------------------------------------------- */

async function main() {
    const { startServer, waitUntil, getMetrics, metricValue } = await import('../e2e/lib.mjs');
    const N = Number(process.env.CLIENTS || 9000);
    const W = Math.max(1, Number(process.env.WORKERS || 3));
    const redis = process.env.PUSHEDGE_TEST_REDIS_URL;
    if (!redis) {
        console.error('PUSHEDGE_TEST_REDIS_URL is required');
        process.exit(2);
    }
    const BIN = process.env.PUSHEDGE_BIN;
    const BIN_A = process.env.PUSHEDGE_BIN_A || BIN;
    const aArgs = (process.env.A_ARGS || '').split(/\s+/).filter(Boolean);
    const common = ['--redis', redis, '--poll-timeout', '30', '--ping-interval', '60', '--max-connections', '30000'];
    const channel = `spread-${process.pid}-${Date.now()}`;
    process.env.PUSHEDGE_BIN = BIN_A;
    const a = await startServer([...common, ...aArgs]);
    process.env.PUSHEDGE_BIN = BIN;
    const b = await startServer(common);

    const tc = Date.now();
    const workers = [];
    const readies = [];
    const reports = [];
    for (let w = 0, offset = 0; w < W; w++) {
        const n = Math.floor(N / W) + (w < N % W ? 1 : 0);
        const wk = new Worker(new URL(import.meta.url), { workerData: { aPort: a.port, bPort: b.port, channel, n, offset } });
        offset += n;
        workers.push(wk);
        readies.push(new Promise((resolve) => wk.once('message', resolve)));
        reports.push(new Promise((resolve) => wk.on('message', (m) => m.rec && resolve(m.rec))));
        wk.on('error', (e) => console.error(`worker ${w}: ${e.stack}`));
    }
    const ready = (await Promise.all(readies)).reduce((s, m) => s + m.ready, 0);
    await waitUntil(async () => {
        const m = await getMetrics(a.url);
        return ['ws', 'sse', 'poll'].reduce((s, k) => s + (metricValue(m, 'pushedge_connections', { transport: k }) ?? 0), 0) >= N;
    }, { timeoutMs: 30000, intervalMs: 250, what: `${N} connections counted at A (${ready} ready)` });
    console.log(`${N} clients on A (${W} threads, a third per transport); connected in ${Date.now() - tc} ms; A: ${[BIN_A, ...aArgs].join(' ')}`);

    const t0 = Date.now();
    a.proc.kill('SIGTERM');
    const bound = setTimeout(() => {
        console.error('not every client arrived at B within 40 s');
        process.exitCode = 1;
        for (const wk of workers)
            wk.postMessage('finish');
    }, 40000);
    const recs = await Promise.all(reports);
    clearTimeout(bound);
    const ra = await a.stop(null);

    const merged = { arrivals: {}, told: {}, hints: {} };
    for (const k of KINDS) {
        merged.arrivals[k] = recs.flatMap((r) => r.arrivals[k]).map((x) => x - t0).sort((x, y) => x - y);
        merged.told[k] = recs.flatMap((r) => r.told[k]).map((x) => x - t0).sort((x, y) => x - y);
        merged.hints[k] = recs.reduce((s, r) => s + r.hints[k], 0);
    }
    const all = KINDS.flatMap((k) => merged.arrivals[k]).sort((x, y) => x - y);
    const q = (xs, f) => xs[Math.min(xs.length - 1, Math.floor(f * xs.length))];
    const buckets = (xs) => {
        const out = [];
        for (const x of xs) {
            const i = Math.max(0, Math.floor(x / 100));
            out[i] = (out[i] ?? 0) + 1;
        }
        return Array.from(out, (v) => v ?? 0);
    };
    const hb = buckets(all);
    const busiest = Math.max(...hb);
    const sorted = [...hb].sort((x, y) => y - x);
    console.log(`A exited ${ra.code} ${Date.now() - t0} ms after the signal; hints received: ws ${merged.hints.websocket}, sse ${merged.hints.sse}, poll ${merged.hints.poll}`);
    console.log(`arrivals at B: ${all.length} of ${N}; first ${q(all, 0)} ms, p10 ${q(all, 0.1)}, p50 ${q(all, 0.5)}, p90 ${q(all, 0.9)}, p99 ${q(all, 0.99)}, last ${all[all.length - 1]} ms`);
    console.log(`busiest 100 ms: ${busiest} connections (${((100 * busiest) / all.length).toFixed(1)}%) at ${hb.indexOf(busiest) * 100} ms; ` +
        `5th busiest ${sorted[4]}; 100 ms buckets with any: ${hb.filter((v) => v > 0).length}; busiest second: ` +
        `${Math.max(...hb.map((_, i) => hb.slice(i, i + 10).reduce((s, v) => s + v, 0)))}`);
    for (const k of KINDS) {
        const xs = merged.arrivals[k], ts = merged.told[k];
        console.log(`  ${k.padEnd(9)} told ${q(ts, 0)}..${ts[ts.length - 1]} ms; arrived p50 ${q(xs, 0.5)}, last ${xs[xs.length - 1]} ms; busiest 100 ms ${Math.max(...buckets(xs))}`);
    }
    /* A text histogram by 500 ms (each # is 1% of the clients). */
    for (let i = 0; i < hb.length; i += 5) {
        const n = hb.slice(i, i + 5).reduce((s, v) => s + v, 0);
        console.log(`  ${String(i * 100).padStart(5)}-${String(i * 100 + 500).padEnd(5)} ms ${String(n).padStart(6)} ${'#'.repeat(Math.round((100 * n) / all.length))}`);
    }
    if (process.env.JSON === '1')
        console.log(JSON.stringify({ n: N, buckets100: hb }));
    await b.stop();
    process.exit(process.exitCode ?? 0);
}
