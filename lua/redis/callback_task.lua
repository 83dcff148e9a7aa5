-- Call-back tasks (created by worker/callback.c when a customer left mid-conversation; listed,
-- assigned and completed through gateway/callback.c). Every key is kefu:{cb}:*, one slot:
--   task:<id>   hash: conv, customer, ticket, group, agent, conv_state, reason, priority,
--               complaint, sensitive, created, deadline, state (open|assigned|done), assignee,
--               assigned_by, assigned_at, note, done_by, done_at
--   open, assigned   sorted sets id -> deadline (ms): tasks in that state
--   done             sorted set id -> done_at (ms); trimmed after ARGV keep_ms
--   agent:<agent>    sorted set id -> deadline: the tasks assigned to that agent (any state)
-- KEYS[1] kefu:{cb}:open (the slot)
-- ARGV[1] mode:
--   create id now conv customer ticket group agent conv_state reason priority complaint
--          sensitive deadline                      -> {"S", "1"|"0" (created | existed), json}
--   list   user role state(pending|open|assigned|done|all) now limit -> {"S", json array}
--   assign id by agent now                          -> {"S", json} | {"E", code, message}
--   done   id user role note now keep_ms            -> {"S", json} | {"E", code, message}
local P = 'kefu:{cb}:'
local mode = ARGV[1]

local NUM = {created = true, deadline = true, assigned_at = true, done_at = true}

local function view(id, now)
  local flat = redis.call('HGETALL', P .. 'task:' .. id)
  if #flat == 0 then return nil end
  local t = {id = id}
  for i = 1, #flat, 2 do
    local k, v = flat[i], flat[i + 1]
    if NUM[k] then t[k] = tonumber(v)
    elseif k == 'complaint' or k == 'sensitive' then t[k] = v == '1'
    else t[k] = v end
  end
  t.overdue = t.state ~= 'done' and now ~= nil and (t.deadline or 0) < now
  return t
end

if mode == 'create' then
  local id, now = ARGV[2], tonumber(ARGV[3])
  local k = P .. 'task:' .. id
  if redis.call('EXISTS', k) == 1 then return {'S', '0', cjson.encode(view(id, now))} end
  redis.call('HSET', k, 'conv', ARGV[4], 'customer', ARGV[5], 'ticket', ARGV[6],
    'group', ARGV[7], 'agent', ARGV[8], 'conv_state', ARGV[9], 'reason', ARGV[10],
    'priority', ARGV[11], 'complaint', ARGV[12], 'sensitive', ARGV[13], 'created', ARGV[3],
    'deadline', ARGV[14], 'state', 'open', 'assignee', '', 'note', '')
  redis.call('ZADD', P .. 'open', ARGV[14], id)
  return {'S', '1', cjson.encode(view(id, now))}
end

if mode == 'list' then
  local user, role, state, now, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]),
    tonumber(ARGV[6])
  local want = {}
  if state == 'pending' then want = {open = true, assigned = true}
  elseif state == 'all' then want = {open = true, assigned = true, done = true}
  else want[state] = true end
  local ids = {}
  if role == 'agent' then
    -- the agent's own tasks, most urgent first; done ones only when asked for
    for _, id in ipairs(redis.call('ZRANGE', P .. 'agent:' .. user, 0, -1)) do ids[#ids + 1] = id end
  else
    for _, s in ipairs({'open', 'assigned'}) do
      if want[s] then
        for _, id in ipairs(redis.call('ZRANGE', P .. s, 0, limit - 1)) do ids[#ids + 1] = id end
      end
    end
    if want.done then
      for _, id in ipairs(redis.call('ZREVRANGE', P .. 'done', 0, limit - 1)) do ids[#ids + 1] = id end
    end
  end
  local out = {}
  for _, id in ipairs(ids) do
    if #out >= limit then break end
    local t = view(id, now)
    if t and want[t.state] then out[#out + 1] = t end
  end
  return {'S', cjson.encode(out)}
end

local id = ARGV[2]
local k = P .. 'task:' .. id
local cur = redis.call('HMGET', k, 'state', 'assignee', 'deadline')
if not cur[1] then return {'E', 'not_found', 'no such call-back task'} end
if cur[1] == 'done' then return {'E', 'conflict', 'the call-back task is already done'} end

if mode == 'assign' then
  local by, agent, now = ARGV[3], ARGV[4], ARGV[5]
  if cur[2] and cur[2] ~= '' and cur[2] ~= agent then
    redis.call('ZREM', P .. 'agent:' .. cur[2], id)
  end
  redis.call('HSET', k, 'state', 'assigned', 'assignee', agent, 'assigned_by', by,
    'assigned_at', now)
  redis.call('ZREM', P .. 'open', id)
  redis.call('ZADD', P .. 'assigned', cur[3], id)
  redis.call('ZADD', P .. 'agent:' .. agent, cur[3], id)
  return {'S', cjson.encode(view(id, tonumber(now)))}
end

if mode == 'done' then
  local user, role, note, now, keep = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]),
    tonumber(ARGV[7])
  if role == 'agent' and cur[2] ~= user then
    return {'E', 'forbidden', 'only its assignee or a supervisor may complete this call-back task'}
  end
  redis.call('HSET', k, 'state', 'done', 'done_by', user, 'done_at', ARGV[6], 'note', note)
  redis.call('ZREM', P .. 'open', id)
  redis.call('ZREM', P .. 'assigned', id)
  redis.call('ZADD', P .. 'done', now, id)
  -- done tasks are kept keep_ms, then dropped a few at a time
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', P .. 'done', '-inf', now - keep, 'LIMIT', 0, 100)) do
    local a = redis.call('HGET', P .. 'task:' .. old, 'assignee')
    if a and a ~= '' then redis.call('ZREM', P .. 'agent:' .. a, old) end
    redis.call('DEL', P .. 'task:' .. old)
    redis.call('ZREM', P .. 'done', old)
  end
  return {'S', cjson.encode(view(id, now))}
end
return {'E', 'bad_request', 'unknown mode'}
