-- Transfers an assigned conversation, in steps around the staff-side reservation:
--   check:   may the caller transfer it (its agent, or a supervisor/admin), and from where
--   agent:   hand it to another agent (still assigned to the expected agent, else conflict)
--   group:   put it back in the waiting queue of a group, keeping its original waiting time
--   requeue: the SLA reassignment: like group (same group) but only while the assignment
--            `seq` is current and its agent has not answered
-- KEYS[1] meta hash, KEYS[2] messages stream, KEYS[3] record stream
-- ARGV: mode, caller, caller role, expected agent, to agent, to agent name, to group, note,
--       now (ms), seq, history count
-- Returns {"E", code, message} or
--   check:   {"S", group, agent, customer}
--   agent:   {"S", json view (as conv_assign.lua, plus from)}
--   group, requeue: {"S", json {customer, priority, level, queued_us, group, sups, from}}
local mode, caller, role, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = ARGV[9]
local meta = redis.call('HGETALL', KEYS[1])
if #meta == 0 then return {'E', 'not_found', 'no such conversation'} end
local m, sups = {}, {}
for i = 1, #meta, 2 do
  m[meta[i]] = meta[i + 1]
  if string.sub(meta[i], 1, 4) == 'sup:' then sups[#sups + 1] = string.sub(meta[i], 5) end
end
if m.state ~= 'assigned' then
  return {'E', 'conflict', 'the conversation is not assigned to an agent'}
end
if mode == 'check' then
  if m.agent ~= caller and role ~= 'supervisor' and role ~= 'admin' then
    return {'E', 'forbidden', 'only the assigned agent or a supervisor may transfer it'}
  end
  return {'S', m.group or 'default', m.agent or '', m.customer or ''}
end
if m.agent ~= expected then
  return {'E', 'conflict', 'the conversation changed hands meanwhile'}
end

local function answered()
  local r = redis.call('XREVRANGE', KEYS[2], '+', m.assigned_at or '0', 'COUNT', 500)
  for _, e in ipairs(r) do
    for k = 1, #e[2], 2 do
      if e[2][k] == 'from' and e[2][k + 1] == m.agent then return true end
    end
  end
  return false
end

if mode == 'requeue' and (m.assign_seq ~= ARGV[10] or answered()) then
  return {'E', 'conflict', 'answered or reassigned meanwhile'}
end
local seq = redis.call('HINCRBY', KEYS[1], 'assign_seq', 1)
if mode == 'agent' then
  redis.call('HSET', KEYS[1], 'agent', ARGV[5], 'agent_name', ARGV[6], 'assigned_at', now,
    'prev_agent', expected)
  if m['sup:' .. ARGV[5]] then
    -- a supervisor who joined and now handles it (took it over) is its agent, no longer a
    -- watcher: else every push would reach them twice, as agent and as joined supervisor
    local rest = {}
    for _, x in ipairs(sups) do if x ~= ARGV[5] then rest[#rest + 1] = x end end
    sups = rest
    redis.call('HDEL', KEYS[1], 'sup:' .. ARGV[5])
    if #rest > 0 then
      redis.call('HSET', KEYS[1], 'sups', table.concat(rest, '\n'))
    else
      redis.call('HDEL', KEYS[1], 'sups')
    end
  end
  redis.call('XADD', KEYS[3], '*', 'ev', 'transferred', 'by', caller, 'ts', now, 'from', expected,
    'agent', ARGV[5], 'note', ARGV[8], 'seq', seq)
  local msgs = {}
  local n = tonumber(ARGV[11]) or 0
  if n > 0 then
    local r = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)
    for i = #r, 1, -1 do
      local e, f = r[i], {}
      for k = 1, #e[2], 2 do f[e[2][k]] = e[2][k + 1] end
      msgs[#msgs + 1] = {id = e[1], from = f.from or '', role = f.role or '',
        name = f.name or '', text = f.text or '', cid = f.cid or ''}
    end
  end
  return {'S', cjson.encode({customer = m.customer or '', customer_name = m.customer_name or '',
    ticket = m.ticket or '', channel = m.channel or '', topic = m.topic or '',
    level = tonumber(m.level or '0') or 0, priority = m.priority or 'medium',
    created = tonumber(m.created or '0') or 0, group = m.group or 'default',
    assigned_at = tonumber(now), seq = seq, sups = sups, msgs = msgs, from = expected})}
end
-- group / requeue
local group = mode == 'group' and ARGV[7] or (m.group or 'default')
redis.call('HSET', KEYS[1], 'state', 'waiting', 'group', group, 'prev_agent', expected)
redis.call('HDEL', KEYS[1], 'agent', 'agent_name', 'assigned_at')
if mode == 'group' then
  redis.call('XADD', KEYS[3], '*', 'ev', 'transferred', 'by', caller, 'ts', now, 'from', expected,
    'group', group, 'note', ARGV[8], 'seq', seq)
else
  redis.call('XADD', KEYS[3], '*', 'ev', 'reassigned', 'by', caller, 'ts', now, 'from', expected,
    'reason', ARGV[8], 'seq', seq)
end
redis.call('XADD', KEYS[3], '*', 'ev', 'queued', 'by', caller, 'ts', now, 'group', group,
  'priority', m.priority or 'medium')
return {'S', cjson.encode({customer = m.customer or '', priority = m.priority or 'medium',
  level = tonumber(m.level or '0') or 0, queued_us = m.queued_us or '0',
  group = group, sups = sups, from = expected, ticket = m.ticket or ''})}
