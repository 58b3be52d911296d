#!lua name=pushedge
-- redis_lib.lua: the Redis function library of pushedge's Redis engine (pubsub/engine_redis.c).
-- Every node loads it when it connects (FUNCTION LOAD REPLACE), on every master of a cluster.
-- It is embedded in the binary at build time (pubsub/embed_lua.py): comment lines like this
-- one are left out of the text sent to Redis, and pushedge writes its own --history-size,
-- --history-ttl and --idempotency-window into the three defaults below as it loads it.
--
-- Key layout (docs/operations.md): channel NAME is the stream `pe:{NAME}`; the braces are a
-- Redis Cluster hash tag, so everything of a channel lives in one slot. New entries are
-- announced on the pub/sub channel of the same name, as "<id> <json>" (pushedge_publish_batch:
-- a call's a few KiB per message, "\29<id> <length> <json>..."; see "Several messages"). The list
-- `pe:{NAME}:ids` indexes the stream's IDs for the trimming (see "The index" below).
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
--     the gap boundary. XDEL records it itself, XTRIM does not (a cut of several removes the
--     newest by XDEL). What each step costs, and the alternatives measured:
--     docs/architecture.md, "Cost of a publish in Redis". A stream created by this call gets max-deleted-entry-id just below its first ID
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
-- every pushedge version sharing a Redis relies on; change them only with a new name. The
-- library has no version number: a node finds an older one by what it lacks ("Function not
-- found" for pushedge_publish_batch, a bare ID answering a keyed publish) and loads its own
-- again (engine_redis.c resend_singly, reload_library).

-- The defaults for callers that pass no count, age or window (a backend calling FCALL
-- directly): those of the node that loaded the library last (pushedge passes its own always).
local MAXLEN = 1000
local TTL_MS = 86400000
local WINDOW_MS = 300000
-- The sequence of the epoch mark: 2^64-1.
local MARK = '18446744073709551615'
-- A batch's announcement is cut into PUBLISHes of about this many bytes of JSON (see many).
local ANNOUNCE_BYTES = 4096
-- A count, age or window argument as a number: whole, from 1 to 10^15 (exact in a Lua number,
-- and written back by redis.call as plain digits, which every command takes), else nil. Checked
-- before anything is stored: an argument a command refused after the XADD would fail the call
-- with its entry stored but neither indexed nor announced.
local function whole(v)
  local n = tonumber(v)
  if n == nil or n < 1 or n > 1e15 or n % 1 ~= 0 then return nil end
  return n
end
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
-- The index of a channel: the list pe:{NAME}:ids holds the IDs of the stream's entries, oldest
-- first (a key derived from the stream's, so it has the same hash tag and Cluster slot, and the
-- call keeps the shape every earlier version has). The count limit pops the oldest IDs off it
-- and XDELs them: XDEL records the newest ID it removes as the stream's max-deleted-entry-id, the
-- gap boundary. Knowing what to remove from the list costs two cheap list commands, where
-- reading the stream's head (XRANGE) cost more than the removal itself (docs/architecture.md,
-- "Cost of a publish in Redis"). The list is checked against the stream's length on every call
-- (XLEN, once per call whatever the number of messages): entries appended by someone else (a
-- plain XADD producer) are added to it from the stream's tail; a list that cannot be right (none
-- yet: the first publish, or a stream written by an earlier version; or more IDs than the
-- stream has entries: the stream was deleted or cut by someone else) is rebuilt from the stream.
--
-- A call appends m entries (m >= 1; new: their IDs in order, or nil when m is 1; last: the
-- newest) before it indexes them, all at once.
--
-- RPUSHes t[i..j] onto the list ids, 1,000 at a time (unpack's bound); returns the list's length.
local function push_all(ids, t, i, j)
  local n = 0
  while i <= j do
    local k = j < i + 999 and j or i + 999
    n = redis.call('RPUSH', ids, unpack(t, i, k))
    i = k + 1
  end
  return n
end
-- Rebuilds the index of key after the call's m entries were appended and pushed: the newest
-- entries above the recorded boundary, at most one more than the count (the pops find that one);
-- older ones are cut from the stream (once). Returns the index's length and whether the stream
-- was created by this call.
local function reindex(key, ids, new, m, last, maxlen)
  local info = redis.call('XINFO', 'STREAM', key)
  local added, trimmed, len = 0, '0-0', 0
  for i = 1, #info, 2 do
    local k = info[i]
    if k == 'entries-added' then added = info[i + 1]
    elseif k == 'max-deleted-entry-id' then trimmed = info[i + 1]
    elseif k == 'length' then len = info[i + 1] end
  end
  redis.call('DEL', ids)
  if added == m then
    if m == 1 then return redis.call('RPUSH', ids, last), true end
    return push_all(ids, new, 1, m), true
  end
  local from = trimmed == '0-0' and '-' or '(' .. trimmed
  local r = redis.call('XREVRANGE', key, '+', from, 'COUNT', maxlen + 1)
  local n, all = #r, {}
  -- (none above the boundary: only if someone set it past the newest entry with XSETID)
  if n == 0 then return redis.call('RPUSH', ids, last), false end
  if len > n then redis.call('XTRIM', key, 'MINID', r[n][1]) end
  for i = n, 1, -1 do all[n - i + 1] = r[i][1] end
  return push_all(ids, all, 1, n), false
end
-- Adds the k entries appended by someone else since the last call (they sit between the last
-- indexed entry and the call's m entries, the newest) to the index of key; returns the index's
-- length. More than the count: a rebuild reads less.
local function index_tail(key, ids, new, m, last, k, maxlen)
  if k > maxlen then return (reindex(key, ids, new, m, last, maxlen)) end
  local r = redis.call('XREVRANGE', key, '+', '-', 'COUNT', k + m)
  if #r ~= k + m or r[1][1] ~= last then return (reindex(key, ids, new, m, last, maxlen)) end
  redis.call('RPOP', ids, m)
  local all = {}
  for i = k + m, 1, -1 do all[k + m - i + 1] = r[i][1] end
  return push_all(ids, all, 1, k + m)
end
-- The milliseconds of an ID, as a number (exact below 2^53).
local function ms_of(id)
  return tonumber(string.sub(id, 1, string.find(id, '-', 1, true) - 1))
end
-- Removes from key what the count (maxlen) and age (ttl, ms) limits exclude once id, the newest,
-- is in (n: the index's length): pops their IDs off the index and deletes the entries, the newest
-- of them by XDEL, which records it as max-deleted-entry-id (the gap boundary). Returns false,
-- having deleted nothing, when that entry is not in the stream (the index is stale: an earlier
-- version published in between); with retry set, records the boundary by XSETID then.
local function trim(key, ids, id, n, maxlen, ttl, retry)
  local removed, several = nil, false
  local drop = n - maxlen
  if drop == 1 then removed = redis.call('LPOP', ids)
  elseif drop > 1 then
    local cut = redis.call('LPOP', ids, drop)
    removed, several = cut[#cut], true
  end
  -- The age limit, against the new entry's time (its ID's milliseconds: the clock, or later if
  -- the clock went back). Every entry left is newer than the last one popped, so only when that
  -- one is past the cutoff (or none was popped) is the oldest one left looked at.
  local cutoff = ms_of(id) - ttl
  if cutoff > 0 and (removed == nil or ms_of(removed) < cutoff) and n > (drop > 0 and drop or 0) then
    local head = redis.call('LINDEX', ids, 0)
    if head and ms_of(head) < cutoff then
      -- Pops the aged IDs a page at a time (the new entry itself is never past the cutoff).
      while true do
        local page = redis.call('LRANGE', ids, 0, 63)
        local c = 0
        for i = 1, #page do
          if ms_of(page[i]) < cutoff then c = i else break end
        end
        if c == 0 then break end
        several = several or removed ~= nil or c > 1
        removed = page[c]
        redis.call('LTRIM', ids, c, -1)
        if c < #page then break end
      end
    end
  end
  if removed == nil then return true end
  if redis.call('XDEL', key, removed) == 0 then
    if not retry then return false end
    redis.call('XSETID', key, id, 'MAXDELETEDID', removed)
  end
  -- The older ones of a cut of several by XTRIM MINID: one pass over the head, where an XDEL per
  -- ID would walk it each time.
  if several then redis.call('XTRIM', key, 'MINID', removed) end
  return true
end
-- Indexes the call's m appended entries and trims: one RPUSH, one XLEN, one exact cut (at steady
-- state LPOP and XDEL, whatever m is).
local function settle(key, new, m, last, maxlen, ttl)
  local ids = key .. ':ids'
  local n
  if m == 1 then n = redis.call('RPUSH', ids, last) else n = push_all(ids, new, 1, m) end
  local len = redis.call('XLEN', key)
  local created = false
  if n == m or len < n then n, created = reindex(key, ids, new, m, last, maxlen)
  elseif len > n then n = index_tail(key, ids, new, m, last, len - n, maxlen) end
  if not trim(key, ids, last, n, maxlen, ttl, false) then
    trim(key, ids, last, (reindex(key, ids, new, m, last, maxlen)), maxlen, ttl, true)
  elseif created and n <= maxlen then
    -- The epoch mark (header): just below the stream's first ID.
    local ms = split(m == 1 and last or new[1])
    if ms ~= '0' then redis.call('XSETID', key, last, 'MAXDELETEDID', pred(ms .. '-0')) end
  end
end
-- Appends the entry {<field>: data} (field d: a message; j, l: a presence event), trims, and
-- announces it; returns its ID. Messages are announced as "<id> <json>", presence events as
-- "<id> \30<field><json>": a byte no JSON text starts with, so no publish can pass for one.
-- At steady state (a channel at its count): XADD, RPUSH, XLEN, LPOP, XDEL, PUBLISH.
local function append(key, field, data, maxlen, ttl)
  local id = redis.call('XADD', key, '*', field, data)
  settle(key, nil, 1, id, maxlen, ttl)
  if field == 'd' then redis.call('PUBLISH', key, id .. ' ' .. data)
  else redis.call('PUBLISH', key, id .. ' \30' .. field .. data) end
  return id
end
local function publish(keys, args)
  local key, ikey, data = keys[1], keys[2], args[1]
  -- The window only where a key is recorded (an unkeyed call's fourth argument is unused).
  local maxlen, ttl, window = whole(args[2] or MAXLEN), whole(args[3] or TTL_MS), nil
  if ikey ~= nil then window = whole(args[4] or WINDOW_MS) end
  if key == nil or data == nil or maxlen == nil or ttl == nil or (ikey ~= nil and window == nil) then
    return redis.error_reply('ERR usage: FCALL pushedge_publish 1 pe:{channel} [pe:{channel}:idem:<key>] <json> [<count> <age-ms> [<window-ms>]]')
  end
  if ikey ~= nil then
    local prev = redis.call('GET', ikey)
    if prev then return {prev, 1} end
  end
  local id = redis.call('XADD', key, '*', 'd', data)
  settle(key, nil, 1, id, maxlen, ttl)
  redis.call('PUBLISH', key, id .. ' ' .. data)
  if ikey ~= nil then
    redis.call('SET', ikey, id, 'PX', window)
    return {id, 0}
  end
  return id
end
-- Several messages to one channel in one call (the node's per-loop-iteration batch, and
-- POST /api/batch; docs/architecture.md "Publishing through Redis"):
--   FCALL pushedge_publish_many <1 + k> pe:{NAME} [pe:{NAME}:idem:<KEY>...] <count> <age-ms>
--     <window-ms> <keyed1> <json1> <keyed2> <json2> ...   -> {id1, replayed1, id2, replayed2, ...}
--     Each message is what pushedge_publish does with it, in order, as if called once per
--     message: <keyedI> "1" takes the next key record of KEYS (the keyed form), "0" none; a key
--     repeated within the call answers its first message's ID. The key records are read in one
--     MGET; each message is one XADD (and a keyed one a SET ... PX); the new IDs join the index in
--     one RPUSH and are trimmed by one exact cut (the newest removed by XDEL: the gap boundary;
--     the older by XTRIM MINID), so the per-call costs (the call, XLEN, the cut's walk) are paid
--     once per batch. Every message is PUBLISHed on its own, as pushedge_publish does.
--   FCALL pushedge_publish_batch ... (the same arguments)   -> "<id1> <id2> ..."
--     The same, announced in one PUBLISH per ANNOUNCE_BYTES (4 KiB) of JSON or so: "\29" then,
--     per appended message in order, "<id> <length of json in bytes> <json>", a message never cut
--     (a call that appends one message announces it as pushedge_publish does); answered with one string, the IDs in order separated by one space,
--     a replayed one (its key recorded) written "=<id>": one reply element instead of two per
--     message. A pushedge from before this function cannot read the announcement: nodes use it
--     unless told not to (--redis-batch-announce 0; docs/operations.md, rolling upgrades).
local function many(keys, args, once)
  local key = keys[1]
  -- The window too, though only a keyed message's SET ... PX reads it.
  local maxlen, ttl, window = whole(args[1]), whole(args[2]), whole(args[3])
  local nargs = #args
  if key == nil or maxlen == nil or ttl == nil or window == nil or nargs < 5 or nargs % 2 ~= 1 then
    return redis.error_reply('ERR usage: FCALL pushedge_publish_many <1+k> pe:{channel} [idem keys] <count> <age-ms> <window-ms> <keyed> <json> ...')
  end
  -- Every keyed message has its record: checked before anything is stored, so a call refused
  -- for its arguments stores and announces nothing rather than its first chunks.
  local nkeys, prevs, seen = #keys, nil, nil
  local keyed = 0
  for i = 4, nargs, 2 do
    if args[i] == '1' then keyed = keyed + 1 end
  end
  if keyed > nkeys - 1 then
    return redis.error_reply('ERR pushedge_publish_many: fewer key records than keyed messages')
  end
  -- The key records, all at once (they share the stream's slot).
  if nkeys > 1 then
    prevs = {}
    for i = 2, nkeys, 1000 do
      local r = redis.call('MGET', unpack(keys, i, nkeys < i + 999 and nkeys or i + 999))
      for j = 1, #r do prevs[i + j - 2] = r[j] end
    end
  end
  local out, new, m, o, ki = {}, {}, 0, 0, 1
  local parts, np, pending = nil, 1, 0
  if once then parts = {'\29'} end
  for i = 4, nargs, 2 do
    local data, ikey, prev = args[i + 1], nil, nil
    if args[i] == '1' then
      ikey = keys[ki + 1]
      prev = prevs[ki]
      ki = ki + 1
      if not prev and seen ~= nil then prev = seen[ikey] end
    end
    if prev then
      if once then
        out[o + 1] = '=' .. prev
        o = o + 1
      else
        out[o + 1] = prev
        out[o + 2] = 1
        o = o + 2
      end
    else
      -- Announced a few kilobytes at a time: Lua's cost of building a string grows faster than
      -- its length (docs/architecture.md, "Cost of a publish in Redis"), and a reader takes any
      -- number of "\29" announcements in a row. Cut before the next message joins, so a call
      -- that appends one message still announces it alone, and before its XADD, so an
      -- announcement follows the keyspace events of exactly its own entries (engine_redis.c
      -- counts them against each other to find plain XADDs).
      if pending >= ANNOUNCE_BYTES then
        redis.call('PUBLISH', key, table.concat(parts, '', 1, np))
        np, pending = 1, 0
      end
      local id = redis.call('XADD', key, '*', 'd', data)
      m = m + 1
      new[m] = id
      if ikey ~= nil then
        redis.call('SET', ikey, id, 'PX', window)
        if seen == nil then seen = {} end
        seen[ikey] = id
      end
      if once then
        pending = pending + #data
        parts[np + 1] = id
        parts[np + 2] = ' '
        parts[np + 3] = #data
        parts[np + 4] = ' '
        parts[np + 5] = data
        np = np + 5
      else
        redis.call('PUBLISH', key, id .. ' ' .. data)
      end
      if once then
        out[o + 1] = id
        o = o + 1
      else
        out[o + 1] = id
        out[o + 2] = 0
        o = o + 2
      end
    end
  end
  if m > 0 then
    settle(key, new, m, new[m], maxlen, ttl)
    if once then
      if m == 1 then redis.call('PUBLISH', key, new[1] .. ' ' .. parts[6])
      else redis.call('PUBLISH', key, table.concat(parts, '', 1, np)) end
    end
  end
  if once then return table.concat(out, ' ') end
  return out
end
local function publish_many(keys, args) return many(keys, args, false) end
local function publish_batch(keys, args) return many(keys, args, true) end
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
--     {"channel","client","user","node"[,"info"]}} to the stream (trimmed and announced as a message is) while
--     the channel has at most <max> members (counted with the member); past it only the hash
--     changes. The event is cut from the member's JSON, whose layout pushedge fixes.
local function presence(keys, args)
  local key, mkey, op, client, member, max = keys[1], keys[2], args[1], args[2], args[3], tonumber(args[4])
  local maxlen, ttl = whole(args[5] or MAXLEN), whole(args[6] or TTL_MS)
  if key == nil or mkey == nil or client == nil or max == nil or maxlen == nil or ttl == nil then
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
  -- The member's fixed tail (pushedge writes it last): the info object before it may hold any
  -- text, so the cut is anchored at the end.
  local cut = string.find(member, ',"transport":"[^"]*","since":%d+}$')
  if cut == nil then return 1 end
  local event = '{"channel":"' .. string.sub(key, 5, -2) .. '",' .. string.sub(member, 2, cut - 1) .. '}'
  append(key, op == 'join' and 'j' or 'l', event, maxlen, ttl)
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
redis.register_function('pushedge_publish_many', publish_many)
redis.register_function('pushedge_publish_batch', publish_batch)
redis.register_function('pushedge_presence', presence)
redis.register_function('pushedge_beat', beat)
redis.register_function{function_name = 'pushedge_read', callback = read, flags = {'no-writes'}}
