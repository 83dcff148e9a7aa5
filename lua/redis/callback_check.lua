-- A customer left and did not come back within the grace time: decides whether one of their
-- conversations is still open (waiting or assigned; not with a bot, not closed) and, the first
-- time this check runs for it, records `customer_left` in its record. Run again for the same
-- check (a worker died before finishing), it answers the same without a second record entry.
-- KEYS[1] meta hash, KEYS[2] messages stream (unused), KEYS[3] record stream
-- ARGV: customer, due (the check's identity), now (ms), task id
-- Returns {"X", why} when there is nothing to do, or {"S", json} with what the alert and the
-- call-back task need: state, agent, ticket, group, priority (high for a complaint or a
-- sensitive conversation, else medium), complaint, sensitive, reason, sups (joined
-- supervisors), first (this run recorded it).
local customer, due, now, task = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local m = redis.call('HMGET', KEYS[1], 'state', 'customer', 'agent', 'ticket', 'group',
  'category', 'tags', 'sensitive', 'cb_left')
if not m[1] then return {'X', 'gone'} end
if m[2] ~= customer then return {'X', 'not the customer'} end
if m[1] ~= 'waiting' and m[1] ~= 'assigned' then return {'X', m[1]} end
-- a complaint: so classified (bot `set category`, conv.close stores it only when closing) or
-- tagged so by a bot rule
local complaint = m[6] == 'complaint'
for t in string.gmatch(m[7] or '', '[^,]+') do
  if string.lower(string.match(t, '^%s*(.-)%s*$')) == 'complaint' then complaint = true end
end
local sensitive = m[8] ~= false and m[8] ~= ''
local priority = (complaint or sensitive) and 'high' or 'medium'
local reason = m[1] == 'waiting' and 'customer left while waiting in the queue'
  or 'customer left during the conversation'
if complaint then reason = reason .. ' (complaint)' end
if sensitive then reason = reason .. ' (sensitive: ' .. m[8] .. ')' end
local sups = {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 4) == 'sup:' then sups[#sups + 1] = string.sub(f, 5) end
end
local first = m[9] ~= due
if first then
  redis.call('HSET', KEYS[1], 'cb_left', due)
  redis.call('XADD', KEYS[3], '*', 'ev', 'customer_left', 'by', 'worker', 'ts', now,
    'customer', customer, 'state', m[1], 'agent', m[3] or '', 'task', task,
    'priority', priority, 'reason', reason)
end
return {'S', cjson.encode({state = m[1], agent = m[3] or '', ticket = m[4] or '',
  group = m[5] or 'default', priority = priority, complaint = complaint, sensitive = sensitive,
  reason = reason, sups = sups, first = first})}
