/*
 * Self-test of the harness's exit checks (lib.mjs), against a fake server (a node script that
 * answers HTTP and ends as told) and child test runs: stop() rejects an unexpected exit code,
 * a signal, a hang past the stop bound and any sanitizer or runtime-error report, and accepts
 * only what the test declared; a server a test forgot is stopped and checked at the end of the
 * file; with CI=true a missing dependency fails instead of skipping; one-core machines get two
 * loops. If these fail, a leaking or crashing server could pass every other suite.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runOnce, startServer, threadsArgs, waitUntil } from './lib.mjs';

const LIB = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), 'lib.mjs')).href;

/* The fake server: --listen HOST:PORT, 200 for every request; on SIGTERM it prints FAKE_PRINT
 * and exits with FAKE_CODE, or ignores SIGTERM when FAKE_HANG=1. */
const FAKE = `#!/usr/bin/env node
const http = require('node:http');
const i = process.argv.indexOf('--listen');
const [host, port] = process.argv[i + 1].split(':');
const srv = http.createServer((req, res) => res.end('ok'));
srv.listen(Number(port), host);
if (process.argv.includes('--print-now'))
    process.stderr.write(process.env.FAKE_PRINT + '\\n' + 'x'.repeat(Number(process.env.FAKE_FILL || 0)) + '\\n');
process.on('SIGTERM', () => {
    if (process.env.FAKE_HANG === '1')
        return;
    if (process.env.FAKE_PRINT)
        process.stderr.write(process.env.FAKE_PRINT + '\\n');
    process.exit(Number(process.env.FAKE_CODE || 0));
});
`;

let dir, fake, savedBin;
before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-exitcheck-'));
    fake = path.join(dir, 'fake-pushedge');
    fs.writeFileSync(fake, FAKE, { mode: 0o755 });
    savedBin = process.env.PUSHEDGE_BIN;
    process.env.PUSHEDGE_BIN = fake;
});
after(() => {
    process.env.PUSHEDGE_BIN = savedBin;
    fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Runs a test file with `source` (LIB replaced) in env, as meson does (`node FILE`, or with
 * direct === false `node --test FILE`); resolves to {code, out}.
 */
function childRun(source, env, { direct = true } = {}) {
    const file = path.join(dir, `child-${Math.random().toString(36).slice(2)}.test.mjs`);
    fs.writeFileSync(file, source.split('LIB').join(LIB));
    return new Promise((resolve) => {
        const clean = { ...process.env };
        delete clean.CI;
        delete clean.NODE_TEST_CONTEXT; /* else the child's runner thinks it is nested and runs nothing */
        delete clean.E2E_ENGINE;
        delete clean.PUSHEDGE_TEST_REDIS_URL;
        const args = direct ? ['--test-reporter=spec', file] : ['--test', '--test-reporter=spec', file];
        const p = spawn(process.execPath, args, { env: { ...clean, PUSHEDGE_BIN: fake, ...env } });
        let out = '';
        p.stdout.on('data', (c) => (out += c));
        p.stderr.on('data', (c) => (out += c));
        const timer = setTimeout(() => p.kill('SIGKILL'), 30000);
        p.on('close', (code) => {
            clearTimeout(timer);
            resolve({ code, out });
        });
    });
}

describe('stop() checks how the server ended', () => {
    it('a clean exit resolves', async () => {
        const srv = await startServer();
        const r = await srv.stop();
        assert.equal(r.code, 0);
    });

    it('an unexpected exit code rejects, naming it', async () => {
        const srv = await startServer([], { FAKE_CODE: '3' });
        await assert.rejects(srv.stop(), /exited with code 3, signal null; expected code 0/);
    });

    it('a declared exit code resolves, another one rejects', async () => {
        const a = await startServer([], { FAKE_CODE: '3' });
        assert.equal((await a.stop('SIGTERM', { expectCode: 3 })).code, 3);
        const b = await startServer([], { FAKE_CODE: '0' });
        await assert.rejects(b.stop('SIGTERM', { expectCode: 3 }), /expected code 3/);
    });

    it('stop("SIGKILL") expects the kill; a later call resolves to the first result', async () => {
        const srv = await startServer();
        const r = await srv.stop('SIGKILL');
        assert.equal(r.signal, 'SIGKILL');
        assert.equal(await srv.stop(), r);
    });

    it('a server killed by a signal it was not sent rejects', async () => {
        const srv = await startServer();
        process.kill(srv.pid, 'SIGKILL');
        await assert.rejects(srv.stop(), /signal SIGKILL; expected code 0/);
    });

    for (const [name, line] of [
        ['LeakSanitizer', '==1==ERROR: LeakSanitizer: detected memory leaks'],
        ['AddressSanitizer', '==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1'],
        ['UBSan', 'edge/ws.c:10:5: runtime error: signed integer overflow'],
        ['ThreadSanitizer', 'WARNING: ThreadSanitizer: data race (pid=1)'],
        ['a sanitizer summary', 'SUMMARY: AddressSanitizer: 8192 byte(s) leaked in 1 allocation(s).'],
    ]) {
        it(`a ${name} report rejects even with exit code 0 (or the declared one)`, async () => {
            const srv = await startServer([], { FAKE_PRINT: line });
            await assert.rejects(srv.stop(), (e) => e.message.includes(`printed a sanitizer report: ${line}`));
            const declared = await startServer([], { FAKE_PRINT: line, FAKE_CODE: '23' });
            await assert.rejects(declared.stop('SIGTERM', { expectCode: 23 }), /sanitizer report/);
        });
    }

    it('a report printed long before the exit is still seen (output is capped)', async () => {
        const srv = await startServer(['--print-now'], { FAKE_PRINT: '==1==ERROR: AddressSanitizer: stack-overflow', FAKE_FILL: String(2 << 20) });
        await waitUntil(() => srv.output().stderr.length >= 1 << 20, { what: 'the filler output' });
        assert.ok(!srv.output().stderr.includes('AddressSanitizer'), 'the report scrolled out of the kept output');
        await assert.rejects(srv.stop(), /ERROR: AddressSanitizer: stack-overflow/);
    });

    it('a server that ignores SIGTERM past the bound is killed and rejects', { timeout: 20000 }, async () => {
        const srv = await startServer(['--drain-timeout', '0'], { FAKE_HANG: '1' });
        await assert.rejects(srv.stop(), /did not exit within \d+ ms of being stopped \(killed\)/);
    });

    it('runOnce() rejects a report whatever the exit code', async () => {
        const script = path.join(dir, 'report-once');
        fs.writeFileSync(script, '#!/bin/sh\necho "x.c:1:1: runtime error: load of null pointer" >&2\nexit 2\n', { mode: 0o755 });
        process.env.PUSHEDGE_BIN = script;
        try {
            await assert.rejects(runOnce(['--bad']), /printed a sanitizer report: x.c:1:1: runtime error/);
        } finally {
            process.env.PUSHEDGE_BIN = fake;
        }
    });
});

describe('servers nobody stopped, skips in CI, thread count', () => {
    it('a server its test forgot is stopped and checked at the end of the file, which then fails', { timeout: 30000 }, async () => {
        const src = `import { it } from 'node:test';
import { startServer } from 'LIB';
it('forgets its server', async () => { await startServer([], { FAKE_CODE: '4' }); });
`;
        const r = await childRun(src, {});
        assert.equal(r.code, 1, r.out);
        assert.match(r.out, /a server its test never stopped: .* exited with code 4/);
        const clean = await childRun(src.replace("FAKE_CODE: '4'", "FAKE_CODE: '0'"), {});
        assert.equal(clean.code, 0, clean.out);
    });

    it('unavailable(): a skip outside CI, a failure naming what is missing with CI=true', { timeout: 30000 }, async () => {
        const src = `import { describe, it } from 'node:test';
import { unavailable } from 'LIB';
describe('needs it', { skip: unavailable('frobnicator is not installed') }, () => { it('x', () => {}); });
`;
        const local = await childRun(src, {});
        assert.equal(local.code, 0, local.out);
        assert.match(local.out, /frobnicator is not installed/);
        const ci = await childRun(src, { CI: 'true' });
        assert.equal(ci.code, 1, ci.out);
        assert.match(ci.out, /CI=true forbids skipping: frobnicator is not installed/);
    });

    it('E2E_ENGINE=redis without a Redis: meson SKIP (77) outside CI, a failure with CI=true', { timeout: 30000 }, async () => {
        const src = `import 'LIB';\n`;
        const local = await childRun(src, { E2E_ENGINE: 'redis' });
        assert.equal(local.code, 77, local.out);
        assert.match(local.out, /skipped: E2E_ENGINE=redis needs a Redis/);
        assert.equal((await childRun(src, { E2E_ENGINE: 'redis' }, { direct: false })).code, 0, 'under node --test');
        const ci = await childRun(src, { E2E_ENGINE: 'redis', CI: 'true' });
        assert.equal(ci.code, 1, ci.out);
        assert.match(ci.out, /CI=true forbids skipping: E2E_ENGINE=redis needs a Redis/);
    });

    it('a server gets --threads 2 on a one-core machine unless the test chose a count', () => {
        assert.deepEqual(threadsArgs([], {}, 1), ['--threads', '2']);
        assert.deepEqual(threadsArgs([], {}, 2), []);
        assert.deepEqual(threadsArgs(['--threads', '1'], {}, 1), []);
        assert.deepEqual(threadsArgs(['--threads=3'], {}, 1), []);
        assert.deepEqual(threadsArgs([], { PUSHEDGE_THREADS: '1' }, 1), []);
        const cfg = path.join(dir, 'threads.json');
        fs.writeFileSync(cfg, JSON.stringify({ threads: 1 }));
        assert.deepEqual(threadsArgs(['--config', cfg], {}, 1), []);
        fs.writeFileSync(cfg, JSON.stringify({ history_size: 5 }));
        assert.deepEqual(threadsArgs(['--config', cfg], {}, 1), ['--threads', '2']);
    });
});
