-- Staff lookups for the bot: who gets sensitive-issue alerts, and whether a group has an agent.
-- KEYS[1] kefu:{staff}:config (every key read here is kefu:{staff}:*, the same slot)
-- ARGV: mode, now (ms), group
--   "sups":   supervisors and admins to alert: those monitoring (kefu:{staff}:monitors, score =
--             expiry) and those connected lately (kefu:{staff}:supervisors, score = last seen)
--   "agents": how many agents of the group are available and connected
-- Returns a list of user ids ("sups") or an integer ("agents").
local P = 'kefu:{staff}:'
local now = tonumber(ARGV[2])
if ARGV[1] == 'sups' then
  local seen, out = {}, {}
  for _, u in ipairs(redis.call('ZRANGEBYSCORE', P .. 'monitors', now, '+inf')) do
    if not seen[u] then seen[u] = true; out[#out + 1] = u end
  end
  for _, u in ipairs(redis.call('ZRANGEBYSCORE', P .. 'supervisors', now - 10000, '+inf')) do
    if not seen[u] then seen[u] = true; out[#out + 1] = u end
  end
  return out
end
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', P .. 'group:' .. ARGV[3])) do
  local a = redis.call('HMGET', P .. 'agent:' .. m, 'status', 'gone_since')
  if a[1] == 'available' and (not a[2] or a[2] == '0') then n = n + 1 end
end
return n
