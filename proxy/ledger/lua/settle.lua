-- settle.lua: record one finished request exactly once, releasing its reservation.
-- Money is integer nano-USD passed as strings: only HINCRBY (64-bit integers in Redis) adds it;
-- nothing here multiplies, and the comparisons are exact below 2^53.
--
-- KEYS[1]                 done-marker of this request (string; its presence means "already settled")
-- KEYS[2]                 the project's event stream
-- KEYS[3 .. 2+2R]         per budget that may hold this request's reservation:
--                         reservation zset (request id -> deadline ms), amount hash (request id -> nano, "" -> total)
-- next 5*S keys           usage hashes, scope by scope, each in period order hour, day, week, month, total
-- next T keys (T = 0|5)   sessions-by-cost zsets, in the same period order
-- next 2*(S-1) keys       per budget scope (every usage scope but the last, the model):
--                         budget config hash, alert claims hash ("<bucket>|<threshold>" -> 1)
--
-- ARGV[1]       request id
-- ARGV[2]       done-marker TTL, seconds
-- ARGV[3..5]    R, S, T (the counts above)
-- ARGV[6..10]   TTL in seconds of the hour, day, week, month, total keys (0 = never expires)
-- ARGV[11..13]  model as priced, agent id, session id (for breakdown fields and the session ranking)
-- ARGV[14..21]  increments: requests, prompt_tokens, completion_tokens, cached_tokens,
--               cache_creation_tokens, reasoning_tokens, cost (nano-USD), estimated
-- ARGV[22]      event stream max length, approximate (0 = unbounded)
-- ARGV[23 .. 22+S]  breakdown level of each scope: 2 = by model and agent, 1 = by model, 0 = none
-- ARGV[23+S .. 27+S]  this event's bucket ids of the hour, day, week, month, total periods
-- ARGV[28+S ..] event fields and values
--
-- Returns {0, 0} when this request id was already settled, else {1, released nano, then six
-- values per alert threshold this request crossed: budget scope index (0-based), threshold as
-- written in the config, spent after this request (nano), limit (nano), period, mode}.

local rid = ARGV[1]
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return {0, 0}
end

local R, S, T = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

-- Release this request's reservation wherever it is still held.
local released = 0
for i = 0, R - 1 do
  local zset, amounts = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local amount = redis.call('HGET', amounts, rid)
  if amount then
    redis.call('HDEL', amounts, rid)
    if amount ~= '0' then redis.call('HINCRBY', amounts, '', '-' .. amount) end  -- Redis refuses "-0"
    redis.call('ZREM', zset, rid)
    local n = tonumber(amount)
    if n > released then released = n end
  end
end

-- Usage aggregates.
local names = {'requests', 'prompt_tokens', 'completion_tokens', 'cached_tokens',
               'cache_creation_tokens', 'reasoning_tokens', 'cost', 'estimated'}
local values = {}
for i = 1, 8 do values[i] = ARGV[13 + i] end
local ttls = {ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]}
-- Breakdown fields: requests, prompt_tokens, completion_tokens, cost (value indexes 1, 2, 3, 7).
local picked = {1, 2, 3, 7}
local by_model, by_agent = {}, {}
for j, i in ipairs(picked) do
  by_model[j] = 'm|' .. ARGV[11] .. '|' .. names[i]
  by_agent[j] = 'a|' .. ARGV[12] .. '|' .. names[i]
end

local first = 3 + 2 * R
for s = 0, S - 1 do
  local level = tonumber(ARGV[23 + s])
  for p = 1, 5 do
    local key = KEYS[first + 5 * s + p - 1]
    for i = 1, 8 do
      if values[i] ~= '0' then redis.call('HINCRBY', key, names[i], values[i]) end
    end
    if level >= 1 then
      for j, i in ipairs(picked) do
        if values[i] ~= '0' then redis.call('HINCRBY', key, by_model[j], values[i]) end
      end
    end
    if level >= 2 then
      for j, i in ipairs(picked) do
        if values[i] ~= '0' then redis.call('HINCRBY', key, by_agent[j], values[i]) end
      end
    end
    if ttls[p] ~= '0' then redis.call('EXPIRE', key, ttls[p]) end
  end
end

-- Sessions ranked by cost (scores are nano-USD; exact below 2^53).
local ranking = first + 5 * S
for p = 1, T do
  local key = KEYS[ranking + p - 1]
  redis.call('ZINCRBY', key, values[7], ARGV[13])
  if ttls[p] ~= '0' then redis.call('EXPIRE', key, ttls[p]) end
end

-- Alert thresholds. A budget's config field alert_at lists "threshold=amount" pairs, the amounts
-- in nano-USD worked out exactly when the budget was set (an amount of 0, from a zero limit,
-- counts as 1: the first nano spent crosses it). This request crossed a threshold when it took
-- the spend of the budget's current bucket from below the amount to at least it; that spend only
-- grows, so one request at most does. The claim "<bucket>|<threshold>" (HSETNX) keeps it to one
-- alert per threshold per period even when the limit changes mid-period; claims live as long as
-- the period's usage aggregates. Without budgets this costs one EXISTS.
local alerts = {}
local cost = tonumber(values[7])
local budgets = ranking + T
local configs = {}
for b = 0, S - 2 do configs[b + 1] = KEYS[budgets + 2 * b] end
if cost > 0 and redis.call('EXISTS', unpack(configs)) > 0 then
  local period_index = {hour = 1, day = 2, week = 3, month = 4, total = 5}
  for b = 0, S - 2 do
    local config = redis.call('HMGET', KEYS[budgets + 2 * b], 'limit', 'period', 'mode', 'alert_at')
    if config[4] and config[4] ~= '' then
      local p = period_index[config[2]] or 5
      local spent = redis.call('HGET', KEYS[first + 5 * b + p - 1], 'cost') or '0'
      local after = tonumber(spent)
      local before = after - cost
      local claims, bucket = KEYS[budgets + 2 * b + 1], ARGV[22 + S + p]
      local claimed = false
      for threshold, amount in string.gmatch(config[4], '([^%s=]+)=(%d+)') do
        local level = math.max(tonumber(amount), 1)
        if before < level and level <= after
            and redis.call('HSETNX', claims, bucket .. '|' .. threshold, '1') == 1 then
          if ttls[p] ~= '0' then redis.call('EXPIRE', claims, ttls[p]) end
          claimed = true
          for _, v in ipairs({b, threshold, spent, config[1], config[2], config[3] or 'hard'}) do
            alerts[#alerts + 1] = v
          end
        end
      end
      -- Keep the claims hash small: once it grows, drop the claims of earlier periods.
      if claimed and redis.call('HLEN', claims) > 64 then
        for _, field in ipairs(redis.call('HKEYS', claims)) do
          if string.sub(field, 1, #bucket + 1) ~= bucket .. '|' then redis.call('HDEL', claims, field) end
        end
      end
    end
  end
end

-- The event.
local event = {}
for i = 28 + S, #ARGV do event[#event + 1] = ARGV[i] end
if ARGV[22] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[22], '*', unpack(event))
else
  redis.call('XADD', KEYS[2], '*', unpack(event))
end

local reply = {1, released}
for _, v in ipairs(alerts) do reply[#reply + 1] = v end
return reply
