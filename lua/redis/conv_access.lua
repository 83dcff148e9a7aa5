-- Checks that a user may act in a conversation and returns its participants.
-- KEYS[1] conversation meta hash
-- ARGV: user, role, mode ("read": supervisors/admins may read any; "write": participants only),
--       read marker id (optional: stored as read:<user> when given)
-- Returns {"E", code} | {"S", state, customer, agent, sup...}
local meta = redis.call('HGETALL', KEYS[1])
if #meta == 0 then return {'E', 'not_found'} end
local m, sups = {}, {}
for i = 1, #meta, 2 do
  local f = meta[i]
  m[f] = meta[i + 1]
  if string.sub(f, 1, 4) == 'sup:' then sups[#sups + 1] = string.sub(f, 5) end
end
local user, role, mode = ARGV[1], ARGV[2], ARGV[3]
local ok = (role == 'customer' and m.customer == user) or (role ~= 'customer' and m.agent == user)
if not ok and (role == 'supervisor' or role == 'admin') then
  ok = mode == 'read' or m['sup:' .. user] ~= nil
end
if not ok then return {'E', 'forbidden'} end
if ARGV[4] and ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'read:' .. user, ARGV[4]) end
local out = {'S', m.state or '', m.customer or '', m.agent or ''}
for _, s in ipairs(sups) do out[#out + 1] = s end
return out
