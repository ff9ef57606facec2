-- migrate_session.lua: move one aggregate of a session from the layout of one hash per bucket
-- (fb:{p}:u:session:<bucket>:<session>) into the session's one hash (fb:{p}:s:<session>), once.
-- KEYS[1] the old hash   KEYS[2] the session's hash
-- ARGV[1] the bucket's tag in the session's hash: the bucket id, "t" for the total
-- The session's hash (session_fields.py): "<tag><code>" for a total, "<tag><model index><code>"
-- for the breakdown by model, "@<model>" -> the model's index, "@" -> the number of indexed
-- models. Codes: r requests, p prompt_tokens, c completion_tokens, k cached_tokens,
-- w cache_creation_tokens, x reasoning_tokens, $ cost, e estimated. The first model (index 1)
-- has no breakdown fields: its share is the totals less the other models'.
-- Each field of the old hash is added (HINCRBY: what settles wrote to the new hash meanwhile
-- stays counted); the session's hash keeps the longer of the two TTLs (none beats any); the old
-- hash goes. A second call finds no old hash and changes nothing.
-- Returns 1 when it moved the hash, 0 when there was none.

local old, new, tag = KEYS[1], KEYS[2], ARGV[1]
if redis.call('EXISTS', old) == 0 then return 0 end
local codes = {requests = 'r', prompt_tokens = 'p', completion_tokens = 'c', cached_tokens = 'k',
               cache_creation_tokens = 'w', reasoning_tokens = 'x', cost = '$', estimated = 'e'}
local old_ttl, new_ttl = redis.call('PTTL', old), redis.call('PTTL', new)
local fields = redis.call('HGETALL', old)
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  local model, what = string.match(name, '^m|(.*)|([^|]*)$')
  if model then
    local code = codes[what]
    if code then
      local index = redis.call('HGET', new, '@' .. model)
      if not index then
        index = tostring(redis.call('HINCRBY', new, '@', 1))
        redis.call('HSET', new, '@' .. model, index)
      end
      if index ~= '1' then redis.call('HINCRBY', new, tag .. index .. code, value) end
    end
  elseif codes[name] then
    redis.call('HINCRBY', new, tag .. codes[name], value)
  end
end
if old_ttl == -1 or new_ttl == -1 then
  redis.call('PERSIST', new)
elseif old_ttl > new_ttl then
  redis.call('PEXPIRE', new, old_ttl)
end
redis.call('DEL', old)
return 1
