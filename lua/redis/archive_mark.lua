-- Marks a conversation archived after its rows were committed to the database, and trims it:
-- its keys expire `grace` after the pass that is due `trim` after its first archiving; that
-- pass deletes them at once, unless the record changed since it was read (then another pass).
-- KEYS[1] meta, KEYS[2] messages, KEYS[3] record, KEYS[4] bot state
-- ARGV: now (ms), trim (ms), grace (ms), worker, id of the last record entry read ('' = none),
--   id of the last message read ('' = none): the ids up to which the database holds the streams
--   now (archived_log_id, archived_msg_id: archive_read.lua reads only what came after them)
-- Returns {'A', next pass ms} archived, {'C', next pass ms} archived but the record grew since
-- it was read, {'D'} archived for the last time and deleted, {'G'} no such conversation.
local now, trim, grace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'G'} end
local first = tonumber(redis.call('HGET', KEYS[1], 'archived_first') or '')
if not first then
  first = now
  redis.call('HSET', KEYS[1], 'archived_first', ARGV[1])
end
redis.call('HSET', KEYS[1], 'archived_at', ARGV[1], 'archived_by', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'archived_log_id', ARGV[5]) end
if ARGV[6] and ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'archived_msg_id', ARGV[6]) end
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local changed = (last[1] and last[1][1] or '') ~= ARGV[5]
local trim_at = first + trim
if not changed and now >= trim_at then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  return {'D'}
end
for i = 1, 4 do redis.call('PEXPIREAT', KEYS[i], trim_at + grace) end
if changed then return {'C', tostring(now)} end
return {'A', tostring(trim_at)}
