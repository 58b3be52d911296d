/*
 * Command line, environment and config file (docs/operations.md "Running", `pushedge --help`).
 *
 * Covered: --help lists every option; --version; invalid options and values end with one
 * line on stderr naming the option and exit status 2 (from the command line, the environment
 * and the config file); PUSHEDGE_<NAME> variables are used and the command line overrides
 * them; --config FILE (a JSON object keyed by option names) is used, and the environment and
 * the command line override it; --listen is repeatable.
 *
 * Not covered here: the effect of every option on behaviour (the other files start servers
 * with the options they exercise), --redis (the Redis suite), --threads beyond validation.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, httpRequest, openSSE, publish, rawExchange, runOnce, startServer, waitUntil } from './lib.mjs';

const ALL_OPTIONS = [
    'listen',
    'presence-max-members',
    'presence-node-timeout',
    'redis',
    'threads',
    'history-size',
    'history-ttl',
    'poll-timeout',
    'ping-interval',
    'max-message-size',
    'api-key',
    'drain-timeout',
    'drain-spread',
    'ws-echo',
    'config',
    'listen-tls',
    'tls-cert',
    'tls-key',
];

const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-cli-'));
process.on('exit', () => fs.rmSync(tmpDir, { recursive: true, force: true }));
let configSeq = 0;
function writeConfig(content) {
    const p = path.join(tmpDir, `config-${++configSeq}.json`);
    fs.writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
    return p;
}

/** A JSON string literal whose serialized form is exactly n bytes. */
function jsonStringOfBytes(n) {
    return 'x'.repeat(n - 2);
}

/** Checks the "invalid option" outcome: exit 2, exactly one stderr line naming `name`. */
function checkRejected(r, name, what) {
    assert.equal(r.timedOut, false, `${what}: the process did not exit within 5 s (it should refuse to start)`);
    assert.equal(r.code, 2, `${what}: exit status ${r.code} (signal ${r.signal}), stderr: ${JSON.stringify(r.stderr)}`);
    const lines = r.stderr.replace(/\n$/, '').split('\n');
    assert.equal(lines.length, 1, `${what}: stderr must be one line, got ${JSON.stringify(r.stderr)}`);
    assert.ok(lines[0].trim().length > 0, `${what}: stderr is empty`);
    assert.ok(lines[0].toLowerCase().includes(name.toLowerCase()), `${what}: stderr must name "${name}": ${JSON.stringify(lines[0])}`);
}

/** Publishes a JSON string of exactly `bytes` bytes; returns the status. */
async function publishSized(url, bytes) {
    const r = await publish(url, 'cli-size', jsonStringOfBytes(bytes));
    return r.status;
}

describe('--help and --version', () => {
    it('--help lists every option and exits 0', { timeout: 10000 }, async () => {
        const r = await runOnce(['--help']);
        assert.equal(r.code, 0, `exit ${r.code}, stderr ${r.stderr}`);
        const out = r.stdout + r.stderr;
        for (const opt of ALL_OPTIONS)
            assert.ok(out.includes(`--${opt}`), `--help does not mention --${opt}:\n${out}`);
        assert.ok(out.includes('--help') && out.includes('--version'), '--help should list --help and --version');
        assert.ok(r.stdout.length > 0, '--help should print to stdout');
    });

    it('--version prints a version and exits 0', { timeout: 10000 }, async () => {
        const r = await runOnce(['--version']);
        assert.equal(r.code, 0, `exit ${r.code}, stderr ${r.stderr}`);
        assert.match(r.stdout, /\d+\.\d+\.\d+/);
        assert.ok(r.stdout.trim().split('\n').length <= 2, `--version should be short: ${r.stdout}`);
    });
});

describe('invalid options and values exit 2 with one line naming the option', () => {
    const cases = [
        [['--threads', '0'], 'threads'],
        [['--threads', 'abc'], 'threads'],
        [['--threads', '-3'], 'threads'],
        [['--threads', '4x'], 'threads'],
        [['--threads'], 'threads'],
        [['--history-size', '-1'], 'history-size'],
        [['--history-size', '99999999999999999999999999'], 'history-size'],
        [['--history-ttl', 'soon'], 'history-ttl'],
        [['--poll-timeout', '-5'], 'poll-timeout'],
        [['--ping-interval', 'x'], 'ping-interval'],
        [['--max-message-size', 'big'], 'max-message-size'],
        [['--drain-timeout', '-1'], 'drain-timeout'],
        [['--listen', 'nonsense'], 'listen'],
        [['--listen', '127.0.0.1:99999'], 'listen'],
        [['--listen', '127.0.0.1:'], 'listen'],
        [['--redis', 'http://example/'], 'redis'],
        [['--unknown'], 'unknown'],
        [['--config', '/nonexistent/pushedge-config.json'], 'config'],
    ];
    for (const [args, name] of cases) {
        it(args.join(' '), { timeout: 10000 }, async () => {
            const port = await freePort();
            const r = await runOnce(['--listen', `127.0.0.1:${port}`, ...args]);
            checkRejected(r, name, args.join(' '));
        });
    }

    it('an invalid value in the environment is rejected too (PUSHEDGE_THREADS=abc)', { timeout: 10000 }, async () => {
        const port = await freePort();
        const r = await runOnce(['--listen', `127.0.0.1:${port}`], { PUSHEDGE_THREADS: 'abc' });
        checkRejected(r, 'threads', 'PUSHEDGE_THREADS=abc');
    });
});

describe('environment variables', () => {
    it('PUSHEDGE_LISTEN is used when --listen is absent', { timeout: 20000 }, async (t) => {
        const port = await freePort();
        const srv = await startServer([], { PUSHEDGE_LISTEN: `127.0.0.1:${port}` }, { listen: false, port });
        t.after(() => srv.stop());
        const r = await httpRequest(srv.url, '/healthz');
        assert.equal(r.status, 200);
    });

    it('--listen on the command line overrides PUSHEDGE_LISTEN', { timeout: 20000 }, async (t) => {
        /* Two free-port probes can return the same port: draw again until they differ. */
        let envPort, srv;
        for (let i = 0; i < 5; i++) {
            envPort = await freePort();
            srv = await startServer([], { PUSHEDGE_LISTEN: `127.0.0.1:${envPort}` });
            if (srv.port !== envPort)
                break;
            await srv.stop();
        }
        t.after(() => srv.stop());
        assert.notEqual(srv.port, envPort);
        await assert.rejects(
            httpRequest(`http://127.0.0.1:${envPort}`, '/healthz', { timeoutMs: 2000 }),
            /ECONNREFUSED/,
            'the environment address must not be served when --listen is given',
        );
    });

    it('PUSHEDGE_MAX_MESSAGE_SIZE is used; --max-message-size overrides it', { timeout: 30000 }, async (t) => {
        const a = await startServer([], { PUSHEDGE_MAX_MESSAGE_SIZE: '100' });
        t.after(() => a.stop());
        assert.equal(await publishSized(a.url, 100), 200);
        assert.equal(await publishSized(a.url, 101), 413);

        const b = await startServer(['--max-message-size', '1000'], { PUSHEDGE_MAX_MESSAGE_SIZE: '100' });
        t.after(() => b.stop());
        assert.equal(await publishSized(b.url, 500), 200, 'the command line must win over the environment');
        assert.equal(await publishSized(b.url, 1001), 413);
    });

    it('PUSHEDGE_API_KEY is used', { timeout: 20000 }, async (t) => {
        const srv = await startServer([], { PUSHEDGE_API_KEY: 'env-key' });
        t.after(() => srv.stop());
        assert.equal((await publish(srv.url, 'k', 1)).status, 401);
        assert.equal((await publish(srv.url, 'k', 1, { authorization: 'Bearer env-key' })).status, 200);
    });

    /* The WebSocket transport (issue 3) serves /ws/echo; until it lands this is a todo. */
    it('PUSHEDGE_WS_ECHO enables the boolean --ws-echo', { timeout: 20000, todo: process.env.PUSHEDGE_HAS_WS !== '1' }, async (t) => {
        const srv = await startServer([], { PUSHEDGE_WS_ECHO: '1' });
        t.after(() => srv.stop());
        const handshake =
            'GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
            'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
        const r = await rawExchange(srv.port, handshake, { timeoutMs: 3000, until: (text) => text.includes('\r\n\r\n') });
        assert.equal(r.status, 101, `GET /ws/echo must upgrade with PUSHEDGE_WS_ECHO=1; got ${JSON.stringify(r.text.slice(0, 200))}`);
    });
});

describe('--config FILE', () => {
    it('is used: {"max-message-size": 100}', { timeout: 20000 }, async (t) => {
        const cfg = writeConfig({ 'max-message-size': 100 });
        const srv = await startServer(['--config', cfg]);
        t.after(() => srv.stop());
        assert.equal(await publishSized(srv.url, 100), 200);
        assert.equal(await publishSized(srv.url, 101), 413);
    });

    it('is used: {"history-size": 5}', { timeout: 20000 }, async (t) => {
        const cfg = writeConfig({ 'history-size': 5 });
        const srv = await startServer(['--config', cfg]);
        t.after(() => srv.stop());
        for (let i = 1; i <= 8; i++)
            assert.equal((await publish(srv.url, 'hist', { n: i })).status, 200);
        const sse = await openSSE(srv.url, '/sse?channel=hist&since=0', { t });
        await sse.next((e) => e.type === 'message' && JSON.parse(e.data).data.n === 8, 5000, 'message 8');
        const ns = sse.envelopes().map((e) => e.data.n);
        assert.deepEqual(ns, [4, 5, 6, 7, 8], 'history-size 5 from the config file keeps the last 5');
    });

    it('PUSHEDGE_CONFIG names the file', { timeout: 20000 }, async (t) => {
        const cfg = writeConfig({ 'max-message-size': 100 });
        const srv = await startServer([], { PUSHEDGE_CONFIG: cfg });
        t.after(() => srv.stop());
        assert.equal(await publishSized(srv.url, 101), 413);
    });

    it('the environment overrides the config file', { timeout: 20000 }, async (t) => {
        const cfg = writeConfig({ 'max-message-size': 100 });
        const srv = await startServer(['--config', cfg], { PUSHEDGE_MAX_MESSAGE_SIZE: '1000' });
        t.after(() => srv.stop());
        assert.equal(await publishSized(srv.url, 500), 200);
    });

    it('the command line overrides the config file and the environment', { timeout: 20000 }, async (t) => {
        const cfg = writeConfig({ 'max-message-size': 100 });
        const srv = await startServer(['--config', cfg, '--max-message-size', '2000'], { PUSHEDGE_MAX_MESSAGE_SIZE: '1000' });
        t.after(() => srv.stop());
        assert.equal(await publishSized(srv.url, 1500), 200);
        assert.equal(await publishSized(srv.url, 2001), 413);
    });

    it('the command line overrides the config file whatever the order of arguments', { timeout: 20000 }, async (t) => {
        const cfg = writeConfig({ 'max-message-size': 100 });
        const srv = await startServer(['--max-message-size', '2000', '--config', cfg]);
        t.after(() => srv.stop());
        assert.equal(await publishSized(srv.url, 1500), 200);
    });

    const invalid = [
        ['not JSON', '{"history-size": 5', 'config'],
        ['not an object', '[1, 2]', 'config'],
        ['an invalid value', { threads: 0 }, 'threads'],
        ['a value of the wrong type', { 'history-size': 'many' }, 'history-size'],
        ['an empty file', '', 'config'],
    ];
    for (const [what, content, name] of invalid) {
        it(`an invalid config file (${what}) exits 2`, { timeout: 10000 }, async () => {
            const cfg = writeConfig(content);
            const port = await freePort();
            const r = await runOnce(['--listen', `127.0.0.1:${port}`, '--config', cfg]);
            checkRejected(r, name, `config ${what}`);
        });
    }
});

describe('--listen is repeatable', () => {
    it('serves every address given', { timeout: 20000 }, async (t) => {
        const second = await freePort();
        const srv = await startServer(['--listen', `127.0.0.1:${second}`]);
        t.after(() => srv.stop());
        await waitUntil(
            async () => (await httpRequest(`http://127.0.0.1:${second}`, '/healthz', { timeoutMs: 1000 })).status === 200,
            { timeoutMs: 5000, what: `GET /healthz on the second --listen port ${second}` },
        );
        assert.equal((await httpRequest(srv.url, '/healthz')).status, 200);
    });
});
