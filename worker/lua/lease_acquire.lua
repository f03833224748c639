-- Admission to a tier, atomically: cooldown -> concurrency lease -> rpm/itpm/otpm buckets.
-- Nothing changes unless everything passes, so a refusal never needs undoing (and never wakes anyone).
--
-- KEYS: 1 leases zset (lease id -> deadline ms), 2 cooldown, 3 limits config hash,
--       4 rpm bucket, 5 itpm bucket, 6 otpm bucket
-- ARGV: 1 tier, 2 lease id, 3 lease ttl ms,
--       4..7 settings defaults for concurrency, rpm, itpm, otpm ("none" = unlimited),
--       8..10 amounts to reserve from rpm, itpm, otpm
-- Returns {granted 0|1, reason, retry ms, holders (after a grant), concurrency limit (-1 = none)}.
local tier = ARGV[1]
local now = now_ms()

local cool = redis.call('PTTL', KEYS[2])
if cool > 0 then
  return {0, 'cooldown', cool, 0, -1}
end

-- Reap leases of holders that stopped renewing (crashed, SIGKILLed, partitioned).
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local holders = redis.call('ZCARD', KEYS[1])
local limit = limit_of(KEYS[3], tier, 'concurrency', ARGV[4])
if limit ~= nil and holders >= limit then
  -- Without a release, the earliest deadline is when a slot frees at the latest.
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local retry = 1000
  if first[2] then retry = math.max(1, tonumber(first[2]) - now) end
  return {0, 'concurrency', retry, holders, limit}
end

local caps = {
  limit_of(KEYS[3], tier, 'rpm', ARGV[5]),
  limit_of(KEYS[3], tier, 'itpm', ARGV[6]),
  limit_of(KEYS[3], tier, 'otpm', ARGV[7]),
}
local amounts = {tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])}
local wait, kind = buckets_take({KEYS[4], KEYS[5], KEYS[6]}, {'rpm', 'itpm', 'otpm'}, caps, amounts, now)
if kind ~= nil then
  return {0, kind, wait, holders, limit or -1}
end

redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
return {1, '', 0, holders + 1, limit or -1}
