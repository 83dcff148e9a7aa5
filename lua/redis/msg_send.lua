-- Stores one chat message in a conversation, once per (sender, cid), after the access check.
-- KEYS[1] conversation meta hash, KEYS[2] messages stream, KEYS[3] cid record
-- ARGV: user, role, name, text, cid, stream maxlen, cid ttl (s)
-- Returns {"E", code} | {"S"|"D", id, customer, agent, sup...} (D: cid seen before, nothing stored)
-- On the hot path: one HMGET of fixed fields (the joined supervisors are kept as a '\n'-joined
-- list in "sups"), then GET, XADD, SET.
local user, role = ARGV[1], ARGV[2]
local m = redis.call('HMGET', KEYS[1], 'customer', 'agent', 'state', 'first_response', 'sups',
  'sup:' .. user)
if not m[1] and not m[3] then return {'E', 'not_found'} end
local customer, agent, state, first, sups, joined = m[1], m[2], m[3], m[4], m[5], m[6]
local ok = (role == 'customer' and customer == user) or (role ~= 'customer' and agent == user)
if not ok and (role == 'supervisor' or role == 'admin') then ok = joined ~= false end
if not ok then return {'E', 'forbidden'} end
local out = {'S', '', customer or '', agent or ''}
if sups then
  for s in string.gmatch(sups, '[^\n]+') do out[#out + 1] = s end
end
local prev = redis.call('GET', KEYS[3])
if prev then
  out[1], out[2] = 'D', prev
  return out
end
if state == 'closed' then return {'E', 'conflict'} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
  'from', user, 'role', role, 'name', ARGV[3], 'text', ARGV[4], 'cid', ARGV[5])
redis.call('SET', KEYS[3], id, 'EX', ARGV[7])
if role ~= 'customer' and not first then
  redis.call('HSET', KEYS[1], 'first_response', id)
end
out[2] = id
return out
