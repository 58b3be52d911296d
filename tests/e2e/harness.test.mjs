/*
 * Self-test of the e2e harness (lib.mjs), no server needed: the SSE parser against the WHATWG
 * event-stream interpretation rules, fed whole, one byte at a time and in every two-piece
 * split; the Prometheus parser; ID comparison. If these fail, the server tests mean nothing.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SSEClient, cmpId, metricValue, parseMetrics } from './lib.mjs';

/** Parses `input` (string or Buffer) fed in the given pieces; returns the client. */
function parse(input, pieces = null) {
    const buf = Buffer.isBuffer(input) ? input : Buffer.from(input, 'utf8');
    const c = new SSEClient('harness');
    if (!pieces) {
        c.feed(buf);
    } else {
        let at = 0;
        for (const n of pieces) {
            c.feed(buf.subarray(at, at + n));
            at += n;
        }
        c.feed(buf.subarray(at));
    }
    c.finish(true);
    return c;
}

/** A stable view of what a stream produced. */
function view(c) {
    return {
        items: c.items.map(({ t, ...rest }) => rest),
        lastEventId: c.lastEventId,
    };
}

/** Asserts that every way of splitting `input` gives the same result as feeding it whole. */
function assertSplitInvariant(input) {
    const buf = Buffer.from(input, 'utf8');
    const whole = view(parse(buf));
    assert.deepEqual(view(parse(buf, Array(buf.length).fill(1))), whole, 'one byte at a time');
    for (let i = 1; i < buf.length; i++)
        assert.deepEqual(view(parse(buf, [i])), whole, `split at ${i}`);
    return whole;
}

describe('SSE parser (WHATWG rules)', () => {
    it('fields, comments, dispatch on a blank line', () => {
        const v = assertSplitInvariant('retry: 1500\n: hello\nevent: gap\nid: 7\ndata: {"a":1}\n\n');
        assert.deepEqual(v.items, [
            { kind: 'retry', value: 1500 },
            { kind: 'comment', text: ' hello', bytes: 7 },
            { kind: 'event', type: 'gap', data: '{"a":1}', lastEventId: '7', hasEventField: true, hadId: true },
        ]);
    });

    it('LF, CRLF and CR line endings are equivalent, also split across chunks', () => {
        const lf = view(parse('data: a\ndata: b\n\nid: 2\n\n'));
        for (const input of ['data: a\r\ndata: b\r\n\r\nid: 2\r\n\r\n', 'data: a\rdata: b\r\rid: 2\r\r', 'data: a\r\ndata: b\rdata: b2\n\n']) {
            const v = assertSplitInvariant(input);
            if (!input.includes('b2'))
                assert.deepEqual(v, lf, JSON.stringify(input));
        }
        assert.equal(lf.items[0].data, 'a\nb');
    });

    it('CR then LF in the next chunk is one line end, not two', () => {
        const c = parse('data: x\r\n\r\n', [8]);
        assert.equal(c.events.length, 1);
        assert.equal(c.events[0].data, 'x');
    });

    it('a bare id dispatches no event but sets the last event ID, which persists', () => {
        const v = assertSplitInvariant('id: 5-0\n\ndata: m\n\nid\n\ndata: n\n\n');
        assert.deepEqual(v.items, [
            { kind: 'id', lastEventId: '5-0' },
            { kind: 'event', type: 'message', data: 'm', lastEventId: '5-0', hasEventField: false, hadId: false },
            { kind: 'id', lastEventId: '' },
            { kind: 'event', type: 'message', data: 'n', lastEventId: '', hasEventField: false, hadId: false },
        ]);
    });

    it('an id containing NUL is ignored', () => {
        const v = assertSplitInvariant('id: 1\n\nid: a\u0000b\ndata: x\n\n');
        assert.equal(v.items[1].lastEventId, '1');
    });

    it('retry must be all ASCII digits', () => {
        const v = assertSplitInvariant('retry: 12a\nretry: -1\nretry:  5\nretry:7\n\n');
        assert.deepEqual(v.items, [
            { kind: 'badretry', value: '12a' },
            { kind: 'badretry', value: '-1' },
            { kind: 'badretry', value: ' 5' },
            { kind: 'retry', value: 7 },
        ]);
    });

    it('one leading space is stripped; a field without colon has an empty value; unknown fields are ignored', () => {
        const v = assertSplitInvariant('data:  two\ndata\nfoo: bar\ndata:x\n\n');
        assert.deepEqual(v.items, [{ kind: 'event', type: 'message', data: ' two\n\nx', lastEventId: '', hasEventField: false, hadId: false }]);
    });

    it('an empty event: field means "message"; event type resets after dispatch', () => {
        const v = assertSplitInvariant('event:\ndata: a\n\nevent: x\ndata: b\n\ndata: c\n\n');
        assert.deepEqual(v.items.map((i) => i.type), ['message', 'x', 'message']);
    });

    it('a leading BOM is ignored; UTF-8 split inside a character is decoded once whole', () => {
        const v = assertSplitInvariant('\uFEFFdata: héllo 😀\n\n');
        assert.equal(v.items[0].data, 'héllo 😀');
    });

    it('an incomplete event at EOF is discarded', () => {
        const c = parse('data: a\n\ndata: b\n');
        assert.deepEqual(c.events.map((e) => e.data), ['a']);
        const d = parse('data: a\n\nretry: 10');
        assert.equal(d.retries.length, 0);
        assert.equal(d.trailing, 'retry: 10');
    });

    it('next() consumes events in order and waits for more', async () => {
        const c = new SSEClient('next');
        c.feed(Buffer.from('data: 1\n\ndata: 2\n\n'));
        assert.equal((await c.next()).data, '1');
        const p = c.next((e) => e.data === '3', 1000);
        c.feed(Buffer.from('data: 3\n\n'));
        assert.equal((await p).data, '3');
        await assert.rejects(c.next(() => true, 50), /timed out/);
        c.finish(true);
        await assert.rejects(c.next(() => true, 1000), /ended/);
    });
});

describe('other helpers', () => {
    it('parseMetrics and metricValue', () => {
        const s = parseMetrics('# HELP a_total x\n# TYPE a_total counter\na_total 3\nb{transport="sse",x="q\\"z"} 1.5\nc +Inf\n');
        assert.equal(metricValue(s, 'a_total'), 3);
        assert.equal(metricValue(s, 'b', { transport: 'sse' }), 1.5);
        assert.equal(metricValue(s, 'b', { x: 'q"z' }), 1.5);
        assert.equal(metricValue(s, 'b', { transport: 'ws' }), undefined);
        assert.equal(metricValue(s, 'c'), Infinity);
        assert.throws(() => parseMetrics('not a metric line!\n'));
    });

    it('cmpId compares numerically, beyond 2^53', () => {
        assert.ok(cmpId('9-0', '10-0') < 0);
        assert.ok(cmpId('10-2', '10-10') < 0);
        assert.ok(cmpId('18446744073709551615-1', '18446744073709551615-0') > 0);
        assert.equal(cmpId('5-5', '5-5'), 0);
    });
});
