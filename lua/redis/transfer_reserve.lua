-- Checks a transfer against the group's transfer policy and reserves the target agent's
-- capacity (to an agent) or checks the target group exists (to a group).
-- KEYS[1] kefu:{staff}:config, or kefu:{staff:<domain>}:config of a staff domain
-- ARGV: from group, caller role, to agent ('' for a group), to group, conv, now (ms),
--       current agent, '1' when the group is of another staff domain (checked there),
--       '1' when a supervisor or admin takes the conversation over (the to agent is the caller)
-- Returns {"S", json {target: state | nil, monitors}} or {"E", code, message}.
-- every key of the staff domain shares the prefix of its configuration copy (KEYS[1])
local P = string.sub(KEYS[1], 1, -7)
local now = tonumber(ARGV[6])
local forbid = redis.call('HGET', P .. 'notransfer', ARGV[1])
if forbid and ARGV[2] == 'agent' then
  if forbid == '' then forbid = 'transfers out of this group are not allowed' end
  return {'E', 'forbidden', forbid}
end
local monitors = redis.call('ZRANGEBYSCORE', P .. 'monitors', now, '+inf')
if ARGV[3] == '' then
  if ARGV[8] ~= '1' and redis.call('SISMEMBER', P .. 'groups', ARGV[4]) == 0 then
    return {'E', 'not_found', 'no such group'}
  end
  return {'S', cjson.encode({monitors = monitors})}
end
local id = ARGV[3]
if id == ARGV[7] then return {'E', 'conflict', 'the conversation is already with this agent'} end
local s = redis.call('HMGET', P .. 'agent:' .. id, 'name', 'status', 'reason', 'since', 'groups',
  'max', 'gone_since')
local lkey = P .. 'load:' .. id
if ARGV[9] == '1' then
  -- A supervisor taking over intervenes: no status or capacity applies (they need not be in the
  -- routing at all). One registered here as an agent has the conversation counted in its load,
  -- as agent_load.lua does; one that is not gets no state made up for it.
  if not s[2] then return {'S', cjson.encode({monitors = monitors})} end
  redis.call('SADD', lkey, ARGV[5])
else
  if not s[2] then return {'E', 'not_found', 'no such agent'} end
end
local defmax = tonumber(redis.call('HGET', KEYS[1], 'default_max_chats') or '5') or 5
local max = tonumber(s[6] or '0') or 0
if max <= 0 then max = defmax end
if ARGV[9] ~= '1' then
  if s[2] == 'offline' then return {'E', 'conflict', 'the agent is offline'} end
  if s[2] == 'away' then return {'E', 'conflict', 'the agent is away'} end
  if redis.call('SISMEMBER', lkey, ARGV[5]) == 0 and redis.call('SCARD', lkey) >= max then
    return {'E', 'conflict', 'the agent is at capacity'}
  end
  redis.call('SADD', lkey, ARGV[5])
end
local groups = {}
for x in string.gmatch(s[5] or '', '[^,]+') do groups[#groups + 1] = x end
return {'S', cjson.encode({monitors = monitors, target = {agent = id, name = s[1] or id,
  status = s[2], reason = s[3] or '', since = tonumber(s[4] or '0') or 0, pending = '',
  groups = groups, load = redis.call('SCARD', lkey), max = max,
  connected = (s[7] == false or s[7] == '0')}})}
