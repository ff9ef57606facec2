-- renew.lua: move the deadlines of holds still in flight to a later time (a live process
-- renews what it holds; a dead one's holds lapse at their deadline and are reclaimed).
-- KEYS: reservation zsets (hold id -> deadline ms), each once.
-- ARGV[1] the new deadline, epoch ms
-- ARGV[2 .. 1+#KEYS] how many hold ids follow for each key, in KEYS order
-- then the hold ids (request ids or lease ids), key by key.
-- Only holds that still exist are touched (XX: a settled, released or reclaimed hold is not
-- brought back), and only to a later deadline (GT): sent twice, the second call changes nothing.
-- Returns the number of holds whose deadline moved.

local deadline = ARGV[1]
local pos = #KEYS + 2
local moved = 0
for i = 1, #KEYS do
  local n = tonumber(ARGV[1 + i])
  local first = 0
  while first < n do
    local last = math.min(n, first + 256)  -- ZADD's arguments in bounded slices
    local args = {}
    for j = first, last - 1 do
      args[#args + 1] = deadline
      args[#args + 1] = ARGV[pos + j]
    end
    moved = moved + redis.call('ZADD', KEYS[i], 'XX', 'GT', 'CH', unpack(args))
    first = last
  end
  pos = pos + n
end
return moved
