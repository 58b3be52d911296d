/*
 * pushedge.js: the browser (and Node) client of pushedge, one dependency-free ES module.
 *
 *   import { PushEdge } from '/pushedge.js';
 *   const client = new PushEdge('https://push.example.com');
 *   const off = client.subscribe('news', (m) => render(m.data), { since: '0' });
 *   client.on('connected', ({ transport }) => ...);  // 'websocket' | 'sse' | 'poll'
 *   off(); client.close();
 *
 * What it does for the app (docs/client.md has the rules and their deadlines):
 *   - picks the transport by itself, WebSocket, then SSE, then long-polling, and falls back when
 *     one is refused, black-holed (opens, then stays silent), buffered (no byte arrives) or cut
 *     again and again by an idle-killing proxy; remembers what worked per server and probes the
 *     better transport again in the background, switching without loss;
 *   - keeps one position per channel (the last message ID), hands it to whichever transport
 *     comes next, drops duplicates by ID and tells the app about gaps;
 *   - reconnects with exponential backoff and full jitter, honours drain hints (WebSocket
 *     1001/1012, SSE `retry:` at the end of a stream, 503 + Retry-After) and does not take a
 *     throttled timer in a background tab for a dead connection.
 */

import { PushEdge } from './client.js';
import { compareIds, channelTag, encodeCursor, decodeCursor } from './cursor.js';

export { PushEdge, compareIds, channelTag, encodeCursor, decodeCursor };
export default PushEdge;
