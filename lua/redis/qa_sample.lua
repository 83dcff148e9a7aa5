-- Stores one day's QA sample, once: several workers may draw it (each draws the same one from
-- the same seed); whichever gets here first writes it, the others find it there and change
-- nothing. The info hash is the marker, so a day with nothing to sample is stored too.
-- KEYS[1] kefu:{qa:<day>}:info (hash), KEYS[2] kefu:{qa:<day>}:sample (sorted set conv -> rank)
-- ARGV: expiry (unix s: the day's statistics expire then), n (closed that day), k (drawn at random), rate, min_per_agent, by, at (ms),
--       then rank, conv pairs (the whole sample)
-- Returns {'S', size} when written by this call, {'D', size} when it was there already.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'D', tostring(redis.call('ZCARD', KEYS[2]))}
end
local size = (#ARGV - 7) / 2
-- ZADD in chunks: unpack() of a very long list overflows Lua's C stack
local chunk = {}
for i = 8, #ARGV, 2 do
  chunk[#chunk + 1] = ARGV[i]
  chunk[#chunk + 1] = ARGV[i + 1]
  if #chunk >= 1000 or i + 1 >= #ARGV then
    redis.call('ZADD', KEYS[2], unpack(chunk))
    chunk = {}
  end
end
redis.call('HSET', KEYS[1], 'n', ARGV[2], 'k', ARGV[3], 'sampled', tostring(size), 'rate', ARGV[4],
  'min_per_agent', ARGV[5], 'by', ARGV[6], 'at', ARGV[7])
redis.call('EXPIREAT', KEYS[1], ARGV[1])
if size > 0 then redis.call('EXPIREAT', KEYS[2], ARGV[1]) end
return {'S', tostring(size)}
