/*
 * Measurement (not a test): N keyless connections each send a publish head and all but the
 * last byte of a 1 MiB body; prints the server's RSS peak over 4 s and how many connections
 * the server left open. docs/security.md quotes it.
 *   PUSHEDGE_BIN=build-dev/edge/pushedge node tests/e2e/keyless-rss.mjs 300
 */
import net from 'node:net';
import { startServer, rssKiB, delay } from './lib.mjs';
const N = Number(process.argv[2] || 300), MIB = 1 << 20;
const srv = await startServer(['--api-key', 'K', '--max-message-size', String(MIB)]);
const base = rssKiB(srv.pid);
const socks = [];
for (let i = 0; i < N; i++) {
  const s = net.connect(srv.port, '127.0.0.1'); s.on('error', () => {}); s.on('data', () => {});
  s.write(`POST /api/publish?channel=c HTTP/1.1\r\nHost: x\r\nContent-Length: ${MIB}\r\n\r\n`);
  s.write(Buffer.alloc(MIB - 1, 97));
  socks.push(s);
}
let peak = base;
for (let i = 0; i < 40; i++) { await delay(100); peak = Math.max(peak, rssKiB(srv.pid)); }
const open = socks.filter((s) => !s.destroyed && s.readyState === 'open').length;
console.log(`N=${N}: RSS ${base} -> peak ${peak} KiB (+${((peak - base) / 1024).toFixed(1)} MiB) over 4 s; client sockets still open: ${open}`);
for (const s of socks) s.destroy();
await srv.stop('SIGKILL');
process.exit(0);
