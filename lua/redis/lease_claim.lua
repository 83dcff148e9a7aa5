-- Claims the members of a due set that are due: moves them to a firing set with a lease, so
-- each is handed to exactly one worker; members whose lease ran out (their worker died while
-- handling them) are handed out again under the same name. Used by the SLA deadlines
-- (worker/sla.c) and the customer-left checks (worker/callback.c).
-- KEYS[1] the due set (member -> when due, ms), KEYS[2] the firing set (member -> lease expiry):
--   kefu:{sla:<k>-..}:timers and :firing (one partition; or the sets of earlier versions,
--   kefu:{sla}:timers and :firing, while they drain), or kefu:{cb}:checks and :firing
-- ARGV: now (ms), most to claim, lease (ms), and "due" to name a claimed member
--   "<member>|<due>" in the firing set (a customer's check: the customer may be due again
--   later, and each check is its own)
-- Returns {next due time or "", member...}
local now, max, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local with_due = ARGV[4] == 'due'
local out = {''}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, max)
for i = 1, #due, 2 do
  local m = with_due and (due[i] .. '|' .. due[i + 1]) or due[i]
  redis.call('ZREM', KEYS[1], due[i])
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
