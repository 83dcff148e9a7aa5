-- Reads what the archive stores of a conversation, in one consistent snapshot: the meta, and
-- the messages and record entries the archive does not hold yet. archive_mark.lua notes in the
-- meta the last message and record ids of a committed pass (archived_msg_id, archived_log_id); a
-- later pass (a rating, the pass before the trim) reads only what came after them, since the
-- earlier ones are in the database already.
-- KEYS[1] meta hash, KEYS[2] messages stream, KEYS[3] record stream
-- Returns {meta as field, value, ...; messages (XRANGE); record (XRANGE)}
local done = redis.call('HMGET', KEYS[1], 'archived_msg_id', 'archived_log_id')
local am, al = done[1], done[2]
local function after(id) return id and id ~= '' and '(' .. id or '-' end
return {redis.call('HGETALL', KEYS[1]), redis.call('XRANGE', KEYS[2], after(am), '+'),
        redis.call('XRANGE', KEYS[3], after(al), '+')}
