-- Subscribes a supervisor to live monitoring (or ends it) and returns the snapshot.
-- KEYS[1] kefu:{staff}:config, or kefu:{staff:<domain>}:config of a staff domain
-- ARGV: op (subscribe | unsubscribe), user, now (ms); the subscription lasts the configured
--       monitor_ttl_ms (default 10 minutes)
-- Returns {"S", json {agents: [state...], breaks: [{agent, reason, since}], groups: [...],
--          notransfer: {group: wording}, expires_at}} or {"S", ""} after unsubscribe.
-- every key of the staff domain shares the prefix of its configuration copy (KEYS[1])
local P = string.sub(KEYS[1], 1, -7)
local now = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', P .. 'monitors', '-inf', now)
if ARGV[1] == 'unsubscribe' then
  redis.call('ZREM', P .. 'monitors', ARGV[2])
  return {'S', ''}
end
local expires = now + (tonumber(redis.call('HGET', KEYS[1], 'monitor_ttl_ms') or '') or 600000)
redis.call('ZADD', P .. 'monitors', expires, ARGV[2])
local defmax = tonumber(redis.call('HGET', KEYS[1], 'default_max_chats') or '5') or 5
local agents = {}
local ids = redis.call('SMEMBERS', P .. 'agents')
table.sort(ids)
for _, id in ipairs(ids) do
  local s = redis.call('HMGET', P .. 'agent:' .. id, 'name', 'status', 'reason', 'since',
    'groups', 'max', 'gone_since', 'pending')
  local groups = {}
  for x in string.gmatch(s[5] or '', '[^,]+') do groups[#groups + 1] = x end
  local max = tonumber(s[6] or '0') or 0
  if max <= 0 then max = defmax end
  agents[#agents + 1] = {agent = id, name = s[1] or id, status = s[2] or 'offline',
    reason = s[3] or '', since = tonumber(s[4] or '0') or 0, pending = s[8] or '',
    groups = groups, load = redis.call('SCARD', P .. 'load:' .. id), max = max,
    connected = (s[7] == false or s[7] == '0')}
end
local breaks = {}
local b = redis.call('ZRANGE', P .. 'breaks', 0, -1, 'WITHSCORES')
for i = 1, #b, 2 do
  breaks[#breaks + 1] = {agent = b[i],
    reason = redis.call('HGET', P .. 'agent:' .. b[i], 'pending') or '',
    since = tonumber(b[i + 1])}
end
local groups = redis.call('SMEMBERS', P .. 'groups')
table.sort(groups)
local nt = {}
local h = redis.call('HGETALL', P .. 'notransfer')
for i = 1, #h, 2 do nt[h[i]] = h[i + 1] end
return {'S', cjson.encode({agents = agents, breaks = breaks, groups = groups, notransfer = nt,
  expires_at = expires})}
