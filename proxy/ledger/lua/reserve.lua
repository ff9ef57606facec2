-- reserve.lua: count a request on its rate limits and hold its worst-case cost on every budget
-- that applies, or do neither.
-- Money is integer nano-USD. Limits, spend and holds stay below 2^53, where Lua's doubles are
-- exact; this script only adds, subtracts and compares them, never multiplies.
--
-- KEYS, 8 per candidate budget (absent budgets are skipped):
--   +1 config hash (limit, period, mode)     +2 reservation zset (request id -> deadline ms)
--   +3 amount hash (request id -> nano, "" -> running total)
--   +4..+8 the budget's usage hashes for the current hour, day, week, month, total buckets (a
--          session's: its one hash, 5 times)
-- then C rate counters of the current minute (hash: r requests, t tokens), one per rate limit;
-- then, when a lease is asked for, its operation key (the count is 8 per budget + C + 1): a lease
-- grant may be sent twice (a lost connection) and must hold the lease once, so the reply is
-- kept there until the lease's deadline, and a second call returns it and changes nothing.
-- ARGV[1] request id   ARGV[2] amount, nano-USD   ARGV[3] now, epoch ms   ARGV[4] deadline, epoch ms
-- ARGV[5] lease id ("" = no lease)   ARGV[6] lease amount   ARGV[7] lease deadline, epoch ms
-- ARGV[8] room a lease needs: the lease is held instead of the request's amount only when every
--         hard budget has at least this much room (and the request's amount fits, as always)
-- ARGV[9] C, the number of rate limits   ARGV[10] tokens the request counts (its worst case)
-- ARGV[11 .. 10+2C] per rate limit: requests per minute, tokens per minute (0 = no such limit)
-- then: the minute's end, epoch ms (its counters expire a minute after it, as the
--       requester's clock counts: PEXPIRE, so a skew between clocks does not matter); the requests and
--       tokens a lease counts; the requests and tokens of room a lease needs on every limit
-- then, per candidate budget (in KEYS order), the field of each of its 5 usage hashes that holds
--       its spend: "cost", or in a session's hash the bucket's ("<bucket tag>$", session_fields.py);
--       absent: "cost"
-- First the rate limits: when one has no room for the request (one more request, its tokens),
-- nothing changes and the reply's ok is -1. Then reclaims every hold whose deadline < now, then
-- checks that each hard budget has limit - spent - held >= amount (a previous hold of this same
-- request id is replaced, not counted), and only if all do, counts the request (or the lease's
-- requests and tokens) on every rate limit and holds the amount on every existing budget, soft
-- ones included: the lease amount under the lease id (ok 2) when a lease was asked for and
-- every hard budget and rate limit has the room it needs, else the request's amount under the
-- request id (ok 1).
-- Returns {ok 2|1|0|-1, holds reclaimed, C, then 2 numbers per rate limit: requests and tokens
--          counted in this minute (after this call when ok > 0, else before it),
--          then 6 numbers per existing budget (none when ok is -1):
--          candidate index (0-based), hard 1|0, period index (1 hour .. 5 total), limit, spent, held}
-- where "held" excludes this request's own previous hold.

local rid, amount, now, deadline = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local leasing, need = ARGV[5] ~= '', tonumber(ARGV[8])
local C, tokens = tonumber(ARGV[9]), tonumber(ARGV[10])
local rate_at = 11 + 2 * C
local window_end = ARGV[rate_at]
local lease_requests, lease_tokens = ARGV[rate_at + 1], ARGV[rate_at + 2]
local need_requests, need_tokens = tonumber(ARGV[rate_at + 3]), tonumber(ARGV[rate_at + 4])
local spend_at = rate_at + 5
local period_index = {hour = 1, day = 2, week = 3, month = 4, total = 5}
local reclaimed = 0
local found = {}
local ok = 1
local op = nil
local B = math.floor((#KEYS - C) / 8)
if (#KEYS - C) % 8 == 1 then
  op = KEYS[#KEYS]
  local seen = redis.call('GET', op)
  if seen then
    local again = {}
    for v in string.gmatch(seen, '[^,]+') do again[#again + 1] = tonumber(v) end
    return again
  end
end

-- Rate limits: the counters of this minute, checked before anything changes.
local counted = {}
local rate_ok = true
for c = 1, C do
  local v = redis.call('HMGET', KEYS[8 * B + c], 'r', 't')
  local r, t = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  counted[c] = {r, t}
  local rpm, tpm = tonumber(ARGV[9 + 2 * c]), tonumber(ARGV[10 + 2 * c])
  if (rpm > 0 and r + 1 > rpm) or (tpm > 0 and t + tokens > tpm) then rate_ok = false end
  if (rpm > 0 and rpm - r < need_requests) or (tpm > 0 and tpm - t < need_tokens) then leasing = false end
end
if not rate_ok then
  local reply = {-1, 0, C}
  for c = 1, C do reply[#reply + 1] = counted[c][1]; reply[#reply + 1] = counted[c][2] end
  return reply
end

for b = 0, B - 1 do
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
    local spent = tonumber(redis.call('HGET', KEYS[base + 3 + p], ARGV[spend_at + 5 * b + p - 1] or 'cost') or '0')
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
local reply = {ok, reclaimed, C}
local take_requests, take_tokens = 1, ARGV[10]
if ok == 2 then take_requests, take_tokens = lease_requests, lease_tokens end
for c = 1, C do
  local r, t = counted[c][1], counted[c][2]
  if ok ~= 0 then
    local key = KEYS[8 * B + c]
    r = redis.call('HINCRBY', key, 'r', take_requests)
    t = redis.call('HINCRBY', key, 't', take_tokens)
    redis.call('PEXPIRE', key, tonumber(window_end) - tonumber(now) + 60000)  -- on Redis's clock: skew-proof
  end
  reply[#reply + 1] = r; reply[#reply + 1] = t
end
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
