-- A supervisor approves or denies an agent's queued break request.
-- KEYS[1] kefu:{staff}:config, or kefu:{staff:<domain>}:config of a staff domain
-- ARGV: agent, decision (approve | deny), now (ms)
-- Returns {"S", json {self: state, reason, monitors}} or {"E", code, message}.
-- every key of the staff domain shares the prefix of its configuration copy (KEYS[1])
local P = string.sub(KEYS[1], 1, -7)
local now = tonumber(ARGV[3])
local defmax = tonumber(redis.call('HGET', KEYS[1], 'default_max_chats') or '5') or 5
local id = ARGV[1]
local akey = P .. 'agent:' .. id
local a = redis.call('HMGET', akey, 'status', 'pending')
if not a[1] then return {'E', 'not_found', 'no such agent'} end
if not a[2] or a[2] == '' or a[1] ~= 'available' then
  redis.call('ZREM', P .. 'breaks', id)
  return {'E', 'not_found', 'the agent has no pending break request'}
end
local reason = a[2]
if ARGV[2] == 'approve' then
  redis.call('HSET', akey, 'status', 'away', 'reason', reason, 'since', now, 'pending', '')
else
  redis.call('HSET', akey, 'pending', '')
end
redis.call('ZREM', P .. 'breaks', id)
local s = redis.call('HMGET', akey, 'name', 'status', 'reason', 'since', 'groups', 'max',
  'gone_since')
local groups = {}
for x in string.gmatch(s[5] or '', '[^,]+') do groups[#groups + 1] = x end
local max = tonumber(s[6] or '0') or 0
if max <= 0 then max = defmax end
local self = {agent = id, name = s[1] or id, status = s[2], reason = s[3] or '',
  since = tonumber(s[4] or '0') or 0, pending = '', groups = groups,
  load = redis.call('SCARD', P .. 'load:' .. id), max = max,
  connected = (s[7] == false or s[7] == '0')}
return {'S', cjson.encode({self = self, reason = reason,
  monitors = redis.call('ZRANGEBYSCORE', P .. 'monitors', now, '+inf')})}
