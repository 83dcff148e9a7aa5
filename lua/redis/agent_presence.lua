-- Agent presence for the worker's sweep: lists the agents that are not offline, then applies
-- what the sweep found. An agent none of whose devices is connected is marked gone (it gets
-- no new conversations) and, after the grace period, offline; one that is back is unmarked.
-- KEYS[1] kefu:{staff}:config, or kefu:{staff:<domain>}:config of a staff domain
-- ARGV: "list"
--    or "apply", now (ms), grace (ms), lines "<agent>\t<connected: 1 | 0>\n"...
-- Returns list: {agent...}; apply: {"S", json {changed: [state...], monitors}}.
-- every key of the staff domain shares the prefix of its configuration copy (KEYS[1])
local P = string.sub(KEYS[1], 1, -7)
if ARGV[1] == 'list' then
  local out = {}
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'agents')) do
    local st = redis.call('HGET', P .. 'agent:' .. id, 'status')
    if st and st ~= 'offline' then out[#out + 1] = id end
  end
  return out
end
local now, grace = tonumber(ARGV[2]), tonumber(ARGV[3])
local defmax = tonumber(redis.call('HGET', KEYS[1], 'default_max_chats') or '5') or 5
local changed = {}
for id, conn in string.gmatch(ARGV[4] or '', '([^\t\n]+)\t([01])\n') do
  local akey = P .. 'agent:' .. id
  local s = redis.call('HMGET', akey, 'status', 'gone_since')
  local gone = tonumber(s[2] or '0') or 0
  local change = false
  if s[1] and s[1] ~= 'offline' then
    if conn == '1' then
      if gone ~= 0 then
        redis.call('HSET', akey, 'gone_since', '0')
        change = true
      end
    elseif gone == 0 then
      redis.call('HSET', akey, 'gone_since', now)
      change = true
    elseif now - gone >= grace then
      redis.call('HSET', akey, 'status', 'offline', 'reason', '', 'pending', '', 'since', now,
        'gone_since', '0')
      redis.call('ZREM', P .. 'breaks', id)
      change = true
    end
  end
  if change then
    local a = redis.call('HMGET', akey, 'name', 'status', 'reason', 'since', 'groups', 'max',
      'gone_since', 'pending')
    local groups = {}
    for x in string.gmatch(a[5] or '', '[^,]+') do groups[#groups + 1] = x end
    local max = tonumber(a[6] or '0') or 0
    if max <= 0 then max = defmax end
    changed[#changed + 1] = {agent = id, name = a[1] or id, status = a[2], reason = a[3] or '',
      since = tonumber(a[4] or '0') or 0, pending = a[8] or '', groups = groups,
      load = redis.call('SCARD', P .. 'load:' .. id), max = max,
      connected = (a[7] == false or a[7] == '0')}
  end
end
return {'S', cjson.encode({changed = changed,
  monitors = redis.call('ZRANGEBYSCORE', P .. 'monitors', now, '+inf')})}
