-- Adds a conversation to an agent's load set or removes it (idempotent both ways).
-- KEYS[1] kefu:{staff}:config, or kefu:{staff:<domain>}:config of a staff domain
-- ARGV: op (add | remove), agent, conv, now (ms)
-- Returns {"S", json {self: state, monitors, changed}} or {"S", ""} for an unknown agent
-- (add is refused for an agent that never registered, so no state is made up for it).
-- every key of the staff domain shares the prefix of its configuration copy (KEYS[1])
local P = string.sub(KEYS[1], 1, -7)
local now = tonumber(ARGV[4])
local id = ARGV[2]
local akey = P .. 'agent:' .. id
local s = redis.call('HMGET', akey, 'name', 'status', 'reason', 'since', 'groups', 'max',
  'gone_since', 'pending')
local changed
if ARGV[1] == 'add' then
  if not s[2] then return {'S', ''} end
  changed = redis.call('SADD', P .. 'load:' .. id, ARGV[3])
else
  changed = redis.call('SREM', P .. 'load:' .. id, ARGV[3])
  if not s[2] then return {'S', ''} end
end
local defmax = tonumber(redis.call('HGET', KEYS[1], 'default_max_chats') or '5') or 5
local groups = {}
for x in string.gmatch(s[5] or '', '[^,]+') do groups[#groups + 1] = x end
local max = tonumber(s[6] or '0') or 0
if max <= 0 then max = defmax end
local self = {agent = id, name = s[1] or id, status = s[2], reason = s[3] or '',
  since = tonumber(s[4] or '0') or 0, pending = s[8] or '', groups = groups,
  load = redis.call('SCARD', P .. 'load:' .. id), max = max,
  connected = (s[7] == false or s[7] == '0')}
return {'S', cjson.encode({self = self, changed = changed,
  monitors = redis.call('ZRANGEBYSCORE', P .. 'monitors', now, '+inf')})}
