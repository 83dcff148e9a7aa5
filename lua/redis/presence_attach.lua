-- Registers a node in a user's presence and says how long the welcome must wait.
-- KEYS[1] presence (node -> expiry ms), KEYS[2] lookups cached by other nodes (node -> until ms)
-- ARGV: now (ms), node, presence expiry (ms), key ttl (ms)
-- Returns the milliseconds for which some other node may still route this user's pushes from a
-- node list it looked up before this registration (0: none, or this node was already listed).
-- The welcome waits that long, so nothing routed without this node is stored after the
-- client's first history call.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local had = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if had then return 0 end
local wait = 0
local c = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #c, 2 do
  if c[i] ~= ARGV[2] then
    local w = tonumber(c[i + 1]) - now
    if w > wait then wait = w end
  end
end
return wait
