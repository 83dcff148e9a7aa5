-- Staff lookups for the bot: who gets sensitive-issue alerts, and whether a group has an agent.
-- KEYS[1] kefu:{staff}:config, or kefu:{staff:<domain>}:config of a staff domain (every key read
--         here shares its prefix and so its slot)
-- ARGV: mode, now (ms), group
--   "sups":   supervisors and admins to alert: those monitoring (<prefix>monitors, score =
--             expiry) and those connected lately (<prefix>supervisors, score = last seen)
--   "agents": how many agents of the group are available and connected
-- Returns a list of user ids ("sups") or an integer ("agents").
-- every key of the staff domain shares the prefix of its configuration copy (KEYS[1])
local P = string.sub(KEYS[1], 1, -7)
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
