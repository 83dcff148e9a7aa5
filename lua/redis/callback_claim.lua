-- Claims the customer-left checks that are due (worker/callback.c): each due member (a
-- customer, scored by when the check is due) leaves the check set and enters the firing set as
-- "<customer>|<due>" under a lease, so exactly one worker runs it; a firing member whose lease
-- ran out (its worker died) is handed out again under the same name.
-- KEYS[1] kefu:{cb}:checks, KEYS[2] kefu:{cb}:firing
-- ARGV: now (ms), most to claim, lease (ms)
-- Returns {next due or "", "<customer>|<due>"...}
local now, max, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {''}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, max)
for i = 1, #due, 2 do
  local m = due[i] .. '|' .. due[i + 1]
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
