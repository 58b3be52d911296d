/*
 * revoke-latency.mjs: how long a revocation takes to reach a connection (docs/operations.md
 * "Ending a user's access"): two pushedge nodes on one Redis, a WebSocket of the same user on
 * each; POST /api/disconnect to node 1, and the time from sending it to each close frame 4003
 * (node 1: its own threads; node 2: through PUBLISH pe:control). 20 rounds; median and max.
 *
 *   PUSHEDGE_BIN=build/edge/pushedge PUSHEDGE_TEST_REDIS_URL=redis://127.0.0.1:6379 node tests/load/revoke-latency.mjs
 *
 * Not a load test: one connection per node, an idle machine's latency.
 */
import crypto from 'node:crypto';
import { startServer, httpRequest, waitUntil } from '../e2e/lib.mjs';
import { openWs } from '../e2e/wslib.mjs';
const SECRET = 'e2e-secret-0123456789abcdef0123456789';
const b64 = (b) => Buffer.from(b).toString('base64url');
const mint = (p) => { const i = `${b64(JSON.stringify({ alg: 'HS256' }))}.${b64(JSON.stringify(p))}`; return `${i}.${b64(crypto.createHmac('sha256', SECRET).update(i).digest())}`; };
const url = process.env.PUSHEDGE_TEST_REDIS_URL;
const args = ['--auth', 'optional', '--jwt-secret', SECRET, '--api-key', 'k', '--redis', url];
const n1 = await startServer(args), n2 = await startServer(args);
for (const s of [n1, n2]) await waitUntil(async () => (await httpRequest(s.url, '/readyz')).status === 200, { timeoutMs: 10000 });
const lat = { local: [], remote: [] };
for (let i = 0; i < 20; i++) {
    const sub = `m${i}`;
    const tok = mint({ sub, exp: Math.floor(Date.now() / 1000) + 600, channels: ['user:{sub}'] });
    const a = await openWs(n1.url, `/ws?channel=user:${sub}`, { headers: { authorization: `Bearer ${tok}` } });
    const b = await openWs(n2.url, `/ws?channel=user:${sub}`, { headers: { authorization: `Bearer ${tok}` } });
    await a.nextOp('subscribed'); await b.nextOp('subscribed');
    const t0 = Date.now();
    const r = await httpRequest(n1.url, `/api/disconnect?user=${sub}`, { method: 'POST', headers: { authorization: 'Bearer k' } });
    lat.local.push((await a.waitClose(3000)).t - t0); lat.remote.push((await b.waitClose(3000)).t - t0);
    if (r.status !== 200) throw new Error(r.text);
}
const q = (xs) => { xs.sort((x, y) => x - y); return `median ${xs[10].toFixed(1)} ms, max ${xs[19].toFixed(1)} ms`; };
console.log(`POST -> close 4003, node 1 (local): ${q(lat.local)}; node 2 (via Redis): ${q(lat.remote)}`);
await n1.stop(); await n2.stop();
