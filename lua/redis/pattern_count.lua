-- Counts one occurrence of a pattern that may concern supervisors (worker/patterns.c) and says
-- whether it has just crossed its threshold: a customer's unsatisfying conversations about one
-- category or topic (member = the conversation, counted from its first time: NX), or the
-- customers raising one topic (member = the customer, at its latest time: GT). Members older
-- than the window drop out first, so one that comes back after it counts again. One alert per
-- window and pattern.
-- KEYS[1] sorted set member -> time (ms), KEYS[2] the "alerted" flag (same hash tag)
-- ARGV: member, now (ms), window (ms), threshold, mode ('NX' or 'GT')
-- Returns {count, alert (1 when this call crossed the threshold and no alert was given within
-- the window), member...} (members oldest first, at most 20)
local now, window, threshold = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], ARGV[5] == 'GT' and 'GT' or 'NX', now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window)
local n = redis.call('ZCARD', KEYS[1])
local alert = 0
if n >= threshold and redis.call('SET', KEYS[2], now, 'NX', 'PX', window) then alert = 1 end
local out = {n, alert}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, 19)) do out[#out + 1] = m end
return out
