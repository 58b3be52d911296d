#!lua name=pushedge
-- redis_lib.lua: the Redis function library of pushedge's Redis engine (pubsub/engine_redis.c).
-- Every node loads it when it connects (FUNCTION LOAD REPLACE), on every master of a cluster.
-- It is embedded in the binary at build time (pubsub/embed_lua.py): comment lines like this
-- one are left out of the text sent to Redis, and pushedge writes its own --history-size,
-- --history-ttl and --idempotency-window into the three defaults below as it loads it.
--
-- Key layout (docs/operations.md): channel NAME is the stream `pe:{NAME}`; the braces are a
-- Redis Cluster hash tag, so everything of a channel lives in one slot. New entries are
-- announced on the pub/sub channel of the same name, as "<id> <json>".
--
--   FCALL pushedge_publish 1 pe:{NAME} <json> [<count> <age-ms>]   -> the new entry's ID
--   FCALL pushedge_publish 2 pe:{NAME} pe:{NAME}:idem:<KEY> <json> [<count> <age-ms> [<window-ms>]]
--     -> {ID, replayed}
--     The keyed form (docs/protocol.md "Publish", idempotency keys): if the key record (second
--     key) exists, nothing is appended and the answer is {its ID, 1}; otherwise the entry is
--     appended as below and the record set to its ID with a time to live of the window: {ID, 0}.
--     Check, append and record are one function call, so they are atomic; the record shares the
--     stream's hash tag, so both keys are in one Cluster slot.
--     Appends {d: <json>}, trims to the count and age, and PUBLISHes the entry, in one atomic
--     step: a backend may call it directly. Trimming is exact (one entry per append at steady
--     state) and records the newest removed ID in the stream's max-deleted-entry-id: that ID is
--     the gap boundary. XDEL records it itself, XTRIM does not (XSETID then). What each step
--     costs, and the alternatives measured: docs/architecture.md, "Cost of a publish in
--     Redis". A stream created by this call gets max-deleted-entry-id just below its first ID
--     (the "epoch" mark, sequence 2^64-1): a cursor from before the creation, that is from a
--     stream Redis lost, then reads as a gap rather than silently skipping what was lost.
--   FCALL_RO pushedge_read 1 pe:{NAME} <kind> <after> <strict> <count> [<age-ms>]
--     kind: "new", "oldest" or "after". Returns {gap, base, reached_end, id1, json1, ...}: the
--     same answer as the memory engine's read (pubsub/engine.h), computed next to the data in
--     one round trip. Entries older than the age limit (not trimmed yet on a quiet channel) are
--     skipped and count as trimmed. A stream trimmed by someone else (plain XADD with MAXLEN)
--     has a stale max-deleted-entry-id; its boundary is then taken just below its first entry.
-- IDs are compared as strings of digits (Lua numbers cannot hold a 64-bit sequence).
--
-- Compatibility: the library name, the function names, their arguments and answers are what
-- every pushedge version sharing a Redis relies on; change them only with a new name.

-- The defaults for callers that pass no count, age or window (a backend calling FCALL
-- directly): those of the node that loaded the library last (pushedge passes its own always).
local MAXLEN = 1000
local TTL_MS = 86400000
local WINDOW_MS = 300000
-- The sequence of the epoch mark: 2^64-1.
local MARK = '18446744073709551615'
-- "ms-seq" -> ms, seq (as strings).
local function split(id)
  local d = string.find(id, '-', 1, true)
  if d == nil then return id, '0' end
  return string.sub(id, 1, d - 1), string.sub(id, d + 1)
end
-- Compares two decimal strings without leading zeros by value: -1, 0 or 1.
local function cmpn(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local function cmp(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  local c = cmpn(am, bm)
  if c ~= 0 then return c end
  return cmpn(as, bs)
end
-- The ID just below id (its predecessor; a sequence of 16 digits or more is kept as it is,
-- since Lua numbers cannot hold it exactly).
local function pred(id)
  local ms, seq = split(id)
  if seq ~= '0' and #seq < 16 then return ms .. '-' .. string.format('%.0f', tonumber(seq) - 1) end
  if seq ~= '0' then return id end
  return string.format('%.0f', tonumber(ms) - 1) .. '-' .. MARK
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- At most this many entries are removed by XDEL in one call; a larger count trim (a node with a
-- smaller --history-size than the last one's) uses XTRIM, once.
local DEL_MAX = 16
-- Appends the entry {<field>: data} (field d: a message; j, l: a presence event), trims, and
-- announces it; returns its ID. Messages are announced as "<id> <json>", presence events as
-- "<id> \30<field><json>": a byte no JSON text starts with, so no publish can pass for one.
local function append(key, field, data, maxlen, ttl)
  local len = redis.call('XLEN', key)
  local created = len == 0 and redis.call('EXISTS', key) == 0
  -- The count limit removes the `drop` oldest entries once this one is in (1 at steady state).
  -- The oldest entries, read before the append: the `drop` ones, or the first one (the age
  -- limit can only have caught entries from the head on).
  local drop = len + 1 - maxlen
  if drop < 0 then drop = 0 end
  local old = {}
  if len > 0 and drop <= DEL_MAX then
    old = redis.call('XRANGE', key, '-', '+', 'COUNT', drop > 0 and drop or 1)
  end
  local id = redis.call('XADD', key, '*', field, data)
  -- The newest removed entry: the gap boundary, recorded as max-deleted-entry-id.
  local removed, how, min = nil, nil, nil
  if drop > len then removed, how = id, 'count'
  elseif drop > DEL_MAX then
    -- (reads up to --history-size entries, once: such a cut happens when the size shrinks)
    local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', maxlen + 1)
    removed, how = newest[maxlen + 1][1], 'count'
  elseif drop > 0 then removed, how = old[drop][1], 'del' end
  -- The age limit, against the new entry's time (its ID's milliseconds: the clock, or later if
  -- the clock went back). Only when the newest of the old entries read is older is there
  -- anything to look for; the reverse range then starts in the listpack node holding it (still
  -- there: nothing is removed yet), so it costs a node, not the stream.
  -- (An ID is below <cutoff>-0 when its milliseconds are below cutoff: compared as numbers,
  -- exact below 2^53.)
  if #old > 0 then
    local cutoff = tonumber(string.match(id, '^%d+')) - ttl
    if cutoff > 0 and tonumber(string.match(old[#old][1], '^%d+')) < cutoff then
      min = string.format('%.0f', cutoff) .. '-0'
      local aged = redis.call('XREVRANGE', key, '(' .. min, '-', 'COUNT', 1)[1][1]
      if removed == nil or cmp(aged, removed) > 0 then removed, how = aged, 'age' end
    end
  end
  if how == 'del' then
    -- XDEL records the newest ID it removes as max-deleted-entry-id itself (XTRIM does not).
    if drop == 1 then redis.call('XDEL', key, removed)
    else
      local ids = {}
      for i = 1, drop do ids[i] = old[i][1] end
      redis.call('XDEL', key, unpack(ids))
    end
  elseif how ~= nil then
    -- Every entry the count limit removes is older than `aged`, so below `min` too.
    if how == 'age' then redis.call('XTRIM', key, 'MINID', min)
    else redis.call('XTRIM', key, 'MAXLEN', maxlen) end
  end
  if created and removed == nil then
    local ms = split(id)
    if ms ~= '0' then removed, how = pred(ms .. '-0'), 'mark' end
  end
  if how ~= nil and how ~= 'del' then redis.call('XSETID', key, id, 'MAXDELETEDID', removed) end
  if field == 'd' then redis.call('PUBLISH', key, id .. ' ' .. data)
  else redis.call('PUBLISH', key, id .. ' \30' .. field .. data) end
  return id
end
local function publish(keys, args)
  local key, ikey, data = keys[1], keys[2], args[1]
  if key == nil or data == nil then
    return redis.error_reply('ERR usage: FCALL pushedge_publish 1 pe:{channel} <json> [<count> <age-ms>]')
  end
  if ikey ~= nil then
    local prev = redis.call('GET', ikey)
    if prev then return {prev, 1} end
  end
  local id = append(key, 'd', data, tonumber(args[2] or MAXLEN), tonumber(args[3] or TTL_MS))
  if ikey ~= nil then
    redis.call('SET', ikey, id, 'PX', args[4] or WINDOW_MS)
    return {id, 0}
  end
  return id
end
local function read(keys, args)
  local key, kind, after, strict, count = keys[1], args[1], args[2], args[3] == '1', tonumber(args[4])
  local ttl = tonumber(args[5] or TTL_MS)
  local last, trimmed = '0-0', '0-0'
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    local len, added, first, head = 0, 0, nil, nil
    for i = 1, #info, 2 do
      local k = info[i]
      if k == 'last-generated-id' then last = info[i + 1]
      elseif k == 'max-deleted-entry-id' then trimmed = info[i + 1]
      elseif k == 'length' then len = info[i + 1]
      elseif k == 'entries-added' then added = info[i + 1]
      elseif k == 'recorded-first-entry-id' then first = info[i + 1]
      elseif k == 'first-entry' and info[i + 1] then head = info[i + 1][1] end
    end
    local _, tseq = split(trimmed)
    if added > len and (trimmed == '0-0' or tseq == MARK) and first ~= nil and first ~= '0-0' then
      trimmed = pred(first)
    end
    -- Entries past the age limit, not trimmed yet: only when the first entry is one (a reverse
    -- range below every entry would walk the whole stream).
    local cutoff = now_ms() - ttl
    local min = string.format('%.0f', cutoff) .. '-0'
    if cutoff > 0 and head ~= nil and cmp(head, min) < 0 then
      local old = redis.call('XREVRANGE', key, '(' .. min, '-', 'COUNT', 1)
      if #old == 1 and cmp(old[1][1], trimmed) > 0 then trimmed = old[1][1] end
    end
  end
  local gap, base = 0, after
  if kind == 'new' then base = last
  elseif kind == 'oldest' then base = trimmed
  else
    local _, tseq = split(trimmed)
    if cmp(after, trimmed) < 0 and not (tseq == MARK and (after == '0-0' or not strict)) then gap, base = 1, trimmed
    elseif strict and cmp(after, last) > 0 then gap, base = 1, trimmed end
  end
  local res = {gap, base, 1}
  if kind == 'new' or count == 0 or cmp(base, last) >= 0 then return res end
  local start = '(' .. base
  if cmp(base, trimmed) < 0 then start = '(' .. trimmed end
  local entries = redis.call('XRANGE', key, start, '+', 'COUNT', count + 1)
  local n = #entries
  if n > count then n = count; res[3] = 0 end
  for i = 1, n do
    local e = entries[i]
    local f, v = e[2], nil
    if (f[1] == 'j' or f[1] == 'l') and #f == 2 then v = '\30' .. f[1] .. f[2] end
    for j = 1, #f, 2 do
      if v ~= nil then break end
      if f[j] == 'd' or f[j] == 'data' then v = f[j + 1]; break end
    end
    if v == nil then v = f[2] or 'null' end
    res[#res + 1] = e[1]
    res[#res + 1] = v
  end
  return res
end
-- Presence (docs/architecture.md "Presence"): a channel's members are the hash
-- pe:{NAME}:members (connection id -> {"client","user","transport","since"}), next to the
-- stream in the same slot, so a join or leave and its event are one atomic step.
--   FCALL pushedge_presence 2 pe:{NAME} pe:{NAME}:members <join|leave> <client> <member-json> <max>
--     [<count> <age-ms>]   -> 1 if the registry changed, else 0
--     A join that adds a member, or a leave that removes one, appends the event {j|l:
--     {"channel","client","user"}} to the stream (trimmed and announced as a message is) while
--     the channel has at most <max> members (counted with the member); past it only the hash
--     changes. The event is cut from the member's JSON, whose layout pushedge fixes.
local function presence(keys, args)
  local key, mkey, op, client, member, max = keys[1], keys[2], args[1], args[2], args[3], tonumber(args[4])
  if key == nil or mkey == nil or client == nil or max == nil then
    return redis.error_reply('ERR usage: FCALL pushedge_presence 2 pe:{channel} pe:{channel}:members join|leave <client> <member> <max>')
  end
  if op == 'join' then
    if redis.call('HSET', mkey, client, member) == 0 then return 0 end
    if redis.call('HLEN', mkey) > max then return 1 end
  else
    member = redis.call('HGET', mkey, client)
    if not member then return 0 end
    redis.call('HDEL', mkey, client)
    if redis.call('HLEN', mkey) >= max then return 1 end
  end
  local cut = string.find(member, ',"transport":', 1, true)
  if cut == nil then return 1 end
  local event = '{"channel":"' .. string.sub(key, 5, -2) .. '",' .. string.sub(member, 2, cut - 1) .. '}'
  append(key, op == 'join' and 'j' or 'l', event, tonumber(args[5] or MAXLEN), tonumber(args[6] or TTL_MS))
  return 1
end
-- Node heartbeats: pe:nodes is a sorted set of node ids scored by their last beat (Redis's
-- clock, ms).
--   FCALL pushedge_beat 1 pe:nodes <node> <timeout-ms>  -> {fresh, dead node ids...}
--     Records the beat (fresh is 1 when the node was not listed: its first beat, or it had been
--     swept as dead and must register its members again) and returns the nodes silent for
--     longer than the timeout. Those are re-scored now: the caller sweeps them (and removes them
--     when done); if it dies before that, they fall silent again and another node sweeps them.
local function beat(keys, args)
  local now = now_ms()
  local res = {redis.call('ZADD', keys[1], now, args[1])}
  local dead = redis.call('ZRANGEBYSCORE', keys[1], '-inf', '(' .. string.format('%.0f', now - tonumber(args[2])))
  for i = 1, #dead do
    redis.call('ZADD', keys[1], now, dead[i])
    res[#res + 1] = dead[i]
  end
  return res
end
redis.register_function('pushedge_publish', publish)
redis.register_function('pushedge_presence', presence)
redis.register_function('pushedge_beat', beat)
redis.register_function{function_name = 'pushedge_read', callback = read, flags = {'no-writes'}}
