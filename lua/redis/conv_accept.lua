-- Assigns a waiting conversation to an agent; exactly one agent wins.
-- KEYS[1] conversation meta hash
-- ARGV: agent id, agent name, now (ms)
-- Returns {"E", code} | {"S", customer, group, sup...} (also when this agent already holds it)
local st = redis.call('HMGET', KEYS[1], 'state', 'agent', 'customer', 'group')
if not st[1] then return {'E', 'not_found'} end
if st[1] == 'closed' then return {'E', 'conflict'} end
if st[1] == 'assigned' and st[2] ~= ARGV[1] then return {'E', 'conflict'} end
if st[1] ~= 'assigned' then
  redis.call('HSET', KEYS[1], 'state', 'assigned', 'agent', ARGV[1], 'agent_name', ARGV[2],
    'assigned_at', ARGV[3])
end
local out = {'S', st[3], st[4] or 'default'}
local meta = redis.call('HKEYS', KEYS[1])
for _, f in ipairs(meta) do
  if string.sub(f, 1, 4) == 'sup:' then out[#out + 1] = string.sub(f, 5) end
end
return out
