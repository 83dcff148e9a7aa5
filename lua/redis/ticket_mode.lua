-- Which counter numbers a channel-day's tickets: the single counter of earlier versions when
-- they already numbered tickets that day (so the day goes on without a duplicate), else the
-- partitioned ones. A missing counter is marked with ARGV[1] (the same 3-day expiry as the
-- counter), so that a gateway of an earlier version still running gives numbers above it.
-- KEYS[1] the channel-day's single counter (kefu:{t:<channel>-<day>}:seq)
-- ARGV[1] the mark (KF_TICKET_LEGACY_CLOSED)
-- Returns 1 for the partitioned counters, 0 for the single counter.
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', 259200)
  return 1
end
local n = tonumber(v)
if n and n >= tonumber(ARGV[1]) then return 1 end
return 0
