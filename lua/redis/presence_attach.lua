-- Registers a node in a user's presence and says which other nodes may still route the user
-- from a node list they looked up before (and cached), and for how long.
-- KEYS[1] presence (node -> expiry ms), KEYS[2] lookups cached by other nodes (node -> until ms)
-- ARGV: now (ms), node, presence expiry (ms), key ttl (ms)
-- Returns {ms, node...}: for ms some node (this one included: a lookup may be in flight) may
-- still route this user's pushes from a copy made without this node; the nodes are the other
-- ones that hold such a copy (0 and no nodes: none, or this node was already listed). The
-- gateway asks those nodes to drop their copy, and the connection gets a resync after ms, so
-- nothing routed without this node escapes the client's history calls.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local had = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if had then return {0} end
local out = {0}
local c = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #c, 2 do
  local w = tonumber(c[i + 1]) - now
  if w > out[1] then out[1] = w end
  -- this node dropped its own copy already; a lookup of its own in flight is covered by ms
  if c[i] ~= ARGV[2] then out[#out + 1] = c[i] end
end
return out
