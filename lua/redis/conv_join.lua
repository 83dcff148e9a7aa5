-- A supervisor or admin joins a conversation (gets its pushes, may write in it).
-- KEYS[1] conversation meta hash
-- ARGV: user
-- Returns {"E", code} | {"S", state, customer, agent, sup...}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'E', 'not_found'} end
if redis.call('HSETNX', KEYS[1], 'sup:' .. ARGV[1], '1') == 1 then
  -- "sups" mirrors the sup:<id> fields as one '\n'-joined list for msg_send's fast path
  local sups = redis.call('HGET', KEYS[1], 'sups')
  redis.call('HSET', KEYS[1], 'sups', (sups and (sups .. '\n') or '') .. ARGV[1])
end
local m = redis.call('HMGET', KEYS[1], 'state', 'customer', 'agent')
local out = {'S', m[1] or '', m[2] or '', m[3] or ''}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 4) == 'sup:' then out[#out + 1] = string.sub(f, 5) end
end
return out
