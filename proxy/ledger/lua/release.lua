-- release.lua: drop a hold, or part of it, without charging anything (the upstream failed, or
-- a lease gives back what it did not lend).
-- KEYS, 2 per budget that may hold it: reservation zset (hold id -> deadline ms),
--       amount hash (hold id -> nano-USD, "" -> running total);
--       then, optionally (an odd count before the counters), the operation key: a partial
--       release may be sent twice (a lost connection) and must give back once, so its reply is
--       kept there and a second call returns it and changes nothing;
--       then C rate counters of the minute a lease counted its requests in (ARGV[4]).
-- ARGV[1] hold id (a request id, or a lease id)
-- ARGV[2] optional: the nano-USD to give back (the whole hold when absent, empty or larger)
-- ARGV[3] optional: seconds the operation key lives
-- ARGV[4] optional: C, the number of rate counters (0 when absent)
-- ARGV[5], ARGV[6]: the requests and tokens to take off each counter that still exists (its
--       minute not over a minute ago), when C > 0: what a lease counted and did not lend
-- Returns the most nano-USD given back on one budget (0 when nothing was held: no budget,
-- already settled, released, or reclaimed after its deadline).

local hold, part = ARGV[1], ARGV[2] or ''
local C = tonumber(ARGV[4] or '0')
local H = #KEYS - C
local op = nil
if H % 2 == 1 then
  op = KEYS[H]
  H = H - 1
  local seen = redis.call('GET', op)
  if seen then return tonumber(seen) end
end
local released = 0
for i = 1, H - 1, 2 do
  local amount = redis.call('HGET', KEYS[i + 1], hold)
  if amount then
    local take = amount
    if part ~= '' and tonumber(part) < tonumber(amount) then take = part end
    if take == amount then
      redis.call('HDEL', KEYS[i + 1], hold)
      redis.call('ZREM', KEYS[i], hold)
    elseif take ~= '0' then
      redis.call('HINCRBY', KEYS[i + 1], hold, '-' .. take)
    end
    if take ~= '0' then redis.call('HINCRBY', KEYS[i + 1], '', '-' .. take) end  -- Redis refuses "-0"
    local n = tonumber(take)
    if n > released then released = n end
  end
end
for c = 1, C do
  local counter = KEYS[#KEYS - C + c]
  if redis.call('EXISTS', counter) == 1 then
    if ARGV[5] ~= '0' then redis.call('HINCRBY', counter, 'r', '-' .. ARGV[5]) end
    if ARGV[6] ~= '0' then redis.call('HINCRBY', counter, 't', '-' .. ARGV[6]) end
  end
end
if op then redis.call('SET', op, released, 'EX', math.max(1, tonumber(ARGV[3]))) end
return released
