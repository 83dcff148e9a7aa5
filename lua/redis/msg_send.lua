-- Stores chat messages, each once per (sender, cid), after its access check. One call carries
-- the msg.send requests one gateway gathered in a loop iteration for this server, in order, so
-- the call's own cost is paid once for all of them.
-- KEYS, per message i = 0..n-1: [3i+1] conversation meta hash, [3i+2] messages stream,
--   [3i+3] cid record
-- ARGV[1] stream maxlen, ARGV[2] cid ttl (s); per message: [3+5i..7+5i] user, role, name, text,
--   cid
-- Returns one reply per message: {"E", code} | {"S"|"D", id, prev, customer, agent, sup...}
-- (D: this cid was stored before, nothing new is stored, prev ''). prev is the id of the
-- conversation's message before this one ('' for the first): clients detect a missed push when
-- a push's prev is not the last id they hold.
-- On the hot path, per message: one HMGET of fixed fields (the joined supervisors are kept as a
-- '\n'-joined list in "sups", the last message id in "last"), XADD, SET NX, HSET. The cid record
-- is written after the XADD with NX: a retry finds it taken, and its XADD is deleted again.
local maxlen, ttl = ARGV[1], ARGV[2]

local function store(meta, msgs, cidk, user, role, name, text, cid)
  local m = redis.call('HMGET', meta, 'customer', 'agent', 'state', 'first_response', 'sups',
    'sup:' .. user, 'last')
  if not m[1] and not m[3] then return {'E', 'not_found'} end
  local customer, agent, state, first, sups, joined = m[1], m[2], m[3], m[4], m[5], m[6]
  local ok = (role == 'customer' and customer == user) or (role ~= 'customer' and agent == user)
  if not ok and (role == 'supervisor' or role == 'admin') then ok = joined ~= false end
  if not ok then return {'E', 'forbidden'} end
  local out = {'S', '', '', customer or '', agent or ''}
  if sups then
    for s in string.gmatch(sups, '[^\n]+') do out[#out + 1] = s end
  end
  if state == 'closed' then
    local before = redis.call('GET', cidk)
    if not before then return {'E', 'conflict'} end
    out[1], out[2] = 'D', before
    return out
  end
  local last = m[7]
  if not last then
    -- a conversation stored before "last" was kept: read it from the stream once
    local tail = redis.call('XREVRANGE', msgs, '+', '-', 'COUNT', 1)
    last = tail[1] and tail[1][1] or ''
  end
  local id = redis.call('XADD', msgs, 'MAXLEN', '~', maxlen, '*',
    'from', user, 'role', role, 'name', name, 'text', text, 'cid', cid)
  if not redis.call('SET', cidk, id, 'NX', 'EX', ttl) then
    redis.call('XDEL', msgs, id)
    out[1], out[2] = 'D', redis.call('GET', cidk)
    return out
  end
  if role ~= 'customer' and not first then
    redis.call('HSET', meta, 'last', id, 'first_response', id)
  else
    redis.call('HSET', meta, 'last', id)
  end
  out[2], out[3] = id, last
  return out
end

-- A message whose store fails (a wrong key type, out of memory) is answered "internal" alone:
-- the others of the call, stored before or after it, keep their answers.
local res = {}
for i = 0, #KEYS / 3 - 1 do
  local a = 3 + 5 * i
  local ok, r = pcall(store, KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3], ARGV[a],
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
  if not ok then
    redis.log(redis.LOG_WARNING, 'msg_send: ' .. tostring(type(r) == 'table' and r.err or r))
    r = {'E', 'internal'}
  end
  res[i + 1] = r
end
return res
