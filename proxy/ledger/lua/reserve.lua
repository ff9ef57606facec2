-- reserve.lua: hold a request's worst-case cost on every budget that applies, or on none.
-- Money is integer nano-USD. Limits, spend and holds stay below 2^53, where Lua's doubles are
-- exact; this script only adds, subtracts and compares them, never multiplies.
--
-- KEYS, 8 per candidate budget (absent budgets are skipped):
--   +1 config hash (limit, period, mode)     +2 reservation zset (request id -> deadline ms)
--   +3 amount hash (request id -> nano, "" -> running total)
--   +4..+8 the budget's usage hashes for the current hour, day, week, month, total buckets
-- then, when a lease is asked for, its operation key (the count is 8 per budget + 1): a lease
-- grant may be sent twice (a lost connection) and must hold the lease once, so the reply is
-- kept there until the lease's deadline, and a second call returns it and changes nothing.
-- ARGV[1] request id   ARGV[2] amount, nano-USD   ARGV[3] now, epoch ms   ARGV[4] deadline, epoch ms
-- ARGV[5] lease id ("" = no lease)   ARGV[6] lease amount   ARGV[7] lease deadline, epoch ms
-- ARGV[8] room a lease needs: the lease is held instead of the request's amount only when every
--         hard budget has at least this much room (and the request's amount fits, as always)
-- First reclaims every hold whose deadline < now, then checks that each hard budget has
-- limit - spent - held >= amount (a previous hold of this same request id is replaced, not
-- counted), and only if all do, holds the amount on every existing budget, soft ones included:
-- the lease amount under the lease id (ok 2) when a lease was asked for and every hard budget
-- has the room it needs, else the request's amount under the request id (ok 1).
-- Returns {ok 2|1|0, holds reclaimed, then 6 numbers per existing budget:
--          candidate index (0-based), hard 1|0, period index (1 hour .. 5 total), limit, spent, held}
-- where "held" excludes this request's own previous hold.

local rid, amount, now, deadline = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local leasing, need = ARGV[5] ~= '', tonumber(ARGV[8])
local period_index = {hour = 1, day = 2, week = 3, month = 4, total = 5}
local reclaimed = 0
local found = {}
local ok = 1
local op = nil
if #KEYS % 8 == 1 then
  op = KEYS[#KEYS]
  local seen = redis.call('GET', op)
  if seen then
    local again = {}
    for v in string.gmatch(seen, '[^,]+') do again[#again + 1] = tonumber(v) end
    return again
  end
end

for b = 0, math.floor(#KEYS / 8) - 1 do
  local base = 8 * b
  local config = redis.call('HMGET', KEYS[base + 1], 'limit', 'period', 'mode')
  if config[1] then
    local zset, amounts = KEYS[base + 2], KEYS[base + 3]
    local expired = redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. now)
    for _, old in ipairs(expired) do
      local held = redis.call('HGET', amounts, old)
      if held then
        redis.call('HDEL', amounts, old)
        if held ~= '0' then redis.call('HINCRBY', amounts, '', '-' .. held) end  -- Redis refuses "-0"
      end
      reclaimed = reclaimed + 1
    end
    if #expired > 0 then redis.call('ZREMRANGEBYSCORE', zset, '-inf', '(' .. now) end

    local p = period_index[config[2]] or 5
    local limit = tonumber(config[1])
    local spent = tonumber(redis.call('HGET', KEYS[base + 3 + p], 'cost') or '0')
    local own = redis.call('HGET', amounts, rid)
    local held = tonumber(redis.call('HGET', amounts, '') or '0') - tonumber(own or '0')
    local hard = 0
    if config[3] ~= 'soft' then
      hard = 1
      local room = limit - spent - held
      if room < amount then ok = 0 end
      if room < need then leasing = false end
    end
    found[#found + 1] = {b, hard, p, limit, spent, held, own}
  end
end

local hold, hold_amount, hold_deadline = rid, ARGV[2], deadline
if ok == 1 and leasing then
  ok = 2
  hold, hold_amount, hold_deadline = ARGV[5], ARGV[6], ARGV[7]
end
local reply = {ok, reclaimed}
for _, f in ipairs(found) do
  if ok ~= 0 then
    local amounts = KEYS[8 * f[1] + 3]
    -- Adjust the running total with the strings themselves: exact at any size. (A lease is
    -- new: it replaces nothing.)
    if ok == 1 and f[7] and f[7] ~= '0' then redis.call('HINCRBY', amounts, '', '-' .. f[7]) end
    redis.call('HINCRBY', amounts, '', hold_amount)
    redis.call('HSET', amounts, hold, hold_amount)
    redis.call('ZADD', KEYS[8 * f[1] + 2], hold_deadline, hold)
  end
  for i = 1, 6 do reply[#reply + 1] = f[i] end
end
if op then
  local kept = {}
  for i, v in ipairs(reply) do kept[i] = string.format('%.0f', v) end
  redis.call('SET', op, table.concat(kept, ','), 'PX', math.max(1, tonumber(ARGV[7]) - tonumber(now)))
end
return reply
