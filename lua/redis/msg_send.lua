-- Stores one chat message in a conversation, once per (sender, cid), after the access check.
-- KEYS[1] conversation meta hash, KEYS[2] messages stream, KEYS[3] cid record
-- ARGV: user, role, name, text, cid, stream maxlen, cid ttl (s)
-- Returns {"E", code} | {"S"|"D", id, prev, customer, agent, sup...} (D: cid seen before, nothing
-- stored, prev ''). prev is the id of the conversation's message before this one ('' for the
-- first): clients detect a missed push when a push's prev is not the last id they hold.
-- On the hot path: one HMGET of fixed fields (the joined supervisors are kept as a '\n'-joined
-- list in "sups", the last message id in "last"), then GET, XADD, SET, HSET.
local user, role = ARGV[1], ARGV[2]
local m = redis.call('HMGET', KEYS[1], 'customer', 'agent', 'state', 'first_response', 'sups',
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
local prev = redis.call('GET', KEYS[3])
if prev then
  out[1], out[2] = 'D', prev
  return out
end
if state == 'closed' then return {'E', 'conflict'} end
local last = m[7]
if not last then
  -- a conversation stored before "last" was kept: read it from the stream once
  local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  last = tail[1] and tail[1][1] or ''
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
  'from', user, 'role', role, 'name', ARGV[3], 'text', ARGV[4], 'cid', ARGV[5])
redis.call('SET', KEYS[3], id, 'EX', ARGV[7])
if role ~= 'customer' and not first then
  redis.call('HSET', KEYS[1], 'last', id, 'first_response', id)
else
  redis.call('HSET', KEYS[1], 'last', id)
end
out[2], out[3] = id, last
return out
