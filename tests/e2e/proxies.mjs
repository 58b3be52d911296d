/*
 * Hostile proxies for the browser suite, each a real program started in the foreground on a
 * free loopback port and stopped by its PID:
 *
 *   haproxy (reverse)          ends connections idle for IDLE s; optionally refuses upgrades (403)
 *   nginx, buffering (reverse) buffers responses, forwards no upgrade: SSE never arrives
 *   squid (forward)            no CONNECT (ws:// fails), cuts responses idle for IDLE s
 *   squidConnect (forward)     CONNECT only to one TLS port (wss:// passes, ws:// fails), HTTP passes
 *   tinyproxy (forward)        CONNECT only to 443 (ws:// fails), idle timeout
 *   blackHole (ours, reverse)  passes HTTP, and after a 101 forwards nothing in either direction
 *
 * Templates are in tests/e2e/proxies/ (@PORT@ @UPSTREAM@ @IDLE@ @DIR@ @DENYWS_LINE@ @TLS_PORT@).
 * A proxy that is not installed makes its start() throw ProxyMissing, so a test can skip.
 *
 * Also the load balancer the operators run: deployHaproxy() starts deploy/haproxy/pushedge.cfg
 * itself, rewritten only where this machine needs it (lb.test.mjs, tests/chaos); rewrite(),
 * which() and startProgram() serve tests that run other deploy/ files the same way.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { delay, freePort } from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');

export class ProxyMissing extends Error {}

/** The executable cmd in the usual system directories or on PATH, or null. */
export function which(cmd) {
    for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin', ...(process.env.PATH || '').split(':')]) {
        const p = path.join(dir, cmd);
        try {
            fs.accessSync(p, fs.constants.X_OK);
            return p;
        } catch {
            /* not here */
        }
    }
    return null;
}

function render(template, vars) {
    let text = fs.readFileSync(path.join(HERE, 'proxies', template), 'utf8');
    for (const [k, v] of Object.entries(vars))
        text = text.split(`@${k}@`).join(String(v));
    return text;
}

/** Waits until something accepts TCP connections on port (bounded). */
async function waitListening(port, proc, what, output) {
    const deadline = Date.now() + 10000;
    for (;;) {
        if (proc.exitCode !== null || proc.signalCode !== null)
            throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}) before listening:\n${output()}`);
        const ok = await new Promise((resolve) => {
            const s = net.connect(port, '127.0.0.1');
            s.once('connect', () => {
                s.destroy();
                resolve(true);
            });
            s.once('error', () => resolve(false));
        });
        if (ok)
            return;
        if (Date.now() > deadline)
            throw new Error(`${what} did not listen on ${port} within 10 s:\n${output()}`);
        await delay(50);
    }
}

/* Proxies still running when the file ends (a crashed test never reached its stop()). Their
 * exit status is not checked: they are the hostile environment, not the product. */
const running = new Set();
process.on('exit', () => {
    for (const p of running)
        p.kill('SIGKILL');
});

/**
 * Runs bin with args in dir (removed at stop) and waits until something listens on port; the
 * handle's stop() sends SIGTERM, waits 5 s, then SIGKILL. Any still running when the process
 * exits is killed.
 */
export async function startProgram(what, bin, args, port, dir) {
    let out = '';
    const proc = spawn(bin, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(proc);
    proc.on('close', () => running.delete(proc));
    proc.stdout.on('data', (c) => (out = (out + c).slice(-20000)));
    proc.stderr.on('data', (c) => (out = (out + c).slice(-20000)));
    const exited = new Promise((resolve) => proc.on('close', resolve));
    await waitListening(port, proc, what, () => out);
    return {
        port,
        url: `http://127.0.0.1:${port}`,
        pid: proc.pid,
        dir,
        output: () => out,
        async stop() {
            if (proc.exitCode === null && proc.signalCode === null) {
                proc.kill('SIGTERM');
                const done = await Promise.race([exited.then(() => true), delay(5000).then(() => false)]);
                if (!done) {
                    proc.kill('SIGKILL');
                    await exited;
                }
            }
            fs.rmSync(dir, { recursive: true, force: true });
        },
    };
}

export function tmpDir(name) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pushedge-${name}-`));
    /* squid and nginx workers drop root for an unprivileged user that must write here. */
    fs.chmodSync(dir, 0o777);
    return dir;
}

/**
 * Starts program `name` on a free port with its config rendered from `template` into a fresh
 * directory: vars get PORT and DIR added; args(conf, dir) gives its foreground command line.
 */
async function fromTemplate(name, template, vars, args, prepare = () => {}) {
    const bin = which(name);
    if (!bin)
        throw new ProxyMissing(`${name} is not installed`);
    const port = await freePort();
    const dir = tmpDir(name);
    prepare(dir);
    const conf = path.join(dir, template.replace(/\.in$/, ''));
    fs.writeFileSync(conf, render(template, { ...vars, PORT: port, DIR: dir }));
    return startProgram(name, bin, args(conf, dir), port, dir);
}

/** text with each [from, to] replaced; every `from` must occur (a regex must match), so that a
 *  deploy/ file changed under a test fails it by name instead of running with the change. */
export function rewrite(text, pairs, what) {
    for (const [from, to] of pairs) {
        const hit = typeof from === 'string' ? text.includes(from) : from.test(text);
        if (!hit)
            throw new Error(`${what}: the test's rewrite ${from} no longer matches the file`);
        text = typeof from === 'string' ? text.split(from).join(to) : text.replace(from, to);
    }
    return text;
}

/* The nodes deploy/haproxy/pushedge.cfg and deploy/nginx/pushedge.conf list as examples. */
export const DEPLOY_EXAMPLE_NODES = ['10.0.0.11:8080', '10.0.0.12:8080', '10.0.0.13:8080'];

/**
 * deploy/haproxy/pushedge.cfg on a free loopback port in front of the three nodes on nodePorts
 * (the example nodes replaced by them), its admin socket in a private directory, without the
 * user/group switch, `maxconn` as given (this machine caps a process at 20,000 descriptors and
 * HAProxy takes two per connection), and health checks every 300 ms (a node failing /readyz is
 * out after 2 x 300 ms instead of 2 x 2 s); `more` are the caller's further rewrites. Resolves
 * to startProgram()'s handle once it listens; throws ProxyMissing without haproxy.
 */
export async function deployHaproxy(nodePorts, { maxconn, more = [] }) {
    const bin = which('haproxy');
    if (!bin)
        throw new ProxyMissing('haproxy is not installed');
    const port = await freePort();
    const dir = tmpDir('haproxy-deploy');
    const conf = rewrite(fs.readFileSync(path.join(ROOT, 'deploy/haproxy/pushedge.cfg'), 'utf8'), [
        ['bind :80', `bind 127.0.0.1:${port}`],
        ...DEPLOY_EXAMPLE_NODES.map((a, i) => [a, `127.0.0.1:${nodePorts[i]}`]),
        ['/run/haproxy/pushedge.sock', path.join(dir, 'admin.sock')],
        ['maxconn 200000', `maxconn ${maxconn}`],
        [/^\s*user haproxy\n/m, ''],
        [/^\s*group haproxy\n/m, ''],
        ['inter 2s', 'inter 300ms'],
        ...more,
    ], 'deploy/haproxy/pushedge.cfg');
    fs.writeFileSync(path.join(dir, 'haproxy.cfg'), conf);
    return startProgram('haproxy', bin, ['-db', '-f', path.join(dir, 'haproxy.cfg')], port, dir);
}

/** haproxy in front of upstreamPort: idle connections end after idleS; denyWs refuses upgrades. */
export function haproxy(upstreamPort, { idleS = 30, denyWs = false } = {}) {
    const deny = denyWs ? 'http-request deny deny_status 403 if { hdr(upgrade) -i websocket }' : '';
    return fromTemplate('haproxy', 'haproxy.cfg.in', { UPSTREAM: upstreamPort, IDLE: idleS, DENYWS_LINE: deny },
        (conf) => ['-db', '-f', conf]);
}

/**
 * haproxy balancing over two upstreams, health-checking GET /readyz every 200 ms (one failure
 * takes a node out); no retries, so a request sent to a node that refuses it fails visibly.
 */
export function haproxyHealth(portA, portB) {
    return fromTemplate('haproxy', 'haproxy-health.cfg.in', { UPSTREAM_A: portA, UPSTREAM_B: portB }, (conf) => ['-db', '-f', conf]);
}

/** nginx buffering every response from upstreamPort. */
export function nginxBuffering(upstreamPort, { idleS = 60 } = {}) {
    return fromTemplate('nginx', 'nginx-buffering.conf.in', { UPSTREAM: upstreamPort, IDLE: idleS },
        (conf, dir) => ['-p', dir, '-c', conf]);
}

/** squid as a forward proxy (the browser is pointed at it with --proxy-server). */
export function squid({ idleS = 5 } = {}) {
    /* -N: foreground, no daemon; the config names every file inside dir. */
    return fromTemplate('squid', 'squid.conf.in', { IDLE: idleS }, (conf) => ['-N', '-f', conf]);
}

/**
 * squid allowing CONNECT to tlsPort only (as corporate proxies allow it to 443 only); the
 * handle's accessLog() reads its access log (one line per request or tunnel, with the result
 * code: TCP_TUNNEL/200 for a tunnel, TCP_DENIED/403 for a refused CONNECT).
 */
export async function squidConnect(tlsPort, { idleS = 30 } = {}) {
    const proxy = await fromTemplate('squid', 'squid-connect.conf.in', { IDLE: idleS, TLS_PORT: tlsPort }, (conf) => ['-N', '-f', conf]);
    proxy.accessLog = () => {
        try {
            return fs.readFileSync(path.join(proxy.dir, 'access.log'), 'utf8');
        } catch {
            return '';
        }
    };
    return proxy;
}

/** tinyproxy as a forward proxy; its filter file admits loopback destinations only. */
export function tinyproxy({ idleS = 5 } = {}) {
    return fromTemplate('tinyproxy', 'tinyproxy.conf.in', { IDLE: idleS }, (conf) => ['-d', '-c', conf],
        (dir) => fs.writeFileSync(path.join(dir, 'filter'), '^127\\.0\\.0\\.1$\n'));
}

/**
 * A reverse proxy that accepts the WebSocket upgrade and then forwards nothing: it relays bytes
 * both ways until the upstream's response head says 101, then swallows everything from both
 * sides while keeping both sockets open. Plain HTTP (SSE, polls, the page) passes untouched.
 */
export async function blackHole(upstreamPort) {
    const sockets = new Set();
    const server = net.createServer((client) => {
        const upstream = net.connect(upstreamPort, '127.0.0.1');
        sockets.add(client);
        sockets.add(upstream);
        let swallowing = false;
        let head = '';
        const end = () => {
            client.destroy();
            upstream.destroy();
            sockets.delete(client);
            sockets.delete(upstream);
        };
        client.on('data', (c) => {
            if (!swallowing)
                upstream.write(c);
        });
        upstream.on('data', (c) => {
            if (swallowing)
                return;
            head += c.toString('latin1');
            const endOfHead = head.indexOf('\r\n\r\n');
            if (/^HTTP\/1\.1 101 /.test(head) && endOfHead >= 0) {
                /* The 101 reaches the browser (it opens the socket); nothing after it does. */
                client.write(Buffer.from(head.slice(0, endOfHead + 4), 'latin1'));
                swallowing = true;
                return;
            }
            if (head.length > 65536)
                head = head.slice(-4);
            client.write(c);
        });
        client.on('error', end);
        upstream.on('error', end);
        client.on('close', end);
        upstream.on('close', end);
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = server.address().port;
    return {
        port,
        url: `http://127.0.0.1:${port}`,
        async stop() {
            for (const s of sockets)
                s.destroy();
            await new Promise((resolve) => server.close(resolve));
        },
    };
}

/** True if Debian's chromium is installed. */
export function haveChromium() {
    return fs.existsSync('/usr/bin/chromium') && spawnSync('/usr/bin/chromium', ['--version'], { timeout: 20000 }).status === 0;
}

/*
 * A TCP forwarder to 127.0.0.1:target. blackhole() stops reading on both sides of every pair
 * (bytes wait in the kernel's buffers, nothing is closed, new connections are accepted and left
 * waiting), restore() lets everything flow again. The chaos suite and e2e-readyz_blackhole put
 * one between a node and Redis.
 */
export function linkProxy(target) {
    const pairs = new Set();
    const waiting = new Set();
    let holed = false;
    const connectUp = (client) => {
        const up = net.connect({ host: '127.0.0.1', port: target });
        const pair = { client, up };
        pairs.add(pair);
        const end = () => {
            pairs.delete(pair);
            client.destroy();
            up.destroy();
        };
        up.on('error', end);
        client.on('error', end);
        up.on('close', end);
        client.on('close', end);
        client.pipe(up);
        up.pipe(client);
        if (holed) {
            client.pause();
            up.pause();
        }
    };
    const server = net.createServer((client) => {
        client.on('error', () => {});
        if (holed) {
            client.pause();
            waiting.add(client);
            return;
        }
        connectUp(client);
    });
    return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
        port: server.address().port,
        blackhole() {
            holed = true;
            for (const { client, up } of pairs) {
                /* unpipe: a paused source could still flush what it read before. */
                client.pause();
                up.pause();
            }
        },
        restore() {
            holed = false;
            for (const { client, up } of pairs) {
                client.resume();
                up.resume();
            }
            for (const c of waiting)
                if (!c.destroyed)
                    connectUp(c);
            waiting.clear();
        },
        close() {
            server.close();
            for (const { client, up } of pairs) {
                client.destroy();
                up.destroy();
            }
            for (const c of waiting)
                c.destroy();
        },
    })));
}
