-- release.lua: drop a request's reservation without charging anything (the upstream failed).
-- KEYS, 2 per budget that may hold it: reservation zset (request id -> deadline ms),
--       amount hash (request id -> nano-USD, "" -> running total)
-- ARGV[1] request id
-- Returns the nano-USD amount that was held (0 when nothing was: no budget, already settled,
-- released, or reclaimed after its deadline).

local rid = ARGV[1]
local released = 0
for i = 1, #KEYS, 2 do
  local amount = redis.call('HGET', KEYS[i + 1], rid)
  if amount then
    redis.call('HDEL', KEYS[i + 1], rid)
    if amount ~= '0' then redis.call('HINCRBY', KEYS[i + 1], '', '-' .. amount) end  -- Redis refuses "-0"
    redis.call('ZREM', KEYS[i], rid)
    local n = tonumber(amount)
    if n > released then released = n end
  end
end
return released
