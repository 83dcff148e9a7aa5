-- Fires one SLA deadline of a conversation, at most once: decides whether it is breached
-- (no answer in time, not resolved in time), cancelled (answered, closed) or stale (the
-- assignment it belonged to is over), and records a breach in the conversation's record.
-- KEYS[1] meta hash, KEYS[2] messages stream, KEYS[3] record stream
-- ARGV: kind (fr | respond | resolve), seq (assignment; 0 = from queueing), step
--       (fr: 0 warn, 1 alert, 2 reassign), now (ms), deadline (ms), reason
-- Returns {"F", agent, customer, ticket, group, priority, channel, sups (comma-joined),
--          overdue ms} | {"R", same fields}: reassign now (fr step 2; not recorded here, the
--          requeue is) | {"C"} answered | {"X", why} stale | {"D"} fired before
local kind, seq, step = ARGV[1], ARGV[2], ARGV[3]
local now, deadline = tonumber(ARGV[4]), tonumber(ARGV[5])
local m = redis.call('HMGET', KEYS[1], 'state', 'agent', 'customer', 'assign_seq', 'assigned_at',
  'first_response', 'ticket', 'group', 'priority', 'channel', 'fr_logged')
if not m[1] then return {'X', 'gone'} end

-- The first response is recorded in the log lazily, with the time and sender of the message.
if m[6] and m[6] ~= '' and not m[11] then
  local e = redis.call('XRANGE', KEYS[2], m[6], m[6])
  local by = ''
  if e[1] then
    for k = 1, #e[1][2], 2 do if e[1][2][k] == 'from' then by = e[1][2][k + 1] end end
  end
  redis.call('XADD', KEYS[3], '*', 'ev', 'first_response', 'by', by,
    'ts', string.match(m[6], '^(%d+)'), 'id', m[6])
  redis.call('HSET', KEYS[1], 'fr_logged', '1')
end
if m[1] == 'closed' then return {'X', 'closed'} end

local answered
if kind == 'fr' and seq ~= '0' then
  if m[1] ~= 'assigned' or m[4] ~= seq then return {'X', 'reassigned'} end
  answered = false
  local r = redis.call('XREVRANGE', KEYS[2], '+', m[5] or '0', 'COUNT', 500)
  for _, e in ipairs(r) do
    for k = 1, #e[2], 2 do
      if e[2][k] == 'from' and e[2][k + 1] == m[2] then answered = true end
    end
  end
elseif kind == 'fr' or kind == 'respond' then
  answered = m[6] ~= false and m[6] ~= ''
else
  answered = false
end
if answered then return {'C'} end
local overdue = now - deadline
local sups = {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 4) == 'sup:' then sups[#sups + 1] = string.sub(f, 5) end
end
local out = {'F', m[2] or '', m[3] or '', m[7] or '', m[8] or 'default', m[9] or 'medium',
  m[10] or '', table.concat(sups, ','), tostring(overdue)}
-- The reassignment step is made idempotent by the requeue itself (it checks seq and answer).
if kind == 'fr' and step == '2' then
  out[1] = 'R'
  return out
end
if redis.call('HSETNX', KEYS[1], 'sla:' .. kind .. ':' .. seq .. ':' .. step, now) == 0 then
  return {'D'}
end
local ev = (kind == 'fr' and step == '1') and 'sla.alert' or 'sla.breach'
redis.call('XADD', KEYS[3], '*', 'ev', ev, 'by', 'worker', 'ts', now, 'kind', kind,
  'agent', m[2] or '', 'reason', ARGV[6], 'overdue_ms', overdue, 'seq', seq)
if ev == 'sla.breach' then redis.call('HINCRBY', KEYS[1], 'breaches', 1) end
return out
