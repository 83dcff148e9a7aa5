-- Adds one conversation's share to a day's statistics, once (worker/stats.c): an event handled
-- twice (its worker died before acknowledging it) finds its member in the day's "seen" set and
-- changes nothing.
-- KEYS[1] kefu:{st:<day>}:seen; KEYS[2..] the day's keys the operations name (same hash tag)
-- ARGV[1] the member "<kind>|<conv>"; ARGV[2] when every key of the call expires (unix s);
-- then operations of four values each: op, key index, a, b:
--   'i' HINCRBY KEYS[k] a b    'z' ZADD KEYS[k] b a    'h' HSET KEYS[k] a b
-- Returns 1 when applied, 0 when applied before.
for i = 3, #ARGV, 4 do -- checked first: a script that stops half-way keeps what it did
  local op, k = ARGV[i], tonumber(ARGV[i + 1])
  if (op ~= 'i' and op ~= 'z' and op ~= 'h') or not k or not KEYS[k] or not ARGV[i + 3] then
    return redis.error_reply('ERR stats_apply: bad operation at ' .. i)
  end
end
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
for i = 3, #ARGV, 4 do
  local op, k, a, b = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  if op == 'i' then
    redis.call('HINCRBY', k, a, b)
  elseif op == 'z' then
    redis.call('ZADD', k, b, a)
  else
    redis.call('HSET', k, a, b)
  end
end
for _, k in ipairs(KEYS) do redis.call('EXPIREAT', k, ARGV[2]) end
return 1
