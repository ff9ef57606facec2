-- settle.lua: record one finished request exactly once, releasing its reservation.
-- Money is integer nano-USD passed as strings: only HINCRBY (64-bit integers in Redis) adds it;
-- nothing here multiplies, and the one comparison is exact below 2^53.
--
-- KEYS[1]                 done-marker of this request (string; its presence means "already settled")
-- KEYS[2]                 the project's event stream
-- KEYS[3 .. 2+2R]         per budget that may hold this request's reservation:
--                         reservation zset (request id -> deadline ms), amount hash (request id -> nano, "" -> total)
-- next 5*S keys           usage hashes, scope by scope, each in period order hour, day, week, month, total
-- next T keys (T = 0|5)   sessions-by-cost zsets, in the same period order
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
-- ARGV[23+S ..] event fields and values
--
-- Returns {1, released nano} when recorded, {0, 0} when this request id was already settled.

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

-- The event.
local event = {}
for i = 23 + S, #ARGV do event[#event + 1] = ARGV[i] end
if ARGV[22] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[22], '*', unpack(event))
else
  redis.call('XADD', KEYS[2], '*', unpack(event))
end

return {1, released}
