/*
 * The Redis engine against a Redis Cluster: three masters on loopback ports, created by this
 * file with redis-server --cluster-enabled and redis-cli --cluster create, and stopped by PID.
 *
 * Covered: channels spread over the masters' slots (every channel's stream lives on the master
 * of its hash tag); five interleaved rounds over twelve channels, published through both
 * pushedge nodes, received on one over SSE, WebSocket and long-poll in order per channel; a
 * resume with a cursor across nodes; a slot migrated while pushedge runs (publishes during
 * MIGRATING are followed through ASK, after the move through MOVED), with every message
 * delivered once, in order.
 * Keyed publishes (Idempotency-Key): the key record lives on the stream's master and a repeat
 * from the other node answers the same ID.
 * Not covered: master failover (needs replicas and cluster-node-timeout waits), sharded pub/sub
 * (not used: hiredis 0.14 cannot parse it).
 * Skipped when redis-server or redis-cli is missing.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, openSSE, pollRequest, publish, publishOk, skipFileUnless, startServer, uniqueChannel, waitUntil } from './lib.mjs';
import { openWs } from './wslib.mjs';

const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
skipFileUnless((!have('redis-server') || !have('redis-cli')) && 'redis-server or redis-cli is not installed');

function cli(port, ...args) {
    return execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8', timeout: 10000 }).trim();
}

describe('Redis Cluster (3 masters)', () => {
    const masters = [];
    let dir;
    let nodeA, nodeB;

    before(async () => {
        dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-cluster-'));
        for (let i = 0; i < 3; i++) {
            const port = await freePort();
            const d = path.join(dir, String(port));
            fs.mkdirSync(d);
            const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
                '--cluster-config-file', 'nodes.conf', '--dir', d, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
            masters.push({ port, proc });
            process.on('exit', () => proc.kill('SIGKILL')); /* also when the file crashes */
        }
        for (const m of masters)
            await waitUntil(() => { try { return cli(m.port, 'PING') === 'PONG'; } catch { return false; } }, { timeoutMs: 10000, what: `redis ${m.port}` });
        execFileSync('redis-cli', ['--cluster', 'create', ...masters.map((m) => `127.0.0.1:${m.port}`), '--cluster-replicas', '0', '--cluster-yes'],
            { stdio: 'ignore', timeout: 30000 });
        for (const m of masters)
            await waitUntil(() => /cluster_state:ok/.test(cli(m.port, 'CLUSTER', 'INFO')), { timeoutMs: 15000, what: `cluster ok on ${m.port}` });
        /* Two nodes with different seeds, the first seed of node B does not exist. */
        const dead = await freePort();
        nodeA = await startServer(['--redis', `redis://127.0.0.1:${masters[0].port}`]);
        nodeB = await startServer(['--redis', `redis://127.0.0.1:${dead},127.0.0.1:${masters[1].port}`]);
        for (const n of [nodeA, nodeB])
            await waitUntil(async () => (await fetch(`${n.url}/readyz`)).status === 200, { timeoutMs: 15000, what: 'readyz' });
    });

    after(async () => {
        /* Every node and master is stopped before any unclean exit is reported. */
        const stopped = await Promise.allSettled([nodeA, nodeB].map((n) => n && n.stop()));
        for (const m of masters) {
            m.proc.kill('SIGKILL');
            await new Promise((r) => (m.proc.exitCode !== null || m.proc.signalCode !== null ? r() : m.proc.once('exit', r)));
        }
        if (dir) fs.rmSync(dir, { recursive: true, force: true });
        const bad = stopped.filter((x) => x.status === 'rejected');
        if (bad.length)
            throw new Error(bad.map((x) => x.reason.message).join('\n\n'));
    });

    /** The master (index in masters) whose slots hold the channel's stream. */
    function ownerOf(channel) {
        const key = `pe:{${channel}}`;
        return masters.findIndex((m) => cli(m.port, 'EXISTS', key) === '1');
    }

    it('channels spread over the masters; SSE, WebSocket and poll on node B get what node A stored', { timeout: 60000 }, async (t) => {
        const chans = Array.from({ length: 12 }, () => uniqueChannel('cl'));
        const sse = await openSSE(nodeB.url, `/sse?${chans.map((c) => `channel=${c}`).join('&')}`, { t });
        await sse.waitLive(10000);
        const ws = await openWs(nodeB.url, `/ws?${chans.map((c) => `channel=${c}`).join('&')}`, { t });
        await ws.waitFor(() => ws.ops().filter((o) => o.op === 'subscribed').length === chans.length, 10000, 'subscribed x12');
        /* Five rounds over the twelve channels, each round published concurrently and through
         * the two nodes in turn: per channel, the acknowledged IDs in round order. */
        const ROUNDS = 5;
        const acked = new Map(chans.map((c) => [c, []]));
        for (let r = 0; r < ROUNDS; r++) {
            const via = r % 2 === 0 ? nodeA : nodeB;
            const got = await Promise.all(chans.map((c, i) => publishOk(via.url, c, { i, r })));
            chans.forEach((c, i) => acked.get(c).push(got[i]));
        }
        const total = chans.length * ROUNDS;
        const owners = new Set(chans.map(ownerOf));
        assert.ok(owners.size >= 2, `12 channels landed on ${owners.size} master(s)`);
        assert.ok(![...owners].includes(-1), 'every stream exists on a master');
        /* Order holds per channel: messages of channels on different masters reach the subscriber
         * node over different cluster-bus links, interleaved in any order. A sentinel behind the
         * last round on every channel shows that nothing more (a duplicate) follows. */
        const sentinels = await Promise.all(chans.map((c) => publishOk(nodeA.url, c, { sentinel: true })));
        const perChannel = (envs, c) => envs.filter((e) => e.channel === c && !e.data.sentinel).map((e) => e.id);
        const lastOf = (envs, c) => envs.filter((e) => e.channel === c).at(-1)?.id;
        await sse.waitFor(() => chans.every((c, i) => lastOf(sse.envelopes(), c) === sentinels[i]), 15000, `sse: ${total} messages and the sentinels`);
        const wsEnvs = () => ws.ops().filter((o) => o.op === 'message');
        await ws.waitFor(() => chans.every((c, i) => lastOf(wsEnvs(), c) === sentinels[i]), 15000, `ws: ${total} messages and the sentinels`);
        for (const c of chans) {
            assert.deepEqual(perChannel(sse.envelopes(), c), acked.get(c), `sse: channel ${c} (master ${ownerOf(c)}) in order, once each`);
            assert.deepEqual(perChannel(wsEnvs(), c), acked.get(c), `ws: channel ${c} (master ${ownerOf(c)}) in order, once each`);
        }
        assert.equal(sse.envelopes().length, total + chans.length);
        assert.equal(wsEnvs().length, total + chans.length);
        const p = await pollRequest(nodeB.url, `${chans.slice(0, 3).map((c) => `channel=${c}`).join('&')}&since=0`);
        assert.equal(p.status, 200);
        for (const [i, c] of chans.slice(0, 3).entries())
            assert.deepEqual(p.json.messages.filter((m) => m.channel === c).map((m) => m.id), [...acked.get(c), sentinels[i]], `poll: channel ${c}`);
        /* Resume on node A with node B's cursor: nothing again, then exactly the new one. */
        const more = await publishOk(nodeB.url, chans[1], { more: true });
        const r = await pollRequest(nodeA.url, `channel=${chans[0]}&channel=${chans[1]}&channel=${chans[2]}&since=${encodeURIComponent(p.json.cursor)}`);
        assert.deepEqual(r.json.messages.map((m) => m.id), [more]);
    });

    it('keyed publishes: the key record shares the stream\'s slot, and one key answers one ID from either node', { timeout: 60000 }, async () => {
        const chans = Array.from({ length: 6 }, () => uniqueChannel('clkey'));
        for (const c of chans) {
            const a = await publish(nodeA.url, c, { c }, { 'idempotency-key': 'k-1' });
            assert.equal(a.status, 200, `${c}: ${a.text}`);
            const b = await publish(nodeB.url, c, { again: true }, { 'idempotency-key': 'k-1' });
            assert.equal(b.status, 200, `${c}: ${b.text}`);
            assert.equal(b.json.id, a.json.id, `${c}: the repeat on node B answers node A's ID`);
            const owner = ownerOf(c);
            assert.equal(cli(masters[owner].port, 'GET', `pe:{${c}}:idem:k-1`), a.json.id, `${c}: the record is on the stream's master`);
            assert.equal(cli(masters[owner].port, 'XLEN', `pe:{${c}}`), '1', `${c}: one entry`);
        }
        assert.ok(new Set(chans.map(ownerOf)).size >= 2, 'the channels spread over the masters');
    });

    it('a slot migrated while pushedge runs: ASK during the move, MOVED after it; nothing lost or repeated', { timeout: 60000 }, async (t) => {
        const ch = uniqueChannel('mig');
        const ids = [await publishOk(nodeA.url, ch, { n: 0 })];
        const src = ownerOf(ch);
        const dst = (src + 1) % 3;
        const sse = await openSSE(nodeB.url, `/sse?channel=${ch}&since=0`, { t });
        await sse.waitLive(10000);
        const slot = cli(masters[src].port, 'CLUSTER', 'KEYSLOT', `pe:{${ch}}`);
        const srcId = cli(masters[src].port, 'CLUSTER', 'MYID'), dstId = cli(masters[dst].port, 'CLUSTER', 'MYID');
        cli(masters[dst].port, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', srcId);
        cli(masters[src].port, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', dstId);
        ids.push(await publishOk(nodeA.url, ch, { n: 1 })); /* the key is still on the source */
        cli(masters[src].port, 'MIGRATE', '127.0.0.1', String(masters[dst].port), `pe:{${ch}}`, '0', '5000');
        ids.push(await publishOk(nodeA.url, ch, { n: 2 })); /* ASK: the key moved, the slot not yet */
        for (const m of masters)
            cli(m.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', dstId);
        ids.push(await publishOk(nodeA.url, ch, { n: 3 })); /* MOVED */
        ids.push(await publishOk(nodeB.url, ch, { n: 4 }));
        assert.equal(ownerOf(ch), dst, 'the stream now lives on the destination');
        assert.equal(cli(masters[dst].port, 'XLEN', `pe:{${ch}}`), '5');
        await sse.waitFor(() => sse.envelopes().length >= 5, 10000, '5 messages');
        assert.deepEqual(sse.envelopes().map((e) => e.id), ids);
        const p = await pollRequest(nodeB.url, `channel=${ch}&since=0`);
        assert.deepEqual(p.json.messages.map((m) => m.data.n), [0, 1, 2, 3, 4]);
    });
});
