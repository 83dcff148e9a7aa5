-- Stores chat messages, each once per (sender, cid), after its access check. One call carries
-- the msg.send requests one gateway gathered in a loop iteration for this server, in order, so
-- the call's own cost is paid once for all of them.
-- KEYS, per message i = 0..n-1: [2i+1] conversation meta hash, [2i+2] messages stream
-- ARGV[1] stream maxlen, ARGV[2] cid window size in bytes; per message: [3+6i..8+6i] user,
--   role, name, text, cid, cid token ("\n" .. 16 hex digits of the cid's hash .. " ")
-- Returns one reply per message: {"E", code} | {"S"|"D", id, prev, customer, agent, sup...}
-- (D: this cid was stored before, nothing new is stored, prev ''). prev is the id of the
-- conversation's message before this one ('' for the first): clients detect a missed push when
-- a push's prev is not the last id they hold.
-- The cids a sender used last in a conversation are its meta field "cids:<user>": a string of
-- entries "\n<hash> <id>", newest last, cut from the front past ARGV[2] bytes. So a retry is
-- recognised while it is among the sender's latest messages there (the gateway sizes ARGV[2]
-- for at least cid_window of them), with no key per message.
-- On the hot path, per message: one HMGET of fixed fields (the joined supervisors are kept as a
-- '\n'-joined list in "sups", the last message id in "last"), XADD, HSET.
local maxlen, winbytes = ARGV[1], tonumber(ARGV[2])

local function store(meta, msgs, user, role, name, text, cid, tok)
  local wf = 'cids:' .. user
  local m = redis.call('HMGET', meta, 'customer', 'agent', 'state', 'first_response', 'sups',
    'sup:' .. user, 'last', wf)
  if not m[1] and not m[3] then return {'E', 'not_found'} end
  local customer, agent, state, first, sups, joined = m[1], m[2], m[3], m[4], m[5], m[6]
  local ok = (role == 'customer' and customer == user) or (role ~= 'customer' and agent == user)
  if not ok and (role == 'supervisor' or role == 'admin') then ok = joined ~= false end
  if not ok then return {'E', 'forbidden'} end
  local out = {'S', '', '', customer or '', agent or ''}
  if sups then
    for s in string.gmatch(sups, '[^\n]+') do out[#out + 1] = s end
  end
  local win = m[8] or ''
  local at = string.find(win, tok, 1, true)
  if at then -- a retry: answer with the first attempt's id
    local from = at + #tok
    local to = string.find(win, '\n', from, true)
    out[1], out[2] = 'D', string.sub(win, from, (to or #win + 1) - 1)
    return out
  end
  if state == 'closed' then return {'E', 'conflict'} end
  local last = m[7]
  if not last then
    -- a conversation stored before "last" was kept: read it from the stream once
    local tail = redis.call('XREVRANGE', msgs, '+', '-', 'COUNT', 1)
    last = tail[1] and tail[1][1] or ''
  end
  local id = redis.call('XADD', msgs, 'MAXLEN', '~', maxlen, '*',
    'from', user, 'role', role, 'name', name, 'text', text, 'cid', cid)
  win = win .. tok .. id
  if #win > winbytes then
    win = string.sub(win, string.find(win, '\n', #win - winbytes + 1, true) or 1)
  end
  if role ~= 'customer' and not first then
    redis.call('HSET', meta, 'last', id, wf, win, 'first_response', id)
  else
    redis.call('HSET', meta, 'last', id, wf, win)
  end
  out[2], out[3] = id, last
  return out
end

-- A message whose store fails (a wrong key type, out of memory) is answered "internal" alone:
-- the others of the call, stored before or after it, keep their answers.
local res = {}
for i = 0, #KEYS / 2 - 1 do
  local a = 3 + 6 * i
  local ok, r = pcall(store, KEYS[2 * i + 1], KEYS[2 * i + 2], ARGV[a], ARGV[a + 1],
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
  if not ok then
    redis.log(redis.LOG_WARNING, 'msg_send: ' .. tostring(type(r) == 'table' and r.err or r))
    r = {'E', 'internal'}
  end
  res[i + 1] = r
end
return res
