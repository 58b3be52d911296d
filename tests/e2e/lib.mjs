/*
 * Harness for the pushedge end-to-end tests (node:test, Node 20 built-ins only).
 *
 * - startServer(): spawns the binary named by $PUSHEDGE_BIN on a free loopback port, waits
 *   for GET /healthz == 200 (GET /readyz when E2E_ENGINE=redis added --redis; bounded),
 *   captures its output, and returns a handle whose
 *   stop() sends a signal and waits (bounded) for the exit, SIGKILLing past the bound.
 * - httpRequest() / publish(): plain HTTP/1.1 (a fresh connection each) or HTTP/2 requests.
 * - openSSE(): an EventSource-like client that parses text/event-stream itself, following
 *   the WHATWG parsing rules, and records everything it saw in order.
 * - rawExchange() / rawConnect(): net sockets for malformed HTTP.
 * - waitUntil(): the only way tests wait for state: a bounded poll of something observable.
 *
 * Environment: PUSHEDGE_BIN (required) names the binary; E2E_SERVER_ARGS adds arguments to
 * every server started (for example "--threads 1"); CI=true turns every skip for a missing
 * program or service into a failure naming it (unavailable()). E2E_TLS=1 gives every server a
 * TLS listener too (a throwaway CA and certificate made with openssl, testCerts()) and makes
 * its `url` https:// (WebSocket clients then use wss://); /healthz is still asked in clear.
 *
 * Every server's end is checked: stop() throws unless the process exited with code 0 (or what
 * the test declared: stop(sig, {expectCode}) / {expectSignal}) and its output holds no
 * sanitizer or runtime-error report; a server its test never stopped is stopped and checked
 * by a root after() hook, which fails the file naming it.
 *
 * Every wait in here is bounded in time; nothing sleeps for a fixed time to "let things
 * settle".
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';

export { delay };

const HOST = '127.0.0.1';

/** True in CI (CI=true): nothing may be skipped for want of a program or service. */
export const CI = process.env.CI === 'true';

/**
 * Ends a test file that cannot run on this machine before any test, when `reason` (what is
 * missing) is truthy: exit status 77, meson's SKIP (meson runs each file directly, `node FILE`;
 * under `node --test`, which turns any non-zero status into a failure, it exits 0 after saying
 * why). With CI=true it is a failure naming what is missing. Call it at the top of the file.
 */
export function skipFileUnless(reason) {
    if (!reason)
        return;
    if (CI) {
        console.log(`not ok - CI=true forbids skipping: ${reason}`);
        process.exit(1);
    }
    console.log(`skipped: ${reason}`);
    process.exit(process.env.NODE_TEST_CONTEXT ? 0 : 77);
}

/* The Redis variant of a suite without a Redis to talk to. */
skipFileUnless(process.env.E2E_ENGINE === 'redis' && !process.env.PUSHEDGE_TEST_REDIS_URL &&
    'E2E_ENGINE=redis needs a Redis: PUSHEDGE_TEST_REDIS_URL is not set (tests/run.sh starts a private redis-server when redis-server is installed)');

/**
 * The skip option for a suite or case that needs something this machine may lack: false when
 * `reason` is falsy (nothing missing), else `reason` (skipped). With CI=true a missing
 * dependency is a failure: a failing case named after the reason is registered where the
 * call is made, and the dependent suite is still skipped (it could only fail obscurely).
 * Use it in a describe()/it() options object: { skip: unavailable(!haveX && 'X is not installed') }.
 */
export function unavailable(reason) {
    if (!reason)
        return false;
    if (CI)
        it(`required in CI: ${reason}`, () => {
            throw new Error(`CI=true forbids skipping: ${reason}`);
        });
    return reason;
}

/**
 * For a case that finds out at run time that something is missing: skips it, or with CI=true
 * throws an error naming what is missing.
 */
export function skipOrFail(t, reason) {
    if (CI)
        throw new Error(`CI=true forbids skipping: ${reason}`);
    t.skip(reason);
}
const OUTPUT_CAP = 1 << 20; /* bytes of server output kept for diagnosis */

/** The server binary under test. */
export function serverBin() {
    const bin = process.env.PUSHEDGE_BIN;
    if (!bin)
        throw new Error('PUSHEDGE_BIN is not set: point it at the pushedge executable');
    return bin;
}

/** An environment without any PUSHEDGE_* variable (PUSHEDGE_BIN included), plus extra. */
export function cleanEnv(extra = {}) {
    const env = {};
    for (const [k, v] of Object.entries(process.env))
        if (!k.startsWith('PUSHEDGE_'))
            env[k] = v;
    return { ...env, ...extra };
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, HOST, () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/**
 * Polls fn() until it returns a truthy value (returned) or timeoutMs passes (throws, naming
 * what was awaited and the last value or error seen).
 */
export async function waitUntil(fn, { timeoutMs = 5000, intervalMs = 25, what = 'condition' } = {}) {
    const deadline = Date.now() + timeoutMs;
    let last, lastErr;
    for (;;) {
        try {
            last = await fn();
            if (last)
                return last;
        } catch (e) {
            lastErr = e;
        }
        if (Date.now() >= deadline)
            break;
        await delay(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
    }
    const detail = lastErr ? `last error: ${lastErr.message}` : `last value: ${JSON.stringify(last)}`;
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${detail})`);
}

function optionValue(args, env, name, fallback) {
    for (let i = 0; i < args.length; i++) {
        if (args[i] === `--${name}` && i + 1 < args.length)
            return args[i + 1];
        if (args[i].startsWith(`--${name}=`))
            return args[i].slice(name.length + 3);
    }
    const envName = 'PUSHEDGE_' + name.toUpperCase().replace(/-/g, '_');
    if (env[envName] !== undefined)
        return env[envName];
    return fallback;
}

/*
 * Reports that fail the test of the process that printed them: AddressSanitizer (memory
 * errors), LeakSanitizer (leaks at exit), UndefinedBehaviorSanitizer ("runtime error:", which
 * without halt_on_error only prints), ThreadSanitizer (races print a WARNING and go on).
 */
const REPORT_RE = /ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer|ThreadSanitizer: reported|SUMMARY: \w*Sanitizer/;

/** The first sanitizer/runtime-error report line in text, or null. */
export function sanitizerReport(text) {
    const m = REPORT_RE.exec(text);
    if (!m)
        return null;
    const start = text.lastIndexOf('\n', m.index) + 1;
    const end = text.indexOf('\n', m.index);
    return text.slice(start, end < 0 ? undefined : end);
}

/* Every child this process started, so that a crashing test file still kills them. */
/* ---- TLS ---------------------------------------------------------------------------------- */

let certs = null;

/**
 * A throwaway CA and a server certificate for localhost / 127.0.0.1 / ::1 signed by it, made
 * once per process with openssl in a temporary directory removed at exit (never committed).
 * Returns {dir, ca, caKey, cert, key, csr, ext, caPem (the CA's text), issue(serial, file)}:
 * issue() signs the same key again with another serial (certificate reload tests).
 */
export function testCerts() {
    if (certs)
        return certs;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-tls-'));
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    const f = (n) => path.join(dir, n);
    const ossl = (...a) => execFileSync('openssl', a, { stdio: ['ignore', 'ignore', 'pipe'] });
    ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ca.key'), '-out',
        f('ca.pem'), '-days', '2', '-subj', '/CN=pushedge test CA');
    ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('server.key'), '-out',
        f('server.csr'), '-subj', '/CN=localhost');
    fs.writeFileSync(f('ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n');
    const issue = (serial, file) => {
        ossl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-set_serial', serial, '-days',
            '2', '-extfile', f('ext'), '-out', file);
        return file;
    };
    issue('0x1001', f('server.pem'));
    certs = { dir, ca: f('ca.pem'), caKey: f('ca.key'), cert: f('server.pem'), key: f('server.key'), csr: f('server.csr'),
        ext: f('ext'), caPem: fs.readFileSync(f('ca.pem'), 'utf8'), issue };
    return certs;
}

/** Options for node's https/tls/ws clients: trust the test CA (when one was made). */
export function tlsClientOptions() {
    return certs ? { ca: certs.caPem } : {};
}

const children = new Set();
/* Server handles whose stop() was never called: the root after() hook below stops them. */
const unstopped = new Set();
process.on('exit', () => {
    for (const c of children)
        try {
            c.kill('SIGKILL');
        } catch {
            /* already gone */
        }
    /* A server no hook stopped (process.exit, an uncaught error, a skipped hook): say so. */
    if (unstopped.size) {
        for (const h of unstopped)
            console.error(`not ok - pushedge ${h.args.join(' ')} (pid ${h.pid}) was never stopped or checked: killed at exit`);
        process.exitCode = 1;
    }
});

/*
 * A file-level after() hook, registered before any of the test file's own: every server its
 * test never stopped (sharedServer()'s are left to their own hooks, which run later) is stopped
 * here (SIGTERM) and checked like any other. It cannot throw: node:test skips the later after()
 * hooks of a suite once one throws, and the shared servers would then keep the file running.
 * A problem is printed and fails the file through its exit status instead.
 */
after(async () => {
    for (const h of [...unstopped]) {
        if (h.shared)
            continue;
        try {
            await h.stop();
        } catch (e) {
            console.error(`not ok - a server its test never stopped: ${e.message}`);
            process.exitCode = 1;
        }
    }
});

function appendCapped(buf, chunk) {
    const s = buf + chunk.toString('utf8');
    return s.length > OUTPUT_CAP ? s.slice(s.length - OUTPUT_CAP) : s;
}

/**
 * Spawns the binary with exactly `args` and a clean environment plus `env`, waits for it to
 * exit (bounded; SIGKILL past the bound) and returns {code, signal, stdout, stderr, timedOut}.
 * For command-line checks that expect the process to end by itself; the caller checks the
 * code. A sanitizer report in its output rejects (whatever the code).
 */
export function runOnce(args, env = {}, { timeoutMs = 5000 } = {}) {
    return new Promise((resolve, reject) => {
        const proc = spawn(serverBin(), args, { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
        children.add(proc);
        let stdout = '', stderr = '', timedOut = false;
        proc.stdout.on('data', (c) => (stdout = appendCapped(stdout, c)));
        proc.stderr.on('data', (c) => (stderr = appendCapped(stderr, c)));
        const timer = setTimeout(() => {
            timedOut = true;
            proc.kill('SIGKILL');
        }, timeoutMs);
        proc.on('error', (e) => {
            clearTimeout(timer);
            children.delete(proc);
            reject(e);
        });
        proc.on('close', (code, signal) => {
            clearTimeout(timer);
            children.delete(proc);
            const report = sanitizerReport(stderr) || sanitizerReport(stdout);
            if (report)
                reject(new Error(`pushedge ${args.join(' ')} printed a sanitizer report: ${report}\nstderr:\n${stderr.slice(-6000)}`));
            else
                resolve({ code, signal, stdout, stderr, timedOut });
        });
    });
}

/*
 * The e2e suites cross threads whatever the machine: a server whose test chose no thread count
 * gets two loops on a one-core machine (the server's default is one loop per core).
 */
export function threadsArgs(args, env, cores = os.availableParallelism()) {
    if (cores >= 2 || optionValue(args, env, 'threads', null) !== null)
        return [];
    const config = optionValue(args, env, 'config', null);
    if (config !== null) {
        try {
            if (JSON.parse(fs.readFileSync(config, 'utf8')).threads !== undefined)
                return [];
        } catch {
            /* an unreadable or invalid config: the server says so itself */
        }
    }
    return ['--threads', '2'];
}

/**
 * What is wrong with a finished server, or null: an exit other than the expected one (code 0
 * by default), a SIGKILL after the stop bound, or a sanitizer report in its output.
 */
function exitProblem(r, { expectCode = 0, expectSignal = null } = {}) {
    const problems = [];
    if (r.error)
        problems.push(`could not be run: ${r.error.message}`);
    if (r.killed)
        problems.push(`did not exit within ${r.ms} ms of being stopped (killed)`);
    else if (expectSignal !== null ? r.signal !== expectSignal : r.signal !== null || r.code !== expectCode)
        problems.push(`exited with code ${r.code}, signal ${r.signal}; expected ` +
            (expectSignal !== null ? `signal ${expectSignal}` : `code ${expectCode}`));
    const report = r.report || sanitizerReport(r.stderr) || sanitizerReport(r.stdout);
    if (report)
        problems.push(`printed a sanitizer report: ${report}`);
    return problems.length ? problems.join('; ') : null;
}

/**
 * Starts a server and waits until GET /healthz answers 200 (at most 10 s); GET /readyz when
 * E2E_ENGINE=redis made the harness add --redis (publishes answer 503 until it does), or when
 * the test passed its own --redis and opts.ready (its Redis is up: wait for every thread's link).
 *
 * By default the command line is `--listen 127.0.0.1:<free port> ...args`. With
 * opts.listen === false no --listen is added and opts.port names the port the server is
 * expected to serve (set through the environment or a config file by the caller).
 *
 * Without --threads from the test (arguments, environment or config file) and on a machine
 * with fewer than two cores, --threads 2 is added.
 *
 * Returns {port, url, proc, pid, output(), stop(signal, expect)}; stop() resolves to
 * {code, signal, stderr, stdout, killed, ms} once the process has exited, waiting at most the
 * drain timeout + 5 s before SIGKILL. stop(null) sends nothing and only waits (for a signal
 * the test sent itself). stop() REJECTS unless the exit was clean: code 0, or what `expect`
 * declares ({expectCode: N} or {expectSignal: 'SIGKILL'}; stop('SIGKILL') on a running
 * process expects SIGKILL), and no sanitizer or runtime-error report in the output. stop()
 * may be called more than once: later calls resolve to the first call's result and check
 * nothing (the first call did).
 */
export async function startServer(args = [], env = {}, opts = {}) {
    const attempts = opts.listen === false ? 1 : 3;
    let lastErr;
    for (let i = 0; i < attempts; i++) {
        try {
            return await startServerOnce(args, env, opts);
        } catch (e) {
            lastErr = e;
            /* Someone else took the port between freePort() and bind(): try another one. */
            if (!/in use|EADDRINUSE/i.test(e.message))
                throw e;
        }
    }
    throw lastErr;
}

async function startServerOnce(args, env, opts) {
    const port = opts.listen === false ? opts.port : await freePort();
    if (!port)
        throw new Error('startServer: opts.port is required with opts.listen === false');
    /* E2E_SERVER_ARGS (space-separated) is appended to every server, e.g. "--threads 1", to
     * run the whole suite in another configuration. */
    let extra = (process.env.E2E_SERVER_ARGS || '').split(/\s+/).filter(Boolean);
    /* A test that chose its own loop count keeps it (the drain tests pin one loop so that every
     * connection shares the loop whose stream holds the drain open). */
    const ti = extra.indexOf('--threads');
    if (ti >= 0 && args.includes('--threads'))
        extra = [...extra.slice(0, ti), ...extra.slice(ti + 2)];
    /* E2E_ENGINE=redis runs the file against the Redis engine at $PUSHEDGE_TEST_REDIS_URL
     * (tests/run.sh starts a private redis-server); a test that chose its own --redis wins. */
    const harnessRedis = process.env.E2E_ENGINE === 'redis' && !args.includes('--redis');
    if (harnessRedis)
        extra.push('--redis', process.env.PUSHEDGE_TEST_REDIS_URL);
    const probe = harnessRedis || opts.ready ? '/readyz' : '/healthz';
    extra.push(...threadsArgs([...args, ...extra], env));
    let tlsPort = null;
    if (process.env.E2E_TLS === '1' && opts.listen !== false && !args.includes('--listen-tls')) {
        const c = testCerts();
        tlsPort = await freePort();
        extra.push('--listen-tls', `${HOST}:${tlsPort}`, '--tls-cert', c.cert, '--tls-key', c.key);
    }
    const argv = opts.listen === false ? [...args, ...extra] : ['--listen', `${HOST}:${port}`, ...args, ...extra];
    const drainS = Number(optionValue(args, env, 'drain-timeout', '10'));
    const drainMs = (Number.isFinite(drainS) && drainS >= 0 ? drainS : 10) * 1000;

    const proc = spawn(serverBin(), argv, { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(proc);
    let stdout = '', stderr = '';
    /* Seen as it arrives: a report can scroll out of the capped output before the exit. */
    let report = null;
    const scan = (text, chunk) => {
        if (report === null)
            report = sanitizerReport(text.slice(-(chunk.length + 200)));
    };
    proc.stdout.on('data', (c) => scan((stdout = appendCapped(stdout, c)), c));
    proc.stderr.on('data', (c) => scan((stderr = appendCapped(stderr, c)), c));
    let exitInfo = null;
    const exited = new Promise((resolve) => {
        proc.on('error', (e) => {
            exitInfo = { code: null, signal: null, error: e };
            children.delete(proc);
            resolve(exitInfo);
        });
        proc.on('close', (code, signal) => {
            exitInfo = { code, signal };
            children.delete(proc);
            resolve(exitInfo);
        });
    });

    const url = `http://${HOST}:${port}`;
    let stopping = null;
    const handle = {
        port,
        /* With E2E_TLS=1 the clients go through TLS; the harness's own checks stay clear. */
        url: tlsPort ? `https://${HOST}:${tlsPort}` : url,
        clearUrl: url,
        tlsPort,
        proc,
        pid: proc.pid,
        args: argv,
        output: () => ({ stdout, stderr }),
        exited: () => exitInfo,
        stop(signal = 'SIGTERM', expect = {}) {
            if (stopping)
                return stopping.then((r) => r, (e) => e.result);
            unstopped.delete(handle);
            if (signal === 'SIGKILL' && !exitInfo && expect.expectCode === undefined && expect.expectSignal === undefined)
                expect = { expectSignal: 'SIGKILL' };
            stopping = (async () => {
                const t0 = Date.now();
                let killed = false;
                if (!exitInfo) {
                    try {
                        if (signal)
                            proc.kill(signal);
                    } catch {
                        /* raced with its exit */
                    }
                    const bound = drainMs + 5000;
                    const ac = new AbortController();
                    const r = await Promise.race([exited, delay(bound, null, { signal: ac.signal }).catch(() => null)]);
                    ac.abort();
                    if (!r) {
                        killed = true;
                        proc.kill('SIGKILL');
                        await exited;
                    }
                }
                const r = { ...exitInfo, stderr, stdout, killed, report, ms: Date.now() - t0 };
                const problem = exitProblem(r, expect);
                if (problem) {
                    const e = new Error(`pushedge ${argv.join(' ')} (pid ${proc.pid}) ${problem}\n` +
                        `stderr (last 6000 bytes):\n${stderr.slice(-6000)}`);
                    Object.defineProperty(e, 'result', { value: r });
                    throw e;
                }
                return r;
            })();
            return stopping;
        },
    };
    unstopped.add(handle);

    const deadline = Date.now() + 10000;
    for (;;) {
        if (exitInfo) {
            unstopped.delete(handle);
            throw new Error(
                `pushedge exited before serving (code ${exitInfo.code}, signal ${exitInfo.signal}` +
                    `${exitInfo.error ? ', ' + exitInfo.error.message : ''}); args: ${argv.join(' ')}\n` +
                    `stderr:\n${stderr}`,
            );
        }
        try {
            /* On the Redis engine the process serves before every thread's link is up (and
             * its function library loaded): until /readyz says so a publish answers 503. A
             * Redis the harness chose is expected to be reachable, so wait for that too; a test
             * that passed its own --redis says with opts.ready whether it is. */
            const r = await httpRequest(url, probe, { timeoutMs: 1000 });
            if (r.status === 200)
                return handle;
        } catch {
            /* not listening yet */
        }
        if (Date.now() >= deadline) {
            await handle.stop('SIGKILL').catch(() => {});
            throw new Error(`pushedge did not answer GET ${probe} 200 within 10 s; args: ${argv.join(' ')}\nstderr:\n${stderr}`);
        }
        await delay(25);
    }
}

/** Helper for describe-level servers: starts in before(), stopped in after(). */
export function sharedServer(before, after, args = [], env = {}) {
    const ref = { srv: null };
    before(async () => {
        ref.srv = await startServer(args, env);
        ref.srv.shared = true;
    });
    after(async () => {
        /* A clean SIGTERM exit is part of the contract: stop() rejects where it fails. */
        if (ref.srv)
            await ref.srv.stop();
    });
    return ref;
}

/* ------------------------------------------------------------------------------------------ */
/* HTTP requests                                                                               */

function parseJson(text) {
    try {
        return JSON.parse(text);
    } catch {
        return undefined;
    }
}

/**
 * One request. base is "http://127.0.0.1:port"; path includes the query. Over HTTP/1.1 each
 * request uses its own connection (agent: false). With opts.session (an http2 session) the
 * request goes over that HTTP/2 connection. Body: string or Buffer; opts.chunks: an array of
 * strings/Buffers written one by one (chunked transfer over HTTP/1.1).
 * Resolves to {status, headers, body (Buffer), text, json}; rejects on a network error or
 * after opts.timeoutMs (default 5 s).
 */
export function httpRequest(base, path, opts = {}) {
    const { method = 'GET', headers = {}, body, chunks, timeoutMs = 5000, session } = opts;
    if (session)
        return h2Request(session, path, { method, headers, body, timeoutMs });
    const u = new URL(base);
    return new Promise((resolve, reject) => {
        const req = (u.protocol === 'https:' ? https : http).request({
            host: u.hostname,
            port: u.port,
            method,
            path,
            headers,
            agent: false,
            ...tlsClientOptions(),
        });
        const timer = setTimeout(() => {
            req.destroy(new Error(`${method} ${path}: no complete response within ${timeoutMs} ms`));
        }, timeoutMs);
        req.on('error', (e) => {
            clearTimeout(timer);
            /* Name the request: a bare "read ECONNRESET" says nothing about where it happened. */
            const err = new Error(`${method} ${base}${path.slice(0, 200)}: ${e.message}`);
            err.code = e.code;
            reject(err);
        });
        req.on('response', (res) => {
            const parts = [];
            res.on('data', (c) => parts.push(c));
            res.on('error', (e) => {
                clearTimeout(timer);
                reject(e);
            });
            res.on('end', () => {
                clearTimeout(timer);
                const buf = Buffer.concat(parts);
                const text = buf.toString('utf8');
                resolve({ status: res.statusCode, headers: res.headers, body: buf, text, json: parseJson(text) });
            });
        });
        if (chunks) {
            for (const c of chunks)
                req.write(c);
            req.end();
        } else {
            req.end(body);
        }
    });
}

function h2Request(session, path, { method, headers, body, timeoutMs }) {
    return new Promise((resolve, reject) => {
        const stream = session.request({ ':method': method, ':path': path, ...headers });
        const timer = setTimeout(() => {
            stream.close(http2.constants.NGHTTP2_CANCEL);
            reject(new Error(`h2 ${method} ${path}: no complete response within ${timeoutMs} ms`));
        }, timeoutMs);
        let respHeaders = null;
        const parts = [];
        stream.on('response', (h) => (respHeaders = h));
        stream.on('data', (c) => parts.push(c));
        stream.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
        });
        stream.on('end', () => {
            clearTimeout(timer);
            if (!respHeaders) {
                reject(new Error(`h2 ${method} ${path}: stream ended without response headers`));
                return;
            }
            const buf = Buffer.concat(parts);
            const text = buf.toString('utf8');
            resolve({ status: respHeaders[':status'], headers: respHeaders, body: buf, text, json: parseJson(text) });
        });
        stream.end(body);
    });
}

/** Opens an HTTP/2 cleartext (prior knowledge) session; errors are recorded, not thrown. */
export function h2connect(base) {
    return new Promise((resolve, reject) => {
        const session = http2.connect(base, tlsClientOptions());
        const timer = setTimeout(() => {
            session.destroy();
            reject(new Error(`h2c connect to ${base}: no SETTINGS within 5 s`));
        }, 5000);
        session.errors = [];
        session.on('error', (e) => {
            session.errors.push(e);
            clearTimeout(timer);
            reject(e);
        });
        session.on('connect', () => {
            clearTimeout(timer);
            resolve(session);
        });
    });
}

/** POST /api/publish?channel=... with JSON.stringify(data). Resolves to {status, json, headers, text}. */
export async function publish(base, channel, data, headers = {}, opts = {}) {
    const r = await httpRequest(base, `/api/publish?channel=${encodeURIComponent(channel)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify(data),
        ...opts,
    });
    return { status: r.status, json: r.json, headers: r.headers, text: r.text };
}

/** Publishes and asserts 200; returns the message id. */
export async function publishOk(base, channel, data, headers = {}, opts = {}) {
    const r = await publish(base, channel, data, headers, opts);
    if (r.status !== 200 || !r.json || typeof r.json.id !== 'string')
        throw new Error(`publish to ${channel} failed: ${r.status} ${r.text}`);
    return r.json.id;
}

/**
 * Publishes count messages makeData(i) (i = 1..count) with `concurrency` requests in flight;
 * each channel's order is preserved only with concurrency 1. Returns the ids by i - 1.
 */
export async function publishMany(base, channel, count, makeData = (i) => ({ n: i }), concurrency = 1) {
    const ids = new Array(count);
    let next = 1;
    async function worker() {
        while (next <= count) {
            const i = next++;
            ids[i - 1] = await publishOk(base, channel, makeData(i));
        }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
    return ids;
}

/* ------------------------------------------------------------------------------------------ */
/* IDs, cursors, errors, metrics                                                               */

export const ID_RE = /^\d+-\d+$/;
export const CURSOR_SAFE_RE = /^[A-Za-z0-9._~-]+$/;

/** Compares two message IDs "<ms>-<seq>" numerically: <0, 0, >0. */
export function cmpId(a, b) {
    const [am, as] = a.split('-').map(BigInt);
    const [bm, bs] = b.split('-').map(BigInt);
    if (am !== bm)
        return am < bm ? -1 : 1;
    if (as !== bs)
        return as < bs ? -1 : 1;
    return 0;
}

/** Throws unless r (from httpRequest/publish) is `status` with the JSON error body. */
export function checkJsonError(r, status, what = '') {
    const prefix = what ? `${what}: ` : '';
    if (r.status !== status)
        throw new Error(`${prefix}expected status ${status}, got ${r.status} with body ${JSON.stringify(r.text)}`);
    const j = r.json;
    if (!j || typeof j !== 'object' || !j.error || typeof j.error !== 'object')
        throw new Error(`${prefix}expected a JSON body {"error":{...}}, got ${JSON.stringify(r.text)}`);
    if (typeof j.error.code !== 'string' || !/^[a-z][a-z0-9]*(_[a-z0-9]+)*$/.test(j.error.code))
        throw new Error(`${prefix}error.code must be snake_case, got ${JSON.stringify(j.error.code)}`);
    if (typeof j.error.message !== 'string' || j.error.message.length === 0)
        throw new Error(`${prefix}error.message must be a non-empty string, got ${JSON.stringify(j.error.message)}`);
    const ct = String(r.headers['content-type'] || '');
    if (!/^application\/json/i.test(ct))
        throw new Error(`${prefix}error Content-Type must be application/json, got ${JSON.stringify(ct)}`);
}

/**
 * Parses the Prometheus text format into [{name, labels: {k: v}, value}]; throws on a line
 * that is neither a comment nor a sample.
 */
export function parseMetrics(text) {
    const samples = [];
    const sampleRe = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$/;
    const labelRe = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)/y;
    for (const line of text.split('\n')) {
        if (line === '' || line.startsWith('#'))
            continue;
        const m = sampleRe.exec(line);
        if (!m)
            throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`);
        const labels = {};
        if (m[2] !== undefined && m[2].trim() !== '') {
            labelRe.lastIndex = 0;
            let pos = 0;
            while (pos < m[2].length) {
                labelRe.lastIndex = pos;
                const lm = labelRe.exec(m[2]);
                if (!lm)
                    throw new Error(`bad labels in metrics line: ${JSON.stringify(line)}`);
                labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
                pos = labelRe.lastIndex;
            }
        }
        const v = m[3];
        const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v);
        if (Number.isNaN(value) && v !== 'NaN')
            throw new Error(`bad sample value in metrics line: ${JSON.stringify(line)}`);
        samples.push({ name: m[1], labels, value });
    }
    return samples;
}

/** The value of the sample `name` whose labels include `labels`, or undefined. */
export function metricValue(samples, name, labels = {}) {
    for (const s of samples) {
        if (s.name !== name)
            continue;
        if (Object.entries(labels).every(([k, v]) => s.labels[k] === v))
            return s.value;
    }
    return undefined;
}

/** GET /metrics, parsed. */
export async function getMetrics(base) {
    const r = await httpRequest(base, '/metrics');
    if (r.status !== 200)
        throw new Error(`GET /metrics: ${r.status} ${r.text}`);
    return parseMetrics(r.text);
}

/** VmRSS of a process in KiB (Linux /proc). */
export function rssKiB(pid) {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(s);
    if (!m)
        throw new Error(`no VmRSS in /proc/${pid}/status`);
    return Number(m[1]);
}

/** Asserts GET /healthz is 200 (the server survived whatever came before). */
export async function assertAlive(srv, what = '') {
    if (srv.exited())
        throw new Error(`server exited ${what ? 'after ' + what : ''}: ${JSON.stringify(srv.exited())}\nstderr:\n${srv.output().stderr}`);
    let r;
    try {
        r = await httpRequest(srv.url, '/healthz', { timeoutMs: 3000 });
    } catch (e) {
        throw new Error(`GET /healthz failed ${what ? 'after ' + what : ''}: ${e.message}\nstderr:\n${srv.output().stderr.slice(-4000)}`);
    }
    if (r.status !== 200)
        throw new Error(`GET /healthz: ${r.status} ${what ? 'after ' + what : ''}`);
}

/* ------------------------------------------------------------------------------------------ */
/* Server-Sent Events client                                                                   */

/**
 * A text/event-stream consumer that follows the WHATWG "event stream interpretation" rules:
 * UTF-8 decoding (a leading BOM ignored), lines ended by CRLF, LF or CR (also when a CRLF is
 * split across chunks), comments (lines starting with ':'), fields id/event/data/retry with one
 * leading space stripped from the value, unknown fields ignored, a blank line dispatching, an
 * id containing NUL ignored, retry only when all ASCII digits, the last event ID persisting
 * across events, and a dispatch without data only updating the last event ID. An incomplete
 * event at EOF is discarded.
 *
 * Everything is recorded in `items`, in stream order, each with the time it was parsed:
 *   {kind: 'retry', value}           a valid retry field
 *   {kind: 'badretry', value}        a retry field that is not all digits (ignored by clients)
 *   {kind: 'comment', text, bytes}   a comment line (text after ':'; bytes = line length)
 *   {kind: 'event', type, data, lastEventId, hasEventField, hadId}
 *   {kind: 'id', lastEventId}        a blank line after an id field but no data: no event is
 *                                    dispatched, only the last event ID changes
 * `events` holds the dispatched events only; `raw` the bytes received.
 */
export class SSEClient {
    constructor(label) {
        this.label = label;
        this.items = [];
        this.events = [];
        this.comments = [];
        this.retries = [];
        this.lastEventId = '';
        this.status = null;
        this.headers = null;
        this.ended = false;
        this.endedClean = false;
        this.error = null;
        this.endedAt = null;
        this.trailing = '';
        this._chunks = [];
        this._rawLen = 0;
        this._decoder = new TextDecoder('utf-8');
        this._line = '';
        this._skipLF = false;
        this._data = '';
        this._hasData = false;
        this._eventType = '';
        this._hasEventField = false;
        this._idBuffer = '';
        this._blockHadId = false;
        this._waiters = new Set();
        this._cursor = 0;
        this._closeFn = null;
    }

    get raw() {
        if (this._chunks.length > 1)
            this._chunks = [Buffer.concat(this._chunks)];
        return this._chunks[0] || Buffer.alloc(0);
    }

    get text() {
        return this.raw.toString('utf8');
    }

    /** Feeds bytes from the wire. */
    feed(buf) {
        this._chunks.push(buf);
        this._rawLen += buf.length;
        this._feedText(this._decoder.decode(buf, { stream: true }));
        this._notify();
    }

    /** The stream ended (clean: the response completed; else an error or abort). */
    finish(clean, err) {
        if (this.ended)
            return;
        const tail = this._decoder.decode();
        if (tail)
            this._feedText(tail);
        this.ended = true;
        this.endedClean = clean;
        this.error = err || null;
        this.endedAt = Date.now();
        /* An incomplete line or event at EOF is discarded. */
        this.trailing = this._line;
        this._notify();
    }

    _feedText(s) {
        let i = 0;
        if (this._skipLF && s.length > 0) {
            if (s[0] === '\n')
                i = 1;
            this._skipLF = false;
        }
        const eol = /[\r\n]/g;
        for (;;) {
            eol.lastIndex = i;
            const m = eol.exec(s);
            if (!m) {
                this._line += s.slice(i);
                return;
            }
            const j = m.index;
            const line = this._line + s.slice(i, j);
            this._line = '';
            if (s[j] === '\r') {
                if (j + 1 < s.length) {
                    i = s[j + 1] === '\n' ? j + 2 : j + 1;
                } else {
                    this._skipLF = true;
                    i = j + 1;
                }
            } else {
                i = j + 1;
            }
            this._processLine(line);
        }
    }

    _processLine(line) {
        const t = Date.now();
        if (line === '') {
            this._dispatch(t);
            return;
        }
        if (line[0] === ':') {
            const item = { kind: 'comment', text: line.slice(1), bytes: Buffer.byteLength(line), t };
            this.items.push(item);
            this.comments.push(item);
            return;
        }
        let field, value;
        const c = line.indexOf(':');
        if (c < 0) {
            field = line;
            value = '';
        } else {
            field = line.slice(0, c);
            value = line.slice(c + 1);
            if (value[0] === ' ')
                value = value.slice(1);
        }
        switch (field) {
        case 'event':
            this._eventType = value;
            this._hasEventField = true;
            break;
        case 'data':
            this._data += value + '\n';
            this._hasData = true;
            break;
        case 'id':
            if (!value.includes('\0')) {
                this._idBuffer = value;
                this._blockHadId = true;
            }
            break;
        case 'retry':
            if (/^[0-9]+$/.test(value)) {
                const item = { kind: 'retry', value: Number(value), t };
                this.items.push(item);
                this.retries.push(item);
            } else {
                this.items.push({ kind: 'badretry', value, t });
            }
            break;
        default:
            /* Unknown fields are ignored. */
            break;
        }
    }

    _dispatch(t) {
        this.lastEventId = this._idBuffer;
        const hadId = this._blockHadId;
        this._blockHadId = false;
        if (!this._hasData) {
            if (hadId)
                this.items.push({ kind: 'id', lastEventId: this.lastEventId, t });
            this._eventType = '';
            this._hasEventField = false;
            return;
        }
        let data = this._data;
        if (data.endsWith('\n'))
            data = data.slice(0, -1);
        const ev = {
            kind: 'event',
            type: this._eventType === '' ? 'message' : this._eventType,
            data,
            lastEventId: this.lastEventId,
            hasEventField: this._hasEventField,
            hadId,
            t,
        };
        this._data = '';
        this._hasData = false;
        this._eventType = '';
        this._hasEventField = false;
        this.items.push(ev);
        this.events.push(ev);
    }

    _notify() {
        for (const w of [...this._waiters])
            w();
    }

    /** Short description of what was received, for failure messages. */
    summary(max = 12) {
        const tail = this.items.slice(-max).map((it) => {
            switch (it.kind) {
            case 'event':
                return `event(${it.type}, id=${it.lastEventId}, ${it.data.slice(0, 120)})`;
            case 'comment':
                return `comment(${it.bytes} bytes)`;
            case 'id':
                return `id(${it.lastEventId})`;
            default:
                return `${it.kind}(${it.value})`;
            }
        });
        return `${this.label}: status ${this.status}, ${this.items.length} items, ${this.events.length} events, ` +
            `${this._rawLen} bytes, ended=${this.ended}${this.error ? ' (' + this.error.message + ')' : ''}; ` +
            `last: [${tail.join(', ')}]`;
    }

    /**
     * Resolves with cond()'s first truthy value, re-checked whenever bytes arrive or the stream
     * ends; rejects after timeoutMs, or when the stream ended and cond() is still false.
     */
    waitFor(cond, timeoutMs = 5000, what = 'condition') {
        return new Promise((resolve, reject) => {
            const check = () => {
                let v;
                try {
                    v = cond();
                } catch (e) {
                    done();
                    reject(e);
                    return;
                }
                if (v) {
                    done();
                    resolve(v);
                } else if (this.ended) {
                    done();
                    reject(new Error(`SSE stream ended before ${what}; ${this.summary()}`));
                }
            };
            const timer = setTimeout(() => {
                done();
                reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${this.summary()}`));
            }, timeoutMs);
            const done = () => {
                clearTimeout(timer);
                this._waiters.delete(check);
            };
            this._waiters.add(check);
            check();
        });
    }

    /**
     * The next not yet consumed event for which predicate(event) is true (events skipped over
     * are consumed too). Bounded by timeoutMs.
     */
    next(predicate = () => true, timeoutMs = 5000, what = 'a matching event') {
        return this.waitFor(
            () => {
                while (this._cursor < this.events.length) {
                    const ev = this.events[this._cursor++];
                    if (predicate(ev))
                        return ev;
                }
                return null;
            },
            timeoutMs,
            what,
        );
    }

    /** Waits until at least n events arrived in total; returns the events array. */
    waitEvents(n, timeoutMs = 5000) {
        return this.waitFor(() => (this.events.length >= n ? this.events : null), timeoutMs, `${n} events`);
    }

    /**
     * Waits for the stream to be live: the bare `id:` (no data) the server sends once the
     * subscription is registered. Returns that cursor.
     */
    waitLive(timeoutMs = 5000) {
        return this.waitFor(
            () => {
                const it = this.items.find((x) => x.kind === 'id');
                return it ? it.lastEventId || '(empty)' : null;
            },
            timeoutMs,
            'the bare "id:" that marks the stream live',
        );
    }

    /** Resolves when the stream has ended (bounded). */
    waitEnd(timeoutMs = 5000) {
        return new Promise((resolve, reject) => {
            const check = () => {
                if (this.ended) {
                    done();
                    resolve(this);
                }
            };
            const timer = setTimeout(() => {
                done();
                reject(new Error(`SSE stream did not end within ${timeoutMs} ms; ${this.summary()}`));
            }, timeoutMs);
            const done = () => {
                clearTimeout(timer);
                this._waiters.delete(check);
            };
            this._waiters.add(check);
            check();
        });
    }

    /** Message events parsed as envelopes. */
    envelopes() {
        return this.events.filter((e) => e.type === 'message').map((e) => JSON.parse(e.data));
    }

    /** Closes the connection (idempotent). */
    close() {
        if (this._closeFn)
            this._closeFn();
        this._closeFn = null;
        this.finish(false, this.error);
    }
}

/**
 * Opens an SSE stream: GET base+path over HTTP/1.1 (own connection) or over opts.session
 * (HTTP/2). Resolves once the response headers arrived (status/headers set; a non-200 body is
 * still fed to the client and readable as .text once ended). opts.t: a node:test context whose
 * after() closes the stream.
 */
export function openSSE(base, path, opts = {}) {
    const { headers = {}, session, timeoutMs = 5000, t } = opts;
    const client = new SSEClient(`SSE ${path}${session ? ' (h2)' : ''}`);
    if (t)
        t.after(() => client.close());
    const reqHeaders = { accept: 'text/event-stream', 'cache-control': 'no-cache', ...headers };
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            client.close();
            reject(new Error(`${client.label}: no response headers within ${timeoutMs} ms`));
        }, timeoutMs);
        if (session) {
            const stream = session.request({ ':method': 'GET', ':path': path, ...reqHeaders });
            client._closeFn = () => {
                if (!stream.destroyed)
                    stream.close(http2.constants.NGHTTP2_CANCEL);
            };
            client.pause = () => stream.pause();
            client.resume = () => stream.resume();
            stream.on('response', (h) => {
                clearTimeout(timer);
                client.status = h[':status'];
                client.headers = h;
                resolve(client);
            });
            stream.on('data', (c) => client.feed(c));
            stream.on('end', () => client.finish(true));
            stream.on('error', (e) => {
                clearTimeout(timer);
                client.finish(false, e);
                reject(e);
            });
            stream.on('close', () => {
                /* RST_STREAM or session end without a clean end-of-stream. */
                client.finish(false, client.error || (stream.rstCode ? new Error(`RST_STREAM ${stream.rstCode}`) : null));
            });
            stream.end();
            return;
        }
        const u = new URL(base);
        const req = (u.protocol === 'https:' ? https : http).request({ host: u.hostname, port: u.port, path, headers: reqHeaders,
            agent: false, ...tlsClientOptions() });
        client._closeFn = () => req.destroy();
        req.on('response', (res) => {
            clearTimeout(timer);
            /* Flow control for backpressure tests: a paused response stops reading its socket. */
            client.pause = () => res.pause();
            client.resume = () => res.resume();
            client.status = res.statusCode;
            client.headers = res.headers;
            res.on('data', (c) => client.feed(c));
            res.on('end', () => client.finish(true));
            res.on('aborted', () => client.finish(false, new Error('response aborted')));
            res.on('error', (e) => client.finish(false, e));
            res.on('close', () => client.finish(false, client.error || new Error('connection closed')));
            resolve(client);
        });
        req.on('error', (e) => {
            clearTimeout(timer);
            client.finish(false, e);
            reject(e);
        });
        req.end();
    });
}

/* ------------------------------------------------------------------------------------------ */
/* Raw sockets                                                                                 */

/**
 * Connects to 127.0.0.1:port, writes `data` (string, Buffer, or array of them written one
 * by one), and collects what comes back until the server closes the connection or
 * timeoutMs passes (then the socket is destroyed), or until(textSoFar) returns true.
 * half: end our side after writing. Never rejects: resolves to
 * {data (Buffer), text, status (first status line's code or null), closed, reset, timedOut,
 * error}.
 */
export function rawExchange(port, data, { timeoutMs = 3000, half = false, until = null } = {}) {
    return new Promise((resolve) => {
        const sock = net.connect({ host: HOST, port });
        const parts = [];
        let closed = false, reset = false, timedOut = false, error = null;
        let settled = false;
        const finish = () => {
            if (settled)
                return;
            settled = true;
            clearTimeout(timer);
            sock.destroy();
            const buf = Buffer.concat(parts);
            const text = buf.toString('latin1');
            const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
            resolve({ data: buf, text, status: m ? Number(m[1]) : null, closed, reset, timedOut, error });
        };
        const timer = setTimeout(() => {
            timedOut = true;
            finish();
        }, timeoutMs);
        sock.on('data', (c) => {
            parts.push(c);
            if (until && until(Buffer.concat(parts).toString('latin1')))
                finish();
        });
        sock.on('error', (e) => {
            error = e;
            if (/ECONNRESET|EPIPE/.test(e.code || ''))
                reset = true;
            closed = true;
            finish();
        });
        sock.on('end', () => {
            closed = true;
            finish();
        });
        sock.on('close', () => {
            closed = true;
            finish();
        });
        sock.on('connect', () => {
            const list = Array.isArray(data) ? data : [data];
            for (const d of list)
                sock.write(d);
            if (half)
                sock.end();
        });
    });
}

/**
 * A raw connection that writes `data` and never reads: no 'data' listener and paused, so
 * Node stops pulling from the kernel once its small internal buffer is full, and the TCP
 * receive window closes. Resolves once connected; call .destroy() to close.
 */
export function rawConnect(port, data) {
    return new Promise((resolve, reject) => {
        const sock = net.connect({ host: HOST, port });
        sock.pause();
        sock.closedByPeer = false;
        sock.on('error', () => {
            sock.closedByPeer = true;
        });
        sock.on('end', () => {
            sock.closedByPeer = true;
        });
        sock.on('close', () => {
            sock.closedByPeer = true;
        });
        sock.once('connect', () => {
            if (data)
                sock.write(data);
            resolve(sock);
        });
        sock.once('error', reject);
    });
}

/** A small deterministic PRNG (mulberry32) so that fuzz-like inputs are reproducible. */
export function prng(seed) {
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

/** A unique channel name per call in this process (tests share servers, never channels). */
let channelSeq = 0;
export function uniqueChannel(prefix = 'ch') {
    channelSeq++;
    return `${prefix}-${process.pid}-${channelSeq}`;
}

/* ------------------------------------------------------------------------------------------ */
/* Long-polling                                                                                */

/**
 * GET /poll?<query> (a string, without the '?') over HTTP/1.1 (own connection) or
 * opts.session (HTTP/2). Resolves to httpRequest()'s {status, headers, body, text, json} plus
 * ms, the time from sending to the complete answer. opts as httpRequest (timeoutMs defaults
 * to 10 s, above the --poll-timeout values the tests use).
 */
export async function pollRequest(base, query, opts = {}) {
    const t0 = Date.now();
    const r = await httpRequest(base, `/poll?${query}`, { timeoutMs: 10000, ...opts });
    return { ...r, ms: Date.now() - t0 };
}

/** The value of pushedge_connections{transport=...} in /metrics (0 when absent). */
export async function connectionsGauge(base, transport) {
    return metricValue(await getMetrics(base), 'pushedge_connections', { transport }) ?? 0;
}

/**
 * sharedServer() for several servers at once: specs is an array of [args, env]; returns an
 * array of refs ({srv}). One before() starts them all and one after() stops them all, then
 * reports every unclean exit together (node:test skips the later after() hooks of a suite once
 * one throws, which would leave servers running and the test file hanging).
 */
export function sharedServers(before, after, specs) {
    const refs = specs.map(() => ({ srv: null }));
    before(async () => {
        for (const [i, [args = [], env = {}]] of specs.entries()) {
            refs[i].srv = await startServer(args, env);
            refs[i].srv.shared = true;
        }
    });
    after(async () => {
        const results = await Promise.allSettled(refs.map((ref) => (ref.srv ? ref.srv.stop() : null)));
        const bad = results.filter((x) => x.status === 'rejected');
        if (bad.length)
            throw new Error(bad.map((x) => x.reason.message).join('\n\n'));
    });
    return refs;
}
