-- Assigns a waiting conversation to an agent; exactly one agent wins (a manual accept against
-- another accept or the worker's automatic assignment, conv_assign.lua).
-- KEYS[1] conversation meta hash, KEYS[2] (optional) its record stream; when absent the record
--         key is derived from KEYS[1] (same hash tag, so the same slot)
-- ARGV: agent id, agent name, now (ms)
-- Returns {"E", code} | {"S", customer, group, sup...} (also when this agent already holds it)
local logkey = KEYS[2] or (string.sub(KEYS[1], 1, -5) .. 'log')
local st = redis.call('HMGET', KEYS[1], 'state', 'agent', 'customer', 'group')
if not st[1] then return {'E', 'not_found'} end
if st[1] == 'closed' then return {'E', 'conflict'} end
if st[1] == 'assigned' and st[2] ~= ARGV[1] then return {'E', 'conflict'} end
if st[1] ~= 'assigned' then
  local seq = redis.call('HINCRBY', KEYS[1], 'assign_seq', 1)
  redis.call('HSET', KEYS[1], 'state', 'assigned', 'agent', ARGV[1], 'agent_name', ARGV[2],
    'assigned_at', ARGV[3])
  redis.call('XADD', logkey, '*', 'ev', 'assigned', 'by', ARGV[1], 'ts', ARGV[3], 'agent', ARGV[1],
    'group', st[4] or 'default', 'seq', seq, 'manual', '1')
end
local out = {'S', st[3], st[4] or 'default'}
local meta = redis.call('HKEYS', KEYS[1])
for _, f in ipairs(meta) do
  if string.sub(f, 1, 4) == 'sup:' then out[#out + 1] = string.sub(f, 5) end
end
return out
