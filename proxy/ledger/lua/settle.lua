-- settle.lua: record finished requests, each exactly once, releasing their reservations.
-- One call carries a batch of requests of one project (every key carries the project's hash
-- tag). Each request is taken in order, as if settled alone, but their usage increments are
-- summed first (per plan: requests with the same usage keys, i.e. the same scopes, model and
-- hour, add the same fields to the same keys) and written once per batch: under load, one
-- HINCRBY stands for many requests.
-- Money is integer nano-USD passed as strings. Sums are Lua doubles, exact below 2^53; the
-- caller keeps a batch's total cost far below that.
--
-- ARGV[1]      N, the number of requests in the batch
-- ARGV[2]      idempotency window, seconds: a done-set lives this long after its last write
-- ARGV[3..7]   TTL in seconds of the hour, day, week, month, total keys (0 = never expires)
-- ARGV[8]      event stream max length, approximate (0 = unbounded)
-- ARGV[9]      session TTL, seconds: a session's aggregates and the rankings live at most this
--              long after their last write, whatever their period's TTL (0 = the period's)
-- ARGV[10]     ranking size: sessions kept in each sessions-by-cost zset (0 = unbounded)
-- ARGV[11]     P, the number of plans: what requests of the same attribution, model and hour
--              share (their keys, and these values), sent once for all of them
-- then one segment per plan, its entries relative to the segment's first:
--   +0 L, the segment's length   +1..+3 R, S, T (key counts below)
--   +4..+6 model as priced, agent id, session id (breakdown fields, session ranking)
--   +7 .. +6+S          breakdown level of each scope: 2 = by model and agent, 1 = by model, 0 = none
--   +7+S .. +11+S       bucket ids of the hour, day, week, month, total periods
--   +12+S .. +15+S      with a session: the oldest bucket id its hash keeps of the hour, day, week,
--                       month periods ("" = all), else "" each
--   +16+S .. +L-1       event fields and values of the attribution (between each event's head and tail)
-- then one segment per request:
--   +0 L, the segment's length   +1 its plan (1-based)
--   +2 hold id: the request id, or the id of the lease the request drew its reservation from
--   +3 renew: 1 = renew the TTL of this request's usage keys (else only a key this batch
--      creates gets one; the caller renews each key about once an hour), and prune the plan's
--      rankings of sessions whose aggregates expired (at most once per project and hour)
--   +4 part: the nano-USD to release from the hold ("" = all of it: the request's own hold)
--   +5 marker: the request id's digest, its member in its done-set
--   +6..+13 increments: requests, prompt_tokens, completion_tokens, cached_tokens,
--           cache_creation_tokens, reasoning_tokens, cost (nano-USD), estimated
--   +14 W, the rate counters the request was counted on (in the minute it was reserved)
--   +15 the tokens to add to each of them that still exists: used - counted (its worst case)
--   +16 H; +17 .. +16+H the event's head (fields and values), +17+H .. +L-1 its tail
-- KEYS: each plan's keys one after the other, in this order:
--   the project's event stream,
--   2*R: per budget that may hold the reservation: reservation zset, amount hash
--   5*S: usage hashes, scope by scope, each in period order hour, day, week, month, total
--        (with a session, T = 6, the session's are the third scope's: its one hash, 5 times)
--   T (0|6): sessions-by-cost zsets, in the same period order, then the project's prune claim
--            of this hour (string; present = this hour's rankings were pruned)
--   2*(S-1): per budget scope (every usage scope but the last, the model): budget config hash,
--            alert claims hash ("<bucket>|<threshold>" -> 1)
-- then, request by request, its done-set (a set of markers of the requests settled in its time
-- slot; a marker's presence means "already settled") and its W rate counters.
--
-- A session's hash (session_fields.py) holds every period's bucket: field "<tag><code>" for a
-- total, "<tag><model index><code>" for the breakdown by model, "@<model>" -> the model's index,
-- "@" -> the number of indexed models. <tag> is the bucket id, "t" for the total; codes: r requests,
-- p prompt_tokens, c completion_tokens, k cached_tokens, w cache_creation_tokens, x reasoning_tokens,
-- $ cost, e estimated. The session's first model (index 1) has no breakdown fields: its share is
-- the totals less the other models' (most sessions use one model). The hash lives the session
-- TTL after its last write; when its TTL is renewed, the fields of buckets older than the oldest
-- kept go.
--
-- Returns, per request in order: recorded 1|0, released nano, A, then six values per alert
-- threshold it crossed (A of them): budget scope index (0-based), threshold as written in the
-- config, spent after this request (nano), limit (nano), period, mode.

local N = tonumber(ARGV[1])
local done_ttl, maxlen = ARGV[2], ARGV[8]
local ttls = {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]}
local session_ttl, rank_size = tonumber(ARGV[9]), tonumber(ARGV[10])
-- A session's keys (and the rankings) live the shorter of their period's TTL and the session TTL.
local session_ttls = {}
for p = 1, 5 do
  local ttl = tonumber(ttls[p])
  session_ttls[p] = (session_ttl > 0 and (ttl == 0 or ttl > session_ttl)) and ARGV[9] or ttls[p]
end
-- The session hash lives as long as its longest-lived period ('0': for good).
local session_hash_ttl = '0'
if session_ttl > 0 then
  session_hash_ttl = ARGV[9]
else
  local longest = 0
  for p = 1, 5 do
    local ttl = tonumber(ttls[p])
    if ttl == 0 then longest = nil; break end
    if ttl > longest then longest = ttl end
  end
  if longest then session_hash_ttl = tostring(longest) end
end
local names = {'requests', 'prompt_tokens', 'completion_tokens', 'cached_tokens',
               'cache_creation_tokens', 'reasoning_tokens', 'cost', 'estimated'}
local codes = {'r', 'p', 'c', 'k', 'w', 'x', '$', 'e'}
local picked = {1, 2, 3, 7}  -- breakdown fields: requests, prompt_tokens, completion_tokens, cost
local period_index = {hour = 1, day = 2, week = 3, month = 4, total = 5}

-- Usage sums of the batch: key -> {field -> sum}, with each key's fields and the keys
-- themselves in first-seen order ('requests' is always a key's first: every request counts
-- one), each key's TTL, and the keys whose TTL is to be renewed.
local sums, fields_of, order, key_ttl, renew = {}, {}, {}, {}, {}
local function add(key, ttl, field, value)
  local values = sums[key]
  if not values then
    values = {}
    sums[key] = values
    fields_of[key] = {}
    order[#order + 1] = key
    key_ttl[key] = ttl
  end
  local old = values[field]
  if old then
    values[field] = old + value
  else
    local fields = fields_of[key]
    fields[#fields + 1] = field
    values[field] = value
  end
end

-- Plans of the batch: requests whose usage keys are the same share one plan, and their
-- increments are summed there first.
local plans = {}
local a, k = 12, 1  -- the current segment's first ARGV and first KEY
for i = 1, tonumber(ARGV[11]) do
  local L = tonumber(ARGV[a])
  local R, S, T = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local levels, event = {}, {}
  for s = 0, S - 1 do levels[s + 1] = tonumber(ARGV[a + 7 + s]) end
  for j = a + 16 + S, a + L - 1 do event[#event + 1] = ARGV[j] end
  local usage = k + 1 + 2 * R
  -- Where each scope's usage of each period goes: a key, and a field prefix ("" but for the
  -- session, whose hash holds every bucket: the bucket's tag).
  local prefixes, kept = {}, {}
  for s = 0, S - 1 do
    prefixes[s + 1] = {'', '', '', '', ''}
  end
  if T > 0 then
    for p = 1, 5 do
      local bucket = ARGV[a + 6 + S + p]
      prefixes[3][p] = bucket == 'total' and 't' or bucket
    end
    for p = 1, 4 do
      local oldest = ARGV[a + 11 + S + p]
      if oldest ~= '' then kept[string.sub(oldest, 1, 1)] = oldest end
    end
  end
  plans[i] = {R = R, S = S, T = T, model = ARGV[a + 4], agent = ARGV[a + 5], session = ARGV[a + 6],
              levels = levels, buckets = a + 6 + S, event = event, stream = KEYS[k], holds = k + 1,
              usage = usage, ranking = usage + 5 * S, budgets = usage + 5 * S + T,
              prefixes = prefixes, kept = kept,
              values = {0, 0, 0, 0, 0, 0, 0, 0}, renews = false, ranked = false}
  a, k = a + L, k + 1 + 2 * R + 5 * S + T + 2 * (S - 1)
end

-- The field of a total: its name, or in a session's hash its prefix and code.
local function total_field(prefix, i)
  if prefix == '' then return names[i] end
  return prefix .. codes[i]
end

-- Cost this batch adds to a budget's usage (key and field), kept for the ones alert checks read.
local key_cost = {}

local stored_cost, configs = {}, {}
local done_sets, done_order = {}, {}
local reply = {}

for n = 1, N do
  local L = tonumber(ARGV[a])
  local plan = plans[tonumber(ARGV[a + 1])]
  local hold, renews, part = ARGV[a + 2], ARGV[a + 3] == '1', ARGV[a + 4]
  local R, S, T = plan.R, plan.S, plan.T
  local done = KEYS[k]
  local W = tonumber(ARGV[a + 14])
  if not done_sets[done] then
    done_sets[done] = true
    done_order[#done_order + 1] = done
  end
  if redis.call('SADD', done, ARGV[a + 5]) == 0 then
    reply[#reply + 1] = 0; reply[#reply + 1] = 0; reply[#reply + 1] = 0
  else
    -- Release this request's reservation (or its part of a lease) wherever it is still held.
    local released = 0
    for i = 0, R - 1 do
      local zset, amounts = KEYS[plan.holds + 2 * i], KEYS[plan.holds + 1 + 2 * i]
      local amount = redis.call('HGET', amounts, hold)
      if amount then
        local take = amount
        if part ~= '' and tonumber(part) < tonumber(amount) then take = part end
        if take == amount then
          redis.call('HDEL', amounts, hold)
          redis.call('ZREM', zset, hold)
        elseif take ~= '0' then
          redis.call('HINCRBY', amounts, hold, '-' .. take)
        end
        if take ~= '0' then redis.call('HINCRBY', amounts, '', '-' .. take) end  -- Redis refuses "-0"
        local n = tonumber(take)
        if n > released then released = n end
      end
    end

    -- Usage increments, into the sums of this request's plan.
    local values = {}
    for i = 1, 8 do values[i] = tonumber(ARGV[a + 5 + i]) end
    local acc = plan.values
    for i = 1, 8 do acc[i] = acc[i] + values[i] end
    if renews then plan.renews = true end
    plan.ranked = T > 0

    -- Alert thresholds. A budget's config field alert_at lists "threshold=amount" pairs, the
    -- amounts in nano-USD worked out exactly when the budget was set (an amount of 0, from a
    -- zero limit, counts as 1: the first nano spent crosses it). This request crossed a
    -- threshold when it took the spend of the budget's current bucket (what is stored plus
    -- what this batch added so far) from below the amount to at least it; that spend only
    -- grows, so one request at most does. The claim "<bucket>|<threshold>" (HSETNX) keeps it to
    -- one alert per threshold per period even when the limit changes mid-period; claims live
    -- as long as the period's usage aggregates.
    local alerts = {}
    local cost = values[7]
    local usage, budgets = plan.usage, plan.budgets
    if cost > 0 then
      for b = 0, S - 2 do
        local config_key = KEYS[budgets + 2 * b]
        local config = configs[config_key]
        if config == nil then
          config = redis.call('HMGET', config_key, 'limit', 'period', 'mode', 'alert_at')
          configs[config_key] = config
        end
        if config[4] and config[4] ~= '' then
          local p = period_index[config[2]] or 5
          local key, spent_field = KEYS[usage + 5 * b + p - 1], total_field(plan.prefixes[b + 1][p], 7)
          local spent_key = key .. '\n' .. spent_field
          if stored_cost[spent_key] == nil then
            stored_cost[spent_key] = tonumber(redis.call('HGET', key, spent_field) or '0')
          end
          key_cost[spent_key] = (key_cost[spent_key] or 0) + cost
          local after = stored_cost[spent_key] + key_cost[spent_key]
          local before = after - cost
          local claims, bucket = KEYS[budgets + 2 * b + 1], ARGV[plan.buckets + p]
          local claimed = false
          for threshold, amount in string.gmatch(config[4], '([^%s=]+)=(%d+)') do
            local level = math.max(tonumber(amount), 1)
            if before < level and level <= after
                and redis.call('HSETNX', claims, bucket .. '|' .. threshold, '1') == 1 then
              if ttls[p] ~= '0' then redis.call('EXPIRE', claims, ttls[p]) end
              claimed = true
              for _, v in ipairs({b, threshold, string.format('%.0f', after), config[1], config[2],
                                  config[3] or 'hard'}) do
                alerts[#alerts + 1] = v
              end
            end
          end
          -- Keep the claims hash small: once it grows, drop the claims of earlier periods.
          if claimed and redis.call('HLEN', claims) > 64 then
            for _, field in ipairs(redis.call('HKEYS', claims)) do
              if string.sub(field, 1, #bucket + 1) ~= bucket .. '|' then redis.call('HDEL', claims, field) end
            end
          end
        end
      end
    end

    -- Rate limits counted the request's worst case in tokens: now what it used.
    local used = ARGV[a + 15]
    if used ~= '0' then
      for w = 1, W do
        if redis.call('EXISTS', KEYS[k + w]) == 1 then redis.call('HINCRBY', KEYS[k + w], 't', used) end
      end
    end

    -- The event: its head, its attribution, its tail.
    local event = {}
    local H = tonumber(ARGV[a + 16])
    for i = a + 17, a + 16 + H do event[#event + 1] = ARGV[i] end
    for _, v in ipairs(plan.event) do event[#event + 1] = v end
    for i = a + 17 + H, a + L - 1 do event[#event + 1] = ARGV[i] end
    if maxlen ~= '0' then
      redis.call('XADD', plan.stream, 'MAXLEN', '~', maxlen, '*', unpack(event))
    else
      redis.call('XADD', plan.stream, '*', unpack(event))
    end

    reply[#reply + 1] = 1
    reply[#reply + 1] = released
    reply[#reply + 1] = #alerts / 6
    for _, v in ipairs(alerts) do reply[#reply + 1] = v end
  end
  a, k = a + L, k + 1 + W
end

-- A model's index in a session's hash (its fields "<tag><index><code>"), given one when it has none.
local model_index = {}
local function index_of(key, model)
  local known = model_index[key .. '\n' .. model]
  if known then return known end
  local index = redis.call('HGET', key, '@' .. model)
  if not index then
    index = tostring(redis.call('HINCRBY', key, '@', 1))
    redis.call('HSET', key, '@' .. model, index)
  end
  model_index[key .. '\n' .. model] = index
  return index
end

-- The plans' sums, into the batch's sums per key and field.
for _, plan in ipairs(plans) do
  local values = plan.values
  local by_model, by_agent = {}, {}
  for j, i in ipairs(picked) do
    by_model[j] = 'm|' .. plan.model .. '|' .. names[i]
    by_agent[j] = 'a|' .. plan.agent .. '|' .. names[i]
  end
  for s = 0, plan.S - 1 do
    local level = plan.levels[s + 1]
    local session = plan.T > 0 and s == 2
    -- (only for a plan that recorded something: its hash must not be created without a TTL)
    local index = session and values[1] > 0 and index_of(KEYS[plan.usage + 5 * s], plan.model)
    for p = 1, 5 do
      local key, prefix = KEYS[plan.usage + 5 * s + p - 1], plan.prefixes[s + 1][p]
      local ttl = session and session_hash_ttl or ttls[p]
      if plan.renews then renew[key] = true end
      for i = 1, 8 do
        if values[i] ~= 0 then add(key, ttl, total_field(prefix, i), values[i]) end
      end
      if session then
        if index and index ~= '1' then  -- the first model's breakdown: the totals less the others'
          for _, i in ipairs(picked) do
            if values[i] ~= 0 then add(key, ttl, prefix .. index .. codes[i], values[i]) end
          end
        end
      elseif level >= 1 then
        for j, i in ipairs(picked) do
          if values[i] ~= 0 then add(key, ttl, by_model[j], values[i]) end
        end
      end
      if level >= 2 then
        for j, i in ipairs(picked) do
          if values[i] ~= 0 then add(key, ttl, by_agent[j], values[i]) end
        end
      end
    end
  end
end

-- The batch's usage, one HINCRBY per key and field (Redis adds in 64-bit integers: exact
-- whatever is stored); the TTL of a key set when this batch created it ('requests' became
-- what the batch added) or when it is to be renewed. The cost each key holds afterwards is
-- kept for the rankings.
local cost_now = {}
for _, key in ipairs(order) do
  local values = sums[key]
  local created = false
  for n, field in ipairs(fields_of[key]) do
    local now = redis.call('HINCRBY', key, field, string.format('%.0f', values[field]))
    if n == 1 then created = now == values[field] end
    if string.byte(field, -1) == 36 then cost_now[key .. '\n' .. field] = now end  -- 36: '$', a session's cost
  end
  if key_ttl[key] ~= '0' and (created or renew[key]) then redis.call('EXPIRE', key, key_ttl[key]) end
end

-- A session's hash keeps the buckets the separate aggregates of each period would still hold:
-- when its TTL is renewed (about once an hour), the fields of older buckets go.
for _, plan in ipairs(plans) do
  if plan.T > 0 and plan.renews and next(plan.kept) then
    local key, kept, old = KEYS[plan.usage + 10], plan.kept, {}
    for _, field in ipairs(redis.call('HKEYS', key)) do
      local oldest = kept[string.sub(field, 1, 1)]
      if oldest and string.sub(field, 1, #oldest) < oldest then old[#old + 1] = field end
    end
    if #old > 0 then redis.call('HDEL', key, unpack(old)) end
  end
end

-- Sessions ranked by cost, one zset per project and bucket: a session's score is its
-- aggregate's cost (ZADD, not an increment), and only the rank_size costliest stay. A session
-- that falls out and spends again comes back with its whole cost, so each zset holds exactly
-- the costliest sessions of its bucket. Once per project and hour (its prune claim) a plan's
-- rankings also lose the sessions whose hash no longer holds that bucket (the session expired,
-- or its hash dropped the bucket). (Those hashes' names are built here from the plan's own
-- session key: the same hash tag, so the same Cluster slot as every declared key.)
for _, plan in ipairs(plans) do
  if plan.ranked then
    local session = plan.session
    local prune = plan.renews and rank_size > 0
        and redis.call('SET', KEYS[plan.ranking + 5], '1', 'NX', 'EX', '7200') ~= false
    local aggregate = KEYS[plan.usage + 10]
    local base = string.sub(aggregate, 1, #aggregate - #session)
    for p = 1, 5 do
      local key, prefix = KEYS[plan.ranking + p - 1], plan.prefixes[3][p]
      local cost = cost_now[aggregate .. '\n' .. prefix .. '$'] or
          tonumber(redis.call('HGET', aggregate, prefix .. '$') or '0')
      redis.call('ZADD', key, string.format('%.0f', cost), session)
      if prune then
        for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
          if redis.call('HEXISTS', base .. member, prefix .. 'r') == 0 then redis.call('ZREM', key, member) end
        end
      end
      if rank_size > 0 then
        local extra = redis.call('ZCARD', key) - rank_size
        if extra > 0 then redis.call('ZREMRANGEBYRANK', key, 0, extra - 1) end
      end
      if session_ttls[p] ~= '0' then redis.call('EXPIRE', key, session_ttls[p]) end
    end
  end
end

-- Each done-set lives the idempotency window after its last write.
for _, key in ipairs(done_order) do redis.call('EXPIRE', key, done_ttl) end

return reply
