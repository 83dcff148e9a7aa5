-- Claims the SLA deadlines that are due: moves them from the timer set to the firing set with
-- a lease, so each is handed to exactly one worker; deadlines whose lease ran out (their worker
-- died while firing them) are handed out again.
-- KEYS[1] kefu:{sla:<k>-..}:timers, KEYS[2] kefu:{sla:<k>-..}:firing (one partition; or the two
-- sets of earlier versions, kefu:{sla}:timers and :firing, while they drain)
-- ARGV: now (ms), most to claim, lease (ms)
-- Returns {next deadline or "", member...}
local now, max, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {''}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, max)
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], now + lease, m)
  out[#out + 1] = m
end
if #out - 1 < max then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, max - (#out - 1))
  for _, m in ipairs(stale) do
    redis.call('ZADD', KEYS[2], now + lease, m)
    out[#out + 1] = m
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = nxt[2] end
return out
