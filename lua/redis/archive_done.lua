-- Ends a worker's claim on a conversation of one archive partition.
-- KEYS[1] kefu:{ar:<p>}:pending, KEYS[2] kefu:{ar:<p>}:leases
-- ARGV: conv, the due score it was claimed with, next due (ms; '' = none), mode:
--   'done'    archived: the member is removed, or moved to `next` (the pass before the trim).
--             When its score changed meanwhile (a `rated` event asked for another pass), the
--             earlier of the two stays.
--   'release' not archived (the database is unreachable): the lease is dropped, it stays due.
--   'hold'    not archived (the database refused it): the lease is extended to `next`.
local conv, due, nxt, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if mode == 'hold' then
  redis.call('ZADD', KEYS[2], nxt, conv)
  return 0
end
if mode == 'done' then
  local s = redis.call('ZSCORE', KEYS[1], conv)
  if s and tonumber(s) == tonumber(due) then
    if nxt == '' then redis.call('ZREM', KEYS[1], conv) else redis.call('ZADD', KEYS[1], nxt, conv) end
  elseif nxt ~= '' then
    redis.call('ZADD', KEYS[1], 'LT', nxt, conv)
  end
end
redis.call('ZREM', KEYS[2], conv)
return 0
