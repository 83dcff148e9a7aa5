-- Records a QA review of a closed conversation in its meta and its record; a new review of the
-- same conversation replaces the previous one (qa_seq counts them).
-- KEYS[1] meta hash, KEYS[2] record stream
-- ARGV: reviewer, score (0..100), notes, tags (comma-joined), now (ms)
-- Returns {'S', seq, closed_at} or {'E', code, message}.
local m = redis.call('HMGET', KEYS[1], 'state', 'closed_at', 'qa_seq')
if not m[1] then return {'E', 'not_found', 'no such conversation'} end
if m[1] ~= 'closed' then return {'E', 'conflict', 'only a closed conversation is reviewed'} end
local seq = tostring((tonumber(m[3] or '0') or 0) + 1)
redis.call('HSET', KEYS[1], 'qa_score', ARGV[2], 'qa_notes', ARGV[3], 'qa_tags', ARGV[4],
  'qa_by', ARGV[1], 'qa_at', ARGV[5], 'qa_seq', seq)
redis.call('XADD', KEYS[2], '*', 'ev', 'qa_reviewed', 'by', ARGV[1], 'ts', ARGV[5], 'score', ARGV[2],
  'seq', seq, 'notes', ARGV[3], 'tags', ARGV[4])
return {'S', seq, m[2] or ''}
