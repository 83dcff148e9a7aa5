-- Claims conversations of one archive partition that are due for archiving: each is leased to
-- one worker for a while (a member whose lease ran out, its worker died or stalled, is handed
-- out again). A claimed member stays in the pending set, scored by when it became due, until
-- archive_done.lua removes or reschedules it: the oldest due member gives the archive's lag.
-- KEYS[1] kefu:{ar:<p>}:pending (conv -> due ms), KEYS[2] kefu:{ar:<p>}:leases (conv -> expiry)
-- ARGV: now (ms), most to claim (0: only the counts), lease (ms)
-- Returns {due count, oldest due ms or '', conv, due, conv, due, ...}
local now, max, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {redis.call('ZCOUNT', KEYS[1], '-inf', now), ''}
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] and tonumber(first[2]) <= now then out[2] = first[2] end
if max <= 0 then return out end
-- live leases are skipped; at most a few pages of them are looked at per call
local got, offset, page = 0, 0, math.max(max, 50)
while got < max and offset < out[1] and offset < 20 * page do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', offset, page)
  if #due == 0 then break end
  for i = 1, #due, 2 do
    local l = redis.call('ZSCORE', KEYS[2], due[i])
    if not l or tonumber(l) <= now then
      redis.call('ZADD', KEYS[2], now + lease, due[i])
      out[#out + 1] = due[i]
      out[#out + 1] = due[i + 1]
      got = got + 1
      if got >= max then break end
    end
  end
  offset = offset + page
end
return out
