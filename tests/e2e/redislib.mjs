/*
 * Private redis-server processes for the e2e tests, and a minimal RESP client (no redis-cli
 * needed): used by the files that need a Redis of their own (redis, redis_pipeline, storm,
 * idempotency, presence, sentinel, ...).
 *
 * startRedis() starts one on a free loopback port in a temporary directory and returns a handle
 * that stops it (SIGTERM, bounded, SIGKILL past the bound), pauses it (SIGSTOP: a Redis that
 * hangs with its connections open) and resumes it (SIGCONT); stopRedis() stops one and removes
 * its directory; commandCalls() reads a command's call count from INFO commandstats. Every child
 * is SIGKILLed when the test process exits. Every wait is bounded.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { delay, freePort } from './lib.mjs';

export const HAVE_REDIS = (() => {
    const r = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
    return !r.error && r.status === 0;
})();

/* ------------------------------------------------------------------------------------------ */
/* redis-server processes and a minimal RESP client                                            */

const redisChildren = new Set();
process.on('exit', () => {
    for (const p of redisChildren)
        try {
            p.kill('SIGKILL');
        } catch {
            /* gone */
        }
});

function encodeCommand(args) {
    const parts = [`*${args.length}\r\n`];
    for (const a of args) {
        const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a), 'utf8');
        parts.push(`$${b.length}\r\n`, b, '\r\n');
    }
    return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p, 'utf8'))));
}

/* Parses one RESP2 reply at buf[pos]: {value, end} or null when incomplete. Errors are Error objects. */
function parseReply(buf, pos) {
    if (pos >= buf.length)
        return null;
    const le = buf.indexOf('\r\n', pos);
    if (le < 0)
        return null;
    const type = String.fromCharCode(buf[pos]);
    const line = buf.toString('utf8', pos + 1, le);
    switch (type) {
    case '+':
        return { value: line, end: le + 2 };
    case '-': {
        const e = new Error(line);
        e.redis = true;
        return { value: e, end: le + 2 };
    }
    case ':':
        return { value: Number(line), end: le + 2 };
    case '$': {
        const n = Number(line);
        if (n < 0)
            return { value: null, end: le + 2 };
        if (buf.length < le + 2 + n + 2)
            return null;
        return { value: buf.toString('utf8', le + 2, le + 2 + n), end: le + 2 + n + 2 };
    }
    case '*': {
        const n = Number(line);
        if (n < 0)
            return { value: null, end: le + 2 };
        const arr = [];
        let p = le + 2;
        for (let i = 0; i < n; i++) {
            const r = parseReply(buf, p);
            if (!r)
                return null;
            arr.push(r.value);
            p = r.end;
        }
        return { value: arr, end: p };
    }
    default:
        throw new Error(`unexpected RESP type ${JSON.stringify(type)}`);
    }
}

/**
 * Sends `commands` (arrays of arguments) on one fresh connection to 127.0.0.1:port and resolves to
 * their replies in order (Redis errors as Error values, not thrown). Bounded by timeoutMs.
 */
export function redisPipeline(port, commands, { timeoutMs = 3000 } = {}) {
    return new Promise((resolve, reject) => {
        const sock = net.connect({ host: '127.0.0.1', port });
        let buf = Buffer.alloc(0);
        const replies = [];
        let pos = 0;
        const timer = setTimeout(() => {
            sock.destroy();
            reject(new Error(`redis :${port}: no reply to ${JSON.stringify(commands).slice(0, 200)} within ${timeoutMs} ms`));
        }, timeoutMs);
        sock.on('connect', () => sock.write(Buffer.concat(commands.map(encodeCommand))));
        sock.on('data', (c) => {
            buf = Buffer.concat([buf, c]);
            for (;;) {
                const r = parseReply(buf, pos);
                if (!r)
                    break;
                replies.push(r.value);
                pos = r.end;
            }
            if (replies.length >= commands.length) {
                clearTimeout(timer);
                sock.destroy();
                resolve(replies);
            }
        });
        sock.on('error', (e) => {
            clearTimeout(timer);
            reject(new Error(`redis :${port}: ${e.message}`));
        });
        sock.on('close', () => {
            clearTimeout(timer);
            if (replies.length < commands.length)
                reject(new Error(`redis :${port}: connection closed after ${replies.length}/${commands.length} replies`));
        });
    });
}

/** One command; throws on a Redis error reply. opts.db selects a database, opts.password AUTHs first. */
export async function redisCmd(port, args, { db, password, timeoutMs } = {}) {
    const pre = [];
    if (password !== undefined)
        pre.push(['AUTH', password]);
    if (db !== undefined)
        pre.push(['SELECT', db]);
    const replies = await redisPipeline(port, [...pre, args], { timeoutMs });
    for (const r of replies)
        if (r instanceof Error)
            throw new Error(`redis :${port} ${args.join(' ').slice(0, 200)}: ${r.message}`);
    return replies[replies.length - 1];
}

/**
 * Starts `redis-server` on 127.0.0.1 (a free port unless given) with no RDB snapshots, AOF
 * optional (appendfsync always), in `dir` (a fresh temporary directory unless given). Resolves
 * once it answers PING (any answer: NOAUTH counts). Returns {port, dir, url, pid, stop(), restart(), output()}.
 */
export async function startRedis({ port, dir, aof = false, extra = [] } = {}) {
    port = port ?? (await freePort());
    dir = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'pe-redis-'));
    const argv = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', aof ? 'yes' : 'no',
        ...(aof ? ['--appendfsync', 'always'] : []), '--dir', dir, '--daemonize', 'no', ...extra];
    const proc = spawn('redis-server', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    redisChildren.add(proc);
    let out = '';
    proc.stdout.on('data', (c) => (out = (out + c).slice(-65536)));
    proc.stderr.on('data', (c) => (out = (out + c).slice(-65536)));
    let exitInfo = null;
    const exited = new Promise((resolve) => {
        proc.on('error', (e) => {
            exitInfo = { error: e };
            redisChildren.delete(proc);
            resolve(exitInfo);
        });
        proc.on('close', (code, signal) => {
            exitInfo = { code, signal };
            redisChildren.delete(proc);
            resolve(exitInfo);
        });
    });
    const h = {
        port,
        dir,
        aof,
        extra,
        pid: proc.pid,
        url: `redis://127.0.0.1:${port}`,
        output: () => out,
        exited: () => exitInfo,
        /** SIGTERM (or `signal`), then waits for the exit (5 s, then SIGKILL). */
        async stop(signal = 'SIGTERM') {
            if (!exitInfo) {
                try {
                    proc.kill(signal);
                } catch {
                    /* raced with its exit */
                }
                const r = await Promise.race([exited, delay(5000, null)]);
                if (!r) {
                    proc.kill('SIGKILL');
                    await exited;
                }
            }
            return exitInfo;
        },
        /** SIGSTOP: the server hangs, its sockets stay open (what a stuck Redis looks like). */
        pause() {
            proc.kill('SIGSTOP');
        },
        /** SIGCONT after pause(). */
        resume() {
            proc.kill('SIGCONT');
        },
        /** A new redis-server on the same port, directory and persistence settings (opts override). */
        restart(opts = {}) {
            return startRedis({ port, dir, aof, extra, ...opts });
        },
    };
    const deadline = Date.now() + 5000;
    for (;;) {
        if (exitInfo)
            throw new Error(`redis-server exited at start (${JSON.stringify(exitInfo)}); args: ${argv.join(' ')}\n${out}`);
        try {
            await redisPipeline(port, [['PING']], { timeoutMs: 500 });
            return h;
        } catch {
            /* not listening yet */
        }
        if (Date.now() >= deadline) {
            await h.stop('SIGKILL');
            throw new Error(`redis-server did not answer PING within 5 s; args: ${argv.join(' ')}\n${out}`);
        }
        await delay(20);
    }
}

/** Stops a startRedis() handle (null/undefined: nothing) and removes its directory. */
export async function stopRedis(r) {
    if (!r)
        return;
    await r.stop();
    rmDir(r.dir);
}

/** How many times Redis has run the command `name` (lower case, as INFO commandstats names it). */
export async function commandCalls(port, name) {
    const text = String(await redisCmd(port, ['INFO', 'commandstats']));
    const m = new RegExp(`^cmdstat_${name}:calls=(\\d+)`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
}

export function rmDir(dir) {
    try {
        fs.rmSync(dir, { recursive: true, force: true });
    } catch {
        /* best effort */
    }
}
