-- Looks up the nodes a user is connected to, for a node that will reuse the answer for a while.
-- KEYS[1] presence (node -> expiry ms), KEYS[2] lookups cached by nodes (node -> until ms)
-- ARGV: now (ms), the asking node, until (ms: now + its cache lifetime), key ttl (ms)
-- Returns the node ids. Recording who caches until when lets a new registration
-- (presence_attach.lua) hold its welcome exactly as long as a stale copy can be used.
local nodes = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return nodes
