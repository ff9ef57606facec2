-- release.lua: drop a hold, or part of it, without charging anything (the upstream failed, or
-- a lease gives back what it did not lend).
-- KEYS, 2 per budget that may hold it: reservation zset (hold id -> deadline ms),
--       amount hash (hold id -> nano-USD, "" -> running total);
--       then, optionally (an odd count), the operation key: a partial release may be sent twice
--       (a lost connection) and must give back once, so its reply is kept there and a second
--       call returns it and changes nothing.
-- ARGV[1] hold id (a request id, or a lease id)
-- ARGV[2] optional: the nano-USD to give back (the whole hold when absent, empty or larger)
-- ARGV[3] optional: seconds the operation key lives
-- Returns the most nano-USD given back on one budget (0 when nothing was held: no budget,
-- already settled, released, or reclaimed after its deadline).

local hold, part = ARGV[1], ARGV[2] or ''
local op = nil
if #KEYS % 2 == 1 then
  op = KEYS[#KEYS]
  local seen = redis.call('GET', op)
  if seen then return tonumber(seen) end
end
local released = 0
for i = 1, #KEYS - 1, 2 do
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
if op then redis.call('SET', op, released, 'EX', math.max(1, tonumber(ARGV[3]))) end
return released
