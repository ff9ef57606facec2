-- drain.lua: where a project's event stream stands with the sink's consumer group, and its
-- trim: an entry leaves the stream only when a retention rule wants it gone (beyond the
-- length kept, or older than the age kept) AND the group acknowledged it (PostgreSQL has it).
-- KEYS[1]  the project's event stream
-- ARGV[1]  the consumer group
-- ARGV[2]  entries kept by length (0 = no limit by length)
-- ARGV[3]  age bound: entries with an id before it are past the age kept ('' = no limit by age)
-- ARGV[4]  at most this many entries trimmed by length per call
-- ARGV[5]  at most this many entries counted as undelivered
-- Returns {length, pending, undelivered (at most ARGV[5]), oldest unacknowledged id or '',
--          entries trimmed, 1 when the group exists else 0}.

local stream, group = KEYS[1], ARGV[1]
local maxlen, age_id, cap, count_cap = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('EXISTS', stream) == 0 then return {0, 0, 0, '', 0, 0} end
local length = redis.call('XLEN', stream)

local last, pending = nil, 0
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == group then last, pending = info['last-delivered-id'], tonumber(info['pending']) end
end
if last == nil then return {length, 0, 0, '', 0, 0} end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function before(x, y)  -- x < y, ids as {ms, seq}
  return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2])
end
local function format(id) return string.format('%.0f-%.0f', id[1], id[2]) end

-- The oldest entry PostgreSQL may not have: the oldest pending, else the first undelivered.
local oldest = nil
if pending > 0 then oldest = redis.call('XPENDING', stream, group)[2] end
local undelivered = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', count_cap)
if oldest == nil and #undelivered > 0 then oldest = undelivered[1][1] end

-- Everything before ack_bound is acknowledged.
local ack_bound
if oldest ~= nil then ack_bound = parse(oldest) else
  local l = parse(last)
  ack_bound = {l[1], l[2] + 1}
end

-- What retention wants gone: everything before keep_from.
local keep_from = nil
if maxlen > 0 and length > maxlen then
  local excess = math.min(length - maxlen, cap)
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess + 1)
  if #head > excess then keep_from = parse(head[excess + 1][1]) else keep_from = ack_bound end
end
if age_id ~= '' then
  local a = parse(age_id)
  if keep_from == nil or before(keep_from, a) then keep_from = a end
end

local trimmed = 0
if keep_from ~= nil then
  local bound = keep_from
  if before(ack_bound, bound) then bound = ack_bound end
  trimmed = redis.call('XTRIM', stream, 'MINID', format(bound))
end
return {length - trimmed, pending, #undelivered, oldest or '', trimmed, 1}
