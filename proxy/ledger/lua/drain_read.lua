-- drain_read.lua: the entries of a project's event stream that no consumer of the group was
-- given yet, now this consumer's (XREADGROUP, never blocking), as one JSON string: a list of
-- [id, [field, value, ...]]. One string rather than a reply of some fifty strings per entry:
-- the sink reads thousands of entries a second, and each string of a reply costs the client.
-- KEYS[1] the project's event stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] at most this many entries
-- Returns '' when there is none. Fails with NOGROUP when the stream or the group is missing.

local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not reply or not reply[1] or #reply[1][2] == 0 then return '' end
return cjson.encode(reply[1][2])
