-- Counts a QA review in the statistics of the day the conversation closed (qa_n, qa_score for
-- all and for its agent). The day's `qa` hash keeps, per conversation, the review last counted
-- ("<seq> <score>"): a re-review applies only the difference, a retry or a late older review
-- changes nothing, so the counters always follow the latest review, counted once.
-- KEYS[1] kefu:{st:<day>}:closed, KEYS[2] kefu:{st:<day>}:agent, KEYS[3] kefu:{st:<day>}:n,
-- KEYS[4] kefu:{st:<day>}:qa
-- ARGV: conv, seq (of the review), score
-- Returns {'N'} when the conversation did not close that day, {'D', agent} when that review (or
-- a later one) is counted already, {'S', agent} when counted now.
local conv, seq, score = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[1], conv) then return {'N'} end
local agent = redis.call('HGET', KEYS[2], conv) or ''
local cur = redis.call('HGET', KEYS[4], conv)
local dn, ds = 1, score
if cur then
  local cseq, cscore = string.match(cur, '^(%d+) (%d+)$')
  if tonumber(cseq) >= seq then return {'D', agent} end
  dn, ds = 0, score - tonumber(cscore)
end
redis.call('HINCRBY', KEYS[3], 'qa_n|all|', dn)
redis.call('HINCRBY', KEYS[3], 'qa_score|all|', ds)
if agent ~= '' then
  redis.call('HINCRBY', KEYS[3], 'qa_n|agent|' .. agent, dn)
  redis.call('HINCRBY', KEYS[3], 'qa_score|agent|' .. agent, ds)
end
redis.call('HSET', KEYS[4], conv, seq .. ' ' .. score)
-- the day's keys expire together (stats_days after the day, set by the worker on :closed)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  for i = 3, 4 do
    if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
return {'S', agent}
