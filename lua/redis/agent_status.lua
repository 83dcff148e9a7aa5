-- Sets an agent's status (available | away | offline) under the break rules of every group the
-- agent is in, registering the agent first; grants queued break requests that now fit.
-- KEYS[1] kefu:{staff}:config, or kefu:{staff:<domain>}:config of a staff domain (the worker's
--         published configuration; all other keys used here share its prefix and so its slot)
-- ARGV: agent, name, groups (comma-joined token skills, '' = the default group), max_chats
--       ('0' = the configured default), status, reason (away only), now (ms), role
-- Returns {"S"|"Q", json} (Q: break queued for approval) or {"E", code, message}.
-- json: {self: state, granted: [state...], monitors: [user...], message}
-- every key of the staff domain shares the prefix of its configuration copy (KEYS[1])
local P = string.sub(KEYS[1], 1, -7)
local cfg = {}
do
  local c = redis.call('HGETALL', KEYS[1])
  for i = 1, #c, 2 do cfg[c[i]] = c[i + 1] end
end
local now = tonumber(ARGV[7])
local defmax = tonumber(cfg.default_max_chats or '5') or 5

local function split(s)
  local t = {}
  for x in string.gmatch(s or '', '[^,]+') do t[#t + 1] = x end
  return t
end

local function state_of(id)
  local a = redis.call('HMGET', P .. 'agent:' .. id, 'name', 'status', 'reason', 'since',
    'pending', 'groups', 'max', 'gone_since')
  local max = tonumber(a[7] or '0') or 0
  if max <= 0 then max = defmax end
  return {agent = id, name = a[1] or id, status = a[2] or 'offline', reason = a[3] or '',
    since = tonumber(a[4] or '0') or 0, pending = a[5] or '', groups = split(a[6]),
    load = redis.call('SCARD', P .. 'load:' .. id), max = max,
    connected = (a[8] == false or a[8] == nil or a[8] == '0')}
end

local pct_default = {meal = 70, restroom = 80, handover = 50}

-- Whether `id` may take a break for `reason` in every one of its groups; message when not.
local function rule_ok(id, reason, groups, self_available)
  for _, g in ipairs(groups) do
    local signed, avail, away = 0, 0, 0
    for _, m in ipairs(redis.call('SMEMBERS', P .. 'group:' .. g)) do
      local st = redis.call('HMGET', P .. 'agent:' .. m, 'status', 'reason')
      if st[1] == 'available' then
        signed, avail = signed + 1, avail + 1
      elseif st[1] == 'away' then
        signed = signed + 1
        if st[2] == reason and m ~= id then away = away + 1 end
      end
    end
    if reason == 'other' then
      local maxo = tonumber(cfg.break_other_max or '1') or 1
      if away >= maxo then
        return false, string.format('other break: at most %d agent(s) of group %s away at a time',
          maxo, g)
      end
    else
      local pct = tonumber(cfg['break_' .. reason .. '_pct'] or '') or pct_default[reason] or 100
      local remain = avail - (self_available and 1 or 0)
      if remain * 100 < pct * signed then
        return false, string.format('%s break needs %d%% of group %s online: %d of %d would remain',
          reason, pct, g, remain, signed)
      end
    end
  end
  return true, ''
end

local function grant_pending()
  local out = {}
  for _, p in ipairs(redis.call('ZRANGE', P .. 'breaks', 0, -1)) do
    local a = redis.call('HMGET', P .. 'agent:' .. p, 'status', 'pending', 'groups')
    if a[1] ~= 'available' or not a[2] or a[2] == '' then
      redis.call('ZREM', P .. 'breaks', p)
    elseif rule_ok(p, a[2], split(a[3]), true) then
      redis.call('HSET', P .. 'agent:' .. p, 'status', 'away', 'reason', a[2], 'since', now,
        'pending', '')
      redis.call('ZREM', P .. 'breaks', p)
      out[#out + 1] = state_of(p)
    end
  end
  return out
end

local function monitors()
  return redis.call('ZRANGEBYSCORE', P .. 'monitors', now, '+inf')
end

-- register / refresh the agent
local id = ARGV[1]
local akey = P .. 'agent:' .. id
local groups = ARGV[3]
if groups == '' then groups = cfg.default_group or 'default' end
local old = redis.call('HMGET', akey, 'groups', 'status', 'reason', 'pending')
if old[1] and old[1] ~= groups then
  for _, g in ipairs(split(old[1])) do redis.call('SREM', P .. 'group:' .. g, id) end
end
redis.call('HSET', akey, 'name', ARGV[2], 'groups', groups, 'max', ARGV[4], 'role', ARGV[8])
redis.call('SADD', P .. 'agents', id)
for _, g in ipairs(split(groups)) do
  redis.call('SADD', P .. 'group:' .. g, id)
  redis.call('SADD', P .. 'groups', g)
end

local cur, curreason = old[2] or 'offline', old[3] or ''
local want, reason = ARGV[5], ARGV[6]
local granted = {}
local code, message = 'S', ''
if want == 'available' or want == 'offline' then
  if cur ~= want then redis.call('HSET', akey, 'since', now) end
  redis.call('HSET', akey, 'status', want, 'reason', '', 'pending', '', 'gone_since', '0')
  redis.call('ZREM', P .. 'breaks', id)
  if want == 'available' then granted = grant_pending() end
else
  if cur == 'offline' then
    return {'E', 'conflict', 'set your status to available first'}
  end
  if not (cur == 'away' and curreason == reason) then
    local ok, why = rule_ok(id, reason, split(groups), cur == 'available')
    if ok then
      redis.call('HSET', akey, 'status', 'away', 'reason', reason, 'since', now, 'pending', '')
      redis.call('ZREM', P .. 'breaks', id)
    elseif cfg.break_policy == 'refuse' or cur == 'away' then
      return {'E', 'conflict', why}
    else
      redis.call('HSET', akey, 'pending', reason, 'pending_at', now)
      redis.call('ZADD', P .. 'breaks', 'NX', now, id)
      code, message = 'Q', why
    end
  end
end
return {code, cjson.encode({self = state_of(id), granted = granted, monitors = monitors(),
  message = message})}
