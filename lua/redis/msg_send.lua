-- Stores one chat message in a conversation, once per (sender, cid), after the access check.
-- KEYS[1] conversation meta hash, KEYS[2] messages stream, KEYS[3] cid record
-- ARGV: user, role, name, text, cid, stream maxlen, cid ttl (s)
-- Returns {"E", code} | {"S"|"D", id, customer, agent, sup...} (D: cid seen before, nothing stored)
local meta = redis.call('HGETALL', KEYS[1])
if #meta == 0 then return {'E', 'not_found'} end
local m, sups = {}, {}
for i = 1, #meta, 2 do
  local f = meta[i]
  m[f] = meta[i + 1]
  if string.sub(f, 1, 4) == 'sup:' then sups[#sups + 1] = string.sub(f, 5) end
end
local user, role = ARGV[1], ARGV[2]
local ok = (role == 'customer' and m.customer == user) or (role ~= 'customer' and m.agent == user)
if not ok and (role == 'supervisor' or role == 'admin') then ok = m['sup:' .. user] ~= nil end
if not ok then return {'E', 'forbidden'} end
local out = {'S', '', m.customer or '', m.agent or ''}
for _, s in ipairs(sups) do out[#out + 1] = s end
local prev = redis.call('GET', KEYS[3])
if prev then
  out[1], out[2] = 'D', prev
  return out
end
if m.state == 'closed' then return {'E', 'conflict'} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
  'from', user, 'role', role, 'name', ARGV[3], 'text', ARGV[4], 'cid', ARGV[5])
redis.call('SET', KEYS[3], id, 'EX', ARGV[7])
redis.call('HSET', KEYS[1], 'last_id', id)
if role ~= 'customer' and not m.first_response then
  redis.call('HSET', KEYS[1], 'first_response', id)
end
out[2] = id
return out
