/*
 * redis_lib.h: the Redis function library that pushedge loads at start (FUNCTION LOAD REPLACE),
 * as a printf format whose three %llu are the default retention count and age (ms) and the
 * idempotency window (ms): the values of the pushedge that loaded it last, for backends that
 * publish without giving them. pushedge itself always passes its own, so nodes with different
 * settings share one Redis. Private to pubsub/.
 *
 * Key layout (docs/operations.md): channel NAME is the stream `pe:{NAME}`; the braces are a
 * Redis Cluster hash tag, so everything of a channel lives in one slot. New entries are
 * announced on the pub/sub channel of the same name, as "<id> <json>".
 *
 *   FCALL pushedge_publish 1 pe:{NAME} <json> [<count> <age-ms>]   -> the new entry's ID
 *   FCALL pushedge_publish 2 pe:{NAME} pe:{NAME}:idem:<KEY> <json> [<count> <age-ms> [<window-ms>]]
 *     -> {ID, replayed}
 *     The keyed form (CONTRACT.md "Reliable publishing"): if the key record (second key) exists,
 *     nothing is appended and the answer is {its ID, 1}; otherwise the entry is appended as
 *     below and the record set to its ID with a time to live of the window: {ID, 0}. Check,
 *     append and record are one function call, so they are atomic; the record shares the
 *     stream's hash tag, so both keys are in one Cluster slot.
 *     Appends {d: <json>}, trims to the count and age, and PUBLISHes the entry, in one atomic
 *     step: a backend may call it directly. Trimming is exact (one entry per append at steady
 *     state) and records the newest removed ID in the stream's max-deleted-entry-id, which
 *     Redis itself does not update when trimming: that ID is the gap boundary. A stream created
 *     by this call gets max-deleted-entry-id just below its first ID (the "epoch" mark,
 *     sequence 2^64-1): a cursor from before the creation, that is from a stream Redis lost,
 *     then reads as a gap rather than silently skipping what was lost.
 *   FCALL_RO pushedge_read 1 pe:{NAME} <kind> <after> <strict> <count> [<age-ms>]
 *     kind: "new", "oldest" or "after". Returns {gap, base, reached_end, id1, json1, ...}: the
 *     same answer as the memory engine's read (engine.h), computed next to the data in one round
 *     trip. Entries older than the age limit (not trimmed yet on a quiet channel) are skipped
 *     and count as trimmed. A stream trimmed by someone else (plain XADD with MAXLEN) has a
 *     stale max-deleted-entry-id; its boundary is then taken just below its first entry.
 * IDs are compared as strings of digits (Lua numbers cannot hold a 64-bit sequence).
 */
#ifndef PE_REDIS_LIB_H
#define PE_REDIS_LIB_H

#define PE_REDIS_LIB_FORMAT                                                                                                        \
    "#!lua name=pushedge\n"                                                                                                        \
    "local MAXLEN = %llu\n"                                                                                                        \
    "local TTL_MS = %llu\n"                                                                                                        \
    "local WINDOW_MS = %llu\n"                                                                                                     \
    "local MARK = '18446744073709551615'\n"                                                                                        \
    "local function split(id)\n"                                                                                                   \
    "  local d = string.find(id, '-', 1, true)\n"                                                                                  \
    "  if d == nil then return id, '0' end\n"                                                                                      \
    "  return string.sub(id, 1, d - 1), string.sub(id, d + 1)\n"                                                                   \
    "end\n"                                                                                                                        \
    "local function cmpn(a, b)\n"                                                                                                  \
    "  if #a ~= #b then return #a < #b and -1 or 1 end\n"                                                                          \
    "  if a == b then return 0 end\n"                                                                                              \
    "  return a < b and -1 or 1\n"                                                                                                 \
    "end\n"                                                                                                                        \
    "local function cmp(a, b)\n"                                                                                                   \
    "  local am, as = split(a)\n"                                                                                                  \
    "  local bm, bs = split(b)\n"                                                                                                  \
    "  local c = cmpn(am, bm)\n"                                                                                                   \
    "  if c ~= 0 then return c end\n"                                                                                              \
    "  return cmpn(as, bs)\n"                                                                                                      \
    "end\n"                                                                                                                        \
    "local function pred(id)\n"                                                                                                    \
    "  local ms, seq = split(id)\n"                                                                                                \
    "  if seq ~= '0' and #seq < 16 then return ms .. '-' .. string.format('%%.0f', tonumber(seq) - 1) end\n"                       \
    "  if seq ~= '0' then return id end\n"                                                                                         \
    "  return string.format('%%.0f', tonumber(ms) - 1) .. '-' .. MARK\n"                                                           \
    "end\n"                                                                                                                        \
    "local function now_ms()\n"                                                                                                    \
    "  local t = redis.call('TIME')\n"                                                                                             \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                                                         \
    "end\n"                                                                                                                        \
    "local function publish(keys, args)\n"                                                                                         \
    "  local key, ikey, data = keys[1], keys[2], args[1]\n"                                                                        \
    "  if key == nil or data == nil then\n"                                                                                        \
    "    return redis.error_reply('ERR usage: FCALL pushedge_publish 1 pe:{channel} <json> [<count> <age-ms>]')\n"                 \
    "  end\n"                                                                                                                      \
    "  if ikey ~= nil then\n"                                                                                                      \
    "    local prev = redis.call('GET', ikey)\n"                                                                                   \
    "    if prev then return {prev, 1} end\n"                                                                                      \
    "  end\n"                                                                                                                      \
    "  local maxlen, ttl = tonumber(args[2] or MAXLEN), tonumber(args[3] or TTL_MS)\n"                                             \
    "  local created = redis.call('EXISTS', key) == 0\n"                                                                           \
    "  local id = redis.call('XADD', key, '*', 'd', data)\n"                                                                       \
    "  local removed = nil\n"                                                                                                      \
    "  if created then\n"                                                                                                          \
    "    local ms = split(id)\n"                                                                                                   \
    "    if ms ~= '0' then removed = pred(ms .. '-0') end\n"                                                                       \
    "  end\n"                                                                                                                      \
    "  if redis.call('XLEN', key) > maxlen then\n"                                                                                 \
    "    local ex = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)\n"                                                             \
    "    removed = ex[1][1]\n"                                                                                                     \
    "    redis.call('XTRIM', key, 'MAXLEN', maxlen)\n"                                                                             \
    "  end\n"                                                                                                                      \
    "  local cutoff = now_ms() - ttl\n"                                                                                            \
    "  if cutoff > 0 then\n"                                                                                                       \
    "    local old = redis.call('XREVRANGE', key, '(' .. string.format('%%.0f', cutoff) .. '-0', '-', 'COUNT', 1)\n"               \
    "    if #old == 1 then\n"                                                                                                      \
    "      redis.call('XTRIM', key, 'MINID', string.format('%%.0f', cutoff) .. '-0')\n"                                            \
    "      if removed == nil or cmp(old[1][1], removed) > 0 then removed = old[1][1] end\n"                                        \
    "    end\n"                                                                                                                    \
    "  end\n"                                                                                                                      \
    "  if removed ~= nil then redis.call('XSETID', key, id, 'MAXDELETEDID', removed) end\n"                                        \
    "  redis.call('PUBLISH', key, id .. ' ' .. data)\n"                                                                            \
    "  if ikey ~= nil then\n"                                                                                                      \
    "    redis.call('SET', ikey, id, 'PX', tonumber(args[4] or WINDOW_MS))\n"                                                      \
    "    return {id, 0}\n"                                                                                                         \
    "  end\n"                                                                                                                      \
    "  return id\n"                                                                                                                \
    "end\n"                                                                                                                        \
    "local function read(keys, args)\n"                                                                                            \
    "  local key, kind, after, strict, count = keys[1], args[1], args[2], args[3] == '1', tonumber(args[4])\n"                     \
    "  local ttl = tonumber(args[5] or TTL_MS)\n"                                                                                  \
    "  local last, trimmed = '0-0', '0-0'\n"                                                                                       \
    "  if redis.call('EXISTS', key) == 1 then\n"                                                                                   \
    "    local info = redis.call('XINFO', 'STREAM', key)\n"                                                                        \
    "    local len, added, first = 0, 0, nil\n"                                                                                    \
    "    for i = 1, #info, 2 do\n"                                                                                                 \
    "      local k = info[i]\n"                                                                                                    \
    "      if k == 'last-generated-id' then last = info[i + 1]\n"                                                                  \
    "      elseif k == 'max-deleted-entry-id' then trimmed = info[i + 1]\n"                                                        \
    "      elseif k == 'length' then len = info[i + 1]\n"                                                                          \
    "      elseif k == 'entries-added' then added = info[i + 1]\n"                                                                 \
    "      elseif k == 'recorded-first-entry-id' then first = info[i + 1] end\n"                                                   \
    "    end\n"                                                                                                                    \
    "    local _, tseq = split(trimmed)\n"                                                                                         \
    "    if added > len and (trimmed == '0-0' or tseq == MARK) and first ~= nil and first ~= '0-0' then\n"                         \
    "      trimmed = pred(first)\n"                                                                                                \
    "    end\n"                                                                                                                    \
    "    local cutoff = now_ms() - ttl\n"                                                                                          \
    "    if cutoff > 0 then\n"                                                                                                     \
    "      local old = redis.call('XREVRANGE', key, '(' .. string.format('%%.0f', cutoff) .. '-0', '-', 'COUNT', 1)\n"             \
    "      if #old == 1 and cmp(old[1][1], trimmed) > 0 then trimmed = old[1][1] end\n"                                            \
    "    end\n"                                                                                                                    \
    "  end\n"                                                                                                                      \
    "  local gap, base = 0, after\n"                                                                                               \
    "  if kind == 'new' then base = last\n"                                                                                        \
    "  elseif kind == 'oldest' then base = trimmed\n"                                                                              \
    "  else\n"                                                                                                                     \
    "    local _, tseq = split(trimmed)\n"                                                                                         \
    "    if cmp(after, trimmed) < 0 and not (tseq == MARK and (after == '0-0' or not strict)) then gap, base = 1, trimmed\n"       \
    "    elseif strict and cmp(after, last) > 0 then gap, base = 1, trimmed end\n"                                                 \
    "  end\n"                                                                                                                      \
    "  local res = {gap, base, 1}\n"                                                                                               \
    "  if kind == 'new' or count == 0 or cmp(base, last) >= 0 then return res end\n"                                               \
    "  local start = '(' .. base\n"                                                                                                \
    "  if cmp(base, trimmed) < 0 then start = '(' .. trimmed end\n"                                                                \
    "  local entries = redis.call('XRANGE', key, start, '+', 'COUNT', count + 1)\n"                                                \
    "  local n = #entries\n"                                                                                                       \
    "  if n > count then n = count; res[3] = 0 end\n"                                                                              \
    "  for i = 1, n do\n"                                                                                                          \
    "    local e = entries[i]\n"                                                                                                   \
    "    local f, v = e[2], nil\n"                                                                                                 \
    "    for j = 1, #f, 2 do\n"                                                                                                    \
    "      if f[j] == 'd' or f[j] == 'data' then v = f[j + 1]; break end\n"                                                        \
    "    end\n"                                                                                                                    \
    "    if v == nil then v = f[2] or 'null' end\n"                                                                                \
    "    res[#res + 1] = e[1]\n"                                                                                                   \
    "    res[#res + 1] = v\n"                                                                                                      \
    "  end\n"                                                                                                                      \
    "  return res\n"                                                                                                               \
    "end\n"                                                                                                                        \
    "redis.register_function('pushedge_publish', publish)\n"                                                                       \
    "redis.register_function{function_name = 'pushedge_read', callback = read, flags = {'no-writes'}}\n"

#endif
