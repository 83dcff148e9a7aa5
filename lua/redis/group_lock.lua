-- The assignment lock of a group: one worker at a time runs the group's assignment; a worker
-- that finds it taken leaves a "run again" flag the holder sees when it releases.
-- KEYS[1] lock, KEYS[2] run-again flag
-- ARGV: op (acquire | release), owner, ttl (ms)
-- Returns acquire: 1 (held; the flag is cleared) | 0 (held by another; flag set);
--         release: "done" | "again" (the flag was set: lock kept, run once more) | "lost"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'acquire' then
  if not cur or cur == ARGV[2] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    redis.call('DEL', KEYS[2])
    return 1
  end
  redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[3]) * 5)
  return 0
end
if cur ~= ARGV[2] then return 'lost' end
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 'again'
end
redis.call('DEL', KEYS[1])
return 'done'
