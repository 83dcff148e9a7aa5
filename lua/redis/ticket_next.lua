-- Next ticket sequence number of a channel-day; the counter expires after three days.
-- KEYS[1] ticket sequence key
-- Returns the new sequence number (1 for the first ticket of the day).
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 259200) end
return n
