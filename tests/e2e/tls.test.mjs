/*
 * TLS listeners (--listen-tls, --tls-cert, --tls-key; docs/operations.md "TLS").
 *
 * Covered: handshakes with `openssl s_client` (TLS 1.2 and 1.3 verified against a throwaway CA
 * made at test time, ALPN h2 and http/1.1 and none, TLS 1.1 and a CBC cipher refused, session
 * resumption by ticket on 1.2 and 1.3 and by session ID on 1.2); curl over HTTP/1.1 and HTTP/2
 * to /api/publish, /poll and /sse; node clients: https SSE, SSE over HTTP/2 with TLS, wss with
 * permessage-deflate; a client that sends nothing or stops mid-handshake closed by the 10 s
 * handshake deadline and counted; a garbage probe (random bytes, mutated and truncated
 * ClientHellos, oversized records, garbage after a completed handshake, a renegotiation
 * attempt) after which the server lives and has freed every connection; the certificate
 * reloaded on SIGHUP with connections open (they keep working, new handshakes see the new
 * serial) and a bad certificate at reload keeping the old one; bad files at start exit 2; a
 * publish body without credentials refused from its head (edge/front.c on decrypted bytes); idle
 * connections (wss, https SSE, SSE over HTTP/2) giving their buffers back and then receiving,
 * answering pings and taking a burst (pushedge_tls_idle_releases_total).
 * The resume matrix over TLS is e2e-matrix_tls (matrix.test.mjs with E2E_TLS=1).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import {
    delay,
    freePort,
    getMetrics,
    httpRequest,
    metricValue,
    openSSE,
    publishOk,
    prng,
    runOnce,
    skipFileUnless,
    startServer,
    testCerts,
    tlsClientOptions,
    uniqueChannel,
    waitUntil,
} from './lib.mjs';
import { openWs } from './wslib.mjs';

skipFileUnless(spawnSync('openssl', ['version']).status !== 0 && 'openssl is not installed');
const HAVE_CURL = spawnSync('curl', ['--version']).status === 0;

const certs = testCerts();
let srv, tport, base;

before(async () => {
    tport = await freePort();
    srv = await startServer(['--listen-tls', `127.0.0.1:${tport}`, '--tls-cert', certs.cert, '--tls-key', certs.key]);
    base = `https://127.0.0.1:${tport}`;
});
after(async () => {
    if (srv)
        await srv.stop();
});

/** Runs openssl s_client; stdin stays open holdMs (so a TLS 1.3 ticket can arrive). */
function sClient(port, args, { holdMs = 300, input = '' } = {}) {
    return new Promise((resolve) => {
        const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', certs.ca, ...args], {
            stdio: ['pipe', 'pipe', 'pipe'],
        });
        let out = '';
        p.stdout.on('data', (c) => (out += c));
        p.stderr.on('data', (c) => (out += c));
        const timer = setTimeout(() => p.kill('SIGKILL'), 10000);
        p.stdin.write(input);
        setTimeout(() => p.stdin.end(), holdMs);
        p.stdin.on('error', () => {});
        p.on('close', (code) => {
            clearTimeout(timer);
            resolve({ code, out });
        });
    });
}

function curl(args) {
    return new Promise((resolve) => {
        const p = spawn('curl', ['-sS', '--cacert', certs.ca, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '', err = '';
        p.stdout.on('data', (c) => (out += c));
        p.stderr.on('data', (c) => (err += c));
        p.on('close', (code) => resolve({ code, out, err }));
    });
}

/** The serial number (hex, upper case) of the certificate a new handshake sees. */
function peerSerial(port) {
    return new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port, ...tlsClientOptions() }, () => {
            const serial = s.getPeerCertificate().serialNumber;
            s.destroy();
            resolve(serial);
        });
        s.on('error', reject);
        s.setTimeout(5000, () => s.destroy(new Error('no handshake within 5 s')));
    });
}

describe('TLS handshakes (openssl s_client)', () => {
    for (const version of ['-tls1_2', '-tls1_3']) {
        for (const alpn of ['h2', 'http/1.1']) {
            it(`${version} with ALPN ${alpn}: verified against the CA, ALPN answered`, { timeout: 15000 }, async () => {
                const r = await sClient(tport, [version, '-alpn', alpn, '-verify_return_error', '-servername', 'localhost']);
                assert.match(r.out, /Verify return code: 0 \(ok\)/, r.out);
                assert.match(r.out, new RegExp(`Protocol\\s*: TLSv1\\.${version === '-tls1_2' ? 2 : 3}`), r.out);
                assert.match(r.out, new RegExp(`ALPN protocol: ${alpn.replace('/', '\\/')}`), r.out);
            });
        }
    }

    it('h2 preferred when both are offered; no ALPN at all still handshakes (HTTP/1.1)', { timeout: 15000 }, async () => {
        const both = await sClient(tport, ['-alpn', 'http/1.1,h2']);
        assert.match(both.out, /ALPN protocol: h2/, both.out);
        const none = await sClient(tport, [], { input: 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', holdMs: 1500 });
        assert.match(none.out, /No ALPN negotiated/, none.out);
        assert.match(none.out, /HTTP\/1\.1 200/, none.out);
    });

    it('TLS 1.2 uses ECDHE with an AEAD cipher; TLS 1.1 and CBC ciphers are refused', { timeout: 15000 }, async () => {
        const ok = await sClient(tport, ['-tls1_2']);
        assert.match(ok.out, /Cipher is ECDHE-(ECDSA|RSA)-(AES\d+-GCM|CHACHA20-POLY1305)/, ok.out);
        const old = await sClient(tport, ['-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0']);
        assert.match(old.out, /Cipher is \(NONE\)/, old.out);
        assert.doesNotMatch(old.out, /New, TLSv1/, old.out);
        const cbc = await sClient(tport, ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256']);
        assert.doesNotMatch(cbc.out, /New, TLSv1/, cbc.out);
        assert.doesNotMatch(cbc.out, /Cipher is ECDHE/, cbc.out);
    });

    for (const [what, args] of [
        ['TLS 1.3 ticket', ['-tls1_3']],
        ['TLS 1.2 ticket', ['-tls1_2']],
        ['TLS 1.2 session ID (no ticket)', ['-tls1_2', '-no_ticket']],
    ]) {
        it(`session resumption: ${what}`, { timeout: 15000 }, async () => {
            const sess = path.join(certs.dir, `sess-${crypto.randomUUID()}`);
            const first = await sClient(tport, [...args, '-sess_out', sess], { holdMs: 500 });
            assert.match(first.out, /New, TLSv1/, first.out);
            const second = await sClient(tport, [...args, '-sess_in', sess]);
            assert.match(second.out, /Reused, TLSv1/, second.out);
        });
    }
});

describe('HTTP over TLS', () => {
    it('curl over HTTP/1.1 and HTTP/2: publish, poll, SSE', { skip: !HAVE_CURL && 'curl is not installed', timeout: 30000 }, async () => {
        for (const proto of ['--http1.1', '--http2']) {
            const ch = uniqueChannel('curl');
            const pub = await curl([proto, '-w', '\n%{http_version}', '-H', 'content-type: application/json', '--data', '{"n":1}',
                `${base}/api/publish?channel=${ch}`]);
            assert.equal(pub.code, 0, pub.err);
            const [body, version] = pub.out.split('\n');
            assert.equal(version, proto === '--http2' ? '2' : '1.1');
            assert.ok(JSON.parse(body).id, body);
            const poll = await curl([proto, `${base}/poll?channel=${ch}&since=0`]);
            assert.deepEqual(JSON.parse(poll.out).messages.map((m) => m.data), [{ n: 1 }], poll.out);
            const sse = await curl([proto, '-N', '--max-time', '2', `${base}/sse?channel=${ch}&since=0`]);
            assert.match(sse.out, /data: \{.*"n":1/, sse.out);
        }
    });

    it('node https SSE (HTTP/1.1) and SSE over HTTP/2 with TLS receive published messages', { timeout: 15000 }, async (t) => {
        const ch = uniqueChannel('sse');
        const h1 = await openSSE(base, `/sse?channel=${ch}`, { t });
        assert.equal(h1.status, 200);
        const session = http2.connect(base, tlsClientOptions());
        t.after(() => session.destroy());
        const h2 = await openSSE(base, `/sse?channel=${ch}`, { t, session });
        assert.equal(h2.status, 200);
        assert.equal(session.alpnProtocol, 'h2');
        await h1.waitLive();
        await h2.waitLive();
        await publishOk(base, ch, { n: 7 });
        for (const c of [h1, h2])
            await c.next((e) => e.type === 'message' && JSON.parse(e.data).data.n === 7);
    });

    it('wss with permessage-deflate receives published messages, compressed ones too', { timeout: 15000 }, async (t) => {
        const ch = uniqueChannel('wss');
        const c = await openWs(base, `/ws?channel=${ch}`, { t, perMessageDeflate: true });
        assert.equal(c.ws.extensions, 'permessage-deflate');
        await c.waitFor(() => c.ops().find((o) => o.op === 'subscribed'));
        await publishOk(base, ch, { n: 1 });
        await publishOk(base, ch, { big: 'x'.repeat(2000) });
        await c.waitFor(() => c.ops().find((o) => o.op === 'message' && o.data.n === 1));
        await c.waitFor(() => c.ops().find((o) => o.op === 'message' && o.data.big?.length === 2000));
    });
});

describe('idle TLS connections give their buffers back (edge/tls.c, PE_TLS_IDLE_RELEASE_MS)', () => {
    const releases = async () => metricValue(await getMetrics(base), 'pushedge_tls_idle_releases_total') ?? 0;

    it('wss, https SSE and SSE over HTTP/2 are released when idle, then receive, answer pings and take bursts', { timeout: 60000 }, async (t) => {
        const ch = uniqueChannel('idle');
        const ws = await openWs(base, `/ws?channel=${ch}`, { t });
        await ws.waitFor(() => ws.ops().find((o) => o.op === 'subscribed'));
        const h1 = await openSSE(base, `/sse?channel=${ch}`, { t });
        const session = http2.connect(base, tlsClientOptions());
        t.after(() => session.destroy());
        const h2 = await openSSE(base, `/sse?channel=${ch}`, { t, session });
        await h1.waitLive();
        await h2.waitLive();
        const got = (n) => Promise.all([
            ws.waitFor(() => ws.ops().find((o) => o.op === 'message' && o.data.n === n), 5000, `wss message ${n}`),
            h1.next((e) => e.type === 'message' && JSON.parse(e.data).data.n === n, 5000, `https SSE message ${n}`),
            h2.next((e) => e.type === 'message' && JSON.parse(e.data).data.n === n, 5000, `h2 SSE message ${n}`),
        ]);
        /* Each round: the three connections (and the publisher's, closed) go idle and are
         * released within two checks; then a message reaches all three, and the wss client
         * writes (a ping) into a released connection and gets its pong. */
        for (let round = 1; round <= 3; ++round) {
            const r0 = await releases();
            await waitUntil(async () => (await releases()) >= r0 + 3, { timeoutMs: 10000, intervalMs: 200, what: `round ${round}: 3 idle releases` });
            await publishOk(base, ch, { n: round });
            await got(round);
            await new Promise((resolve, reject) => {
                const timer = setTimeout(() => reject(new Error('no pong within 5 s')), 5000);
                ws.ws.once('pong', () => {
                    clearTimeout(timer);
                    resolve();
                });
                ws.ws.ping('after-release');
            });
        }
        /* A burst after a release: 100 messages of 1-3 KiB back to back (batched writes, runs
         * coalesced into records), all received once and in order. */
        const r0 = await releases();
        await waitUntil(async () => (await releases()) >= r0 + 3, { timeoutMs: 10000, intervalMs: 200, what: 'idle releases before the burst' });
        const rnd = prng(14);
        for (let i = 0; i < 100; ++i)
            await publishOk(base, ch, { n: 100 + i, pad: 'p'.repeat(1000 + Math.floor(rnd() * 2000)) });
        await got(199);
        const wsNs = ws.ops().filter((o) => o.op === 'message').map((o) => o.data.n);
        assert.deepEqual(wsNs, [1, 2, 3, ...Array.from({ length: 100 }, (_, i) => 100 + i)]);
        /* A message of 50 KB: several records, reassembled. */
        const big = 'b'.repeat(50000);
        await publishOk(base, ch, { n: 300, big });
        await got(300);
        assert.equal(ws.ops().find((o) => o.op === 'message' && o.data.n === 300).data.big, big);
    });
});

/* A TLS record header announcing a 512-byte ClientHello, then only its first bytes. */
const PARTIAL_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 1, 2, 3, 4]);

function connectRaw(port) {
    return new Promise((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () => resolve(s));
        s.on('error', reject);
    });
}

function closedWithin(sock, ms) {
    return new Promise((resolve) => {
        if (sock.destroyed)
            return resolve(true);
        const timer = setTimeout(() => resolve(false), ms);
        sock.on('close', () => {
            clearTimeout(timer);
            resolve(true);
        });
        sock.on('error', () => {});
        sock.resume();
    });
}

/** The bytes of a real ClientHello (node's), caught by a local listener. */
function captureClientHello() {
    return new Promise((resolve) => {
        const server = net.createServer((s) => {
            s.once('data', (d) => {
                resolve(d);
                s.destroy();
                server.close();
            });
        });
        server.listen(0, '127.0.0.1', () => {
            const c = tls.connect({ host: '127.0.0.1', port: server.address().port, servername: 'localhost', ALPNProtocols: ['h2', 'http/1.1'] });
            c.on('error', () => {});
        });
    });
}

describe('handshake deadline and garbage', () => {
    it('a client that sends nothing, or stops mid-handshake, is closed within the 10 s deadline', { timeout: 30000 }, async () => {
        const t0 = Date.now();
        const silent = await connectRaw(tport);
        const stalled = await connectRaw(tport);
        stalled.write(PARTIAL_HELLO);
        const [a, b] = await Promise.all([closedWithin(silent, 13000), closedWithin(stalled, 13000)]);
        assert.ok(a, 'the silent client was not closed within 13 s');
        assert.ok(b, 'the client stopped mid-handshake was not closed within 13 s');
        assert.ok(Date.now() - t0 >= 8000, `closed after ${Date.now() - t0} ms: too early for the deadline`);
        const m = (await getMetrics(srv.clearUrl));
        assert.ok(metricValue(m, 'pushedge_tls_handshake_failures_total', { reason: 'timeout' }) >= 2);
    });

    it('garbage probe: random bytes, mutated/truncated ClientHellos, huge records, garbage after the handshake, renegotiation: all freed, server alive', { timeout: 90000 }, async () => {
        const rnd = prng(1234);
        const hello = await captureClientHello();
        const baseline = metricValue((await getMetrics(srv.clearUrl)), 'pushedge_open_connections');
        const kinds = [
            () => crypto.randomBytes(1 + Math.floor(rnd() * 20000)),
            () => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]), crypto.randomBytes(2000)]),
            () => Buffer.from([0x17, 0x03, 0x03, 0x40, 0x01, 0, 0, 0]),
            () => hello.subarray(0, Math.floor(rnd() * hello.length)),
            () => {
                const b = Buffer.from(hello);
                for (let i = 0; i < 1 + rnd() * 8; i++)
                    b[5 + Math.floor(rnd() * (b.length - 5))] ^= 1 + Math.floor(rnd() * 255);
                return b;
            },
            () => Buffer.concat([hello, crypto.randomBytes(3000)]),
            () => Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
        ];
        for (let round = 0; round < 8; round++) {
            const batch = [];
            for (let i = 0; i < 20; i++) {
                const bytes = kinds[(round * 20 + i) % kinds.length]();
                batch.push((async () => {
                    const s = await connectRaw(tport);
                    s.on('error', () => {});
                    s.end(bytes);
                    await closedWithin(s, 13000);
                    s.destroy();
                })());
            }
            /* Garbage records after a completed handshake, and a renegotiation request. */
            for (let i = 0; i < 3; i++) {
                batch.push(new Promise((resolve) => {
                    const raw = net.connect(tport, '127.0.0.1');
                    raw.on('error', () => {});
                    const s = tls.connect({ socket: raw, ...tlsClientOptions(), servername: 'localhost', maxVersion: i === 2 ? 'TLSv1.2' : 'TLSv1.3' }, () => {
                        if (i === 2) {
                            s.renegotiate({}, () => {});
                            setTimeout(() => raw.write(crypto.randomBytes(500)), 200);
                        } else {
                            raw.write(i === 0 ? crypto.randomBytes(3000) : Buffer.from([0x17, 0x03, 0x03, 0x00, 0x20, ...crypto.randomBytes(32)]));
                        }
                    });
                    s.on('error', () => {});
                    const timer = setTimeout(() => {
                        s.destroy();
                        resolve();
                    }, 5000);
                    s.on('close', () => {
                        clearTimeout(timer);
                        resolve();
                    });
                }));
            }
            await Promise.all(batch);
        }
        await waitUntil(async () => metricValue((await getMetrics(srv.clearUrl)), 'pushedge_open_connections') <= baseline, {
            timeoutMs: 15000,
            what: 'every probe connection freed',
        });
        assert.ok(metricValue((await getMetrics(srv.clearUrl)), 'pushedge_tls_handshake_failures_total', { reason: 'error' }) > 50);
        assert.equal(await peerSerial(tport), '1001', 'a normal handshake still works');
        const ch = uniqueChannel('after');
        await publishOk(base, ch, { ok: true });
    });
});

describe('request-head checks over TLS (edge/front.c on the decrypted bytes)', () => {
    it('a publish body without credentials is refused from its head over HTTPS (HTTP/1.1)', { timeout: 20000 }, async (t) => {
        const port = await freePort();
        const s = await startServer(['--api-key', 'k3y', '--listen-tls', `127.0.0.1:${port}`, '--tls-cert', certs.cert, '--tls-key', certs.key]);
        t.after(() => s.stop());
        const url = `https://127.0.0.1:${port}`;
        const before = metricValue(await getMetrics(s.clearUrl), 'pushedge_refused_heads_total');
        const body = JSON.stringify({ pad: 'x'.repeat(60000) });
        const h1 = await httpRequest(url, '/api/publish?channel=a', { method: 'POST', body, headers: { 'content-type': 'application/json' } });
        assert.equal(h1.status, 401, h1.text);
        const after1 = metricValue(await getMetrics(s.clearUrl), 'pushedge_refused_heads_total');
        assert.ok(after1 > before, `the HTTP/1.1 head was refused by front.c (refused_heads ${before} -> ${after1})`);
        const ok = await httpRequest(url, '/api/publish?channel=a', { method: 'POST', body, headers: { 'content-type': 'application/json', authorization: 'Bearer k3y' } });
        assert.equal(ok.status, 200, ok.text);
    });
});

describe('certificate reload (SIGHUP)', () => {
    it('connections survive; new handshakes see the new serial; a bad file keeps the old one', { timeout: 40000 }, async (t) => {
        const dir = fs.mkdtempSync(path.join(certs.dir, 'reload-'));
        const cert = path.join(dir, 'cert.pem'), key = path.join(dir, 'key.pem');
        fs.copyFileSync(certs.cert, cert);
        fs.copyFileSync(certs.key, key);
        const port = await freePort();
        const s = await startServer(['--listen-tls', `127.0.0.1:${port}`, '--tls-cert', cert, '--tls-key', key]);
        t.after(() => s.stop());
        const url = `https://127.0.0.1:${port}`;
        assert.equal(await peerSerial(port), '1001');

        const ch = uniqueChannel('reload');
        const ws = await openWs(url, `/ws?channel=${ch}`, { t, perMessageDeflate: true });
        await ws.waitFor(() => ws.ops().find((o) => o.op === 'subscribed'));
        const sse = await openSSE(url, `/sse?channel=${ch}`, { t });
        await sse.waitLive();
        const session = http2.connect(url, tlsClientOptions());
        t.after(() => session.destroy());
        const h2 = await openSSE(url, `/sse?channel=${ch}`, { t, session });
        await h2.waitLive();

        certs.issue('0x2002', path.join(dir, 'new.pem'));
        fs.renameSync(path.join(dir, 'new.pem'), cert);
        s.proc.kill('SIGHUP');
        await waitUntil(async () => (await peerSerial(port)) === '2002', { timeoutMs: 5000, what: 'the new certificate served' });
        await publishOk(url, ch, { n: 1 });
        await ws.waitFor(() => ws.ops().find((o) => o.op === 'message' && o.data.n === 1));
        await sse.next((e) => e.type === 'message' && JSON.parse(e.data).data.n === 1);
        await h2.next((e) => e.type === 'message' && JSON.parse(e.data).data.n === 1);

        fs.writeFileSync(cert, 'not a certificate\n');
        s.proc.kill('SIGHUP');
        await waitUntil(() => /still serving the previous certificate/.test(s.output().stderr), { timeoutMs: 5000, what: 'the reload error logged' });
        assert.equal(await peerSerial(port), '2002', 'the previous certificate is kept');
        await publishOk(url, ch, { n: 2 });
        await ws.waitFor(() => ws.ops().find((o) => o.op === 'message' && o.data.n === 2));
        await sse.next((e) => e.type === 'message' && JSON.parse(e.data).data.n === 2);
        await h2.next((e) => e.type === 'message' && JSON.parse(e.data).data.n === 2);
    });

    it('bad files at start: exit 2 with one line naming the option', { timeout: 20000 }, async () => {
        const port = await freePort();
        const bad = path.join(certs.dir, 'bad.pem');
        fs.writeFileSync(bad, 'garbage\n');
        for (const [args, needle] of [
            [['--tls-cert', bad, '--tls-key', certs.key], '--tls-cert'],
            [['--tls-cert', path.join(certs.dir, 'missing.pem'), '--tls-key', certs.key], '--tls-cert'],
            [['--tls-cert', certs.cert, '--tls-key', bad], '--tls-key'],
            [['--tls-cert', certs.cert, '--tls-key', certs.caKey], '--tls-key'],
        ]) {
            const r = await runOnce(['--listen-tls', `127.0.0.1:${port}`, ...args]);
            assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}; ${r.stderr}`);
            const lines = r.stderr.trim().split('\n').filter((l) => /pushedge:/.test(l));
            assert.equal(lines.length, 1, r.stderr);
            assert.ok(lines[0].includes(needle), r.stderr);
        }
    });
});
