-- release.lua: drop a hold, or part of it, without charging anything (the upstream failed, or
-- a lease gives back what it did not lend).
-- KEYS, 2 per budget that may hold it: reservation zset (hold id -> deadline ms),
--       amount hash (hold id -> nano-USD, "" -> running total)
-- ARGV[1] hold id (a request id, or a lease id)
-- ARGV[2] optional: the nano-USD to give back (the whole hold when absent, empty or larger)
-- Returns the most nano-USD given back on one budget (0 when nothing was held: no budget,
-- already settled, released, or reclaimed after its deadline).

local hold, part = ARGV[1], ARGV[2] or ''
local released = 0
for i = 1, #KEYS, 2 do
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
return released
