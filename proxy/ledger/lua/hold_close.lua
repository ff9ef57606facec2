-- hold_close.lua: close a usage hold's record once (settled or released).
-- KEYS[1] the hold's record (hash; Keys.hold)
-- ARGV[1] how it closes: the value of its "closed" field
-- Sets "closed" only when the record exists and has none, so of two closes exactly one wins.
-- Returns {0} when there is no such record, else {1 if this call closed it else 0, the record's
-- fields and values as they stand after}.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
local won = redis.call('HSETNX', KEYS[1], 'closed', ARGV[1])
return {won, redis.call('HGETALL', KEYS[1])}
