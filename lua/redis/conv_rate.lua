-- The customer rates a closed conversation, once, within the rating window.
-- KEYS[1] meta hash, KEYS[2] record stream
-- ARGV: user, stars (1..5), comment, now (ms), window (ms)
-- Returns {"S", agent, sup...} or {"E", code, message}.
local m = redis.call('HMGET', KEYS[1], 'customer', 'state', 'closed_at', 'rating', 'agent',
  'resolution')
if not m[1] then return {'E', 'not_found', 'no such conversation'} end
if m[1] ~= ARGV[1] then return {'E', 'forbidden', 'only the conversation\'s customer may rate it'} end
if m[2] ~= 'closed' then return {'E', 'conflict', 'the conversation is not closed yet'} end
if m[4] then return {'E', 'conflict', 'the conversation was rated already'} end
-- the customer left the queue: nobody served them, nothing to rate (no survey was offered)
if m[6] == 'abandoned' then
  return {'E', 'conflict', 'the conversation was left before an agent took it'}
end
if tonumber(ARGV[4]) - (tonumber(m[3] or '0') or 0) > tonumber(ARGV[5]) then
  return {'E', 'conflict', 'the rating window has passed'}
end
redis.call('HSET', KEYS[1], 'rating', ARGV[2], 'rating_comment', ARGV[3], 'rated_at', ARGV[4])
redis.call('XADD', KEYS[2], '*', 'ev', 'rated', 'by', ARGV[1], 'ts', ARGV[4], 'stars', ARGV[2])
local out = {'S', m[5] or ''}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 4) == 'sup:' then out[#out + 1] = string.sub(f, 5) end
end
return out
