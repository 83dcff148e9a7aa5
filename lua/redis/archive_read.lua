-- Reads what the archive stores of a conversation, in one consistent snapshot.
-- KEYS[1] meta hash, KEYS[2] messages stream, KEYS[3] record stream
-- Returns {meta as field, value, ...; messages (XRANGE); record (XRANGE)}
return {redis.call('HGETALL', KEYS[1]), redis.call('XRANGE', KEYS[2], '-', '+'),
        redis.call('XRANGE', KEYS[3], '-', '+')}
