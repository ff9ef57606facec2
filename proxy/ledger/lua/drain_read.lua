-- drain_read.lua: the entries of a project's event stream that no consumer of the group was
-- given yet, now this consumer's (XREADGROUP, never blocking), as one JSON string: a list of
-- [id, {field: value, ...}]. One string rather than a reply of some fifty strings per entry:
-- the sink reads thousands of entries a second, and each string of a reply costs the client;
-- and an object rather than a list of fields and values, whose names the client's JSON
-- decoder keeps once (and it needs a mapping anyway).
-- KEYS[1] the project's event stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] at most this many entries
-- Returns '' when there is none. Fails with NOGROUP when the stream or the group is missing.

local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not reply or not reply[1] or #reply[1][2] == 0 then return '' end
local out = {}
for i, entry in ipairs(reply[1][2]) do
  local fields, map = entry[2], {}
  for j = 1, #fields, 2 do map[fields[j]] = fields[j + 1] end
  out[i] = {entry[1], map}
end
return cjson.encode(out)
