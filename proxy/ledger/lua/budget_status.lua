-- budget_status.lua: one budget's config with its current spend and live holds (read only).
-- KEYS[1] config hash (limit nano-USD, period, mode, thresholds JSON, created_at epoch s)
-- KEYS[2] reservation zset (request id -> deadline, epoch ms)
-- KEYS[3] amount hash (request id -> nano-USD, "" -> running total)
-- KEYS[4..8] the budget's usage hashes for the current hour, day, week, month, total buckets (a
--            session's: its one hash, 5 times)
-- ARGV[1] now, epoch ms
-- ARGV[2..6] the field of each usage hash that holds the spend: "cost", or in a session's hash
--            the bucket's ("<bucket tag>$", session_fields.py)
-- Returns nil when the budget does not exist, else
--   {limit, period, mode, thresholds, created_at, spent nano, held nano (holds past their deadline excluded)}
-- Amounts are nano-USD below 2^53, so the subtraction here is exact.

local config = redis.call('HMGET', KEYS[1], 'limit', 'period', 'mode', 'thresholds', 'created_at')
if not config[1] then return nil end
local period_index = {hour = 1, day = 2, week = 3, month = 4, total = 5}
local p = period_index[config[2]] or 5
local spent = redis.call('HGET', KEYS[3 + p], ARGV[1 + p]) or '0'
local held = tonumber(redis.call('HGET', KEYS[3], '') or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, rid in ipairs(expired) do
  held = held - tonumber(redis.call('HGET', KEYS[3], rid) or '0')
end
return {config[1], config[2], config[3], config[4] or '', config[5] or '', spent, held}
