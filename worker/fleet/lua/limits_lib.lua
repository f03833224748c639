-- Shared helpers of routeq's limit scripts. worker/fleet/tier_gate.py prepends this file to each limits
-- script before registering it (Redis scripts cannot include one another).
--
-- Time is always the Redis server's (TIME), so worker clock skew cannot break fleet-wide limits.
-- Redis >= 5 replicates script effects by default; the call makes TIME-then-write safe on older ones.
if redis.replicate_commands then redis.replicate_commands() end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A limit from the runtime config hash (field "<tier>:<kind>") else the settings default given in
-- ARGV. "none" (or a non-positive number) means unlimited: returns nil.
local function limit_value(v, default)
  if not v then v = default end
  if v == nil or v == '' or v == 'none' then return nil end
  local n = tonumber(v)
  if n == nil or n <= 0 then return nil end
  return n
end

local function limit_of(config_key, tier, kind, default)
  return limit_value(redis.call('HGET', config_key, tier .. ':' .. kind), default)
end

-- The tier's four limits in one read: {concurrency, rpm, itpm, otpm} (nil = unlimited), from the config
-- hash over the settings defaults d1..d4; and, fifth, when its cooldown ends (ms, nil = never set).
local function limits_of(config_key, tier, d1, d2, d3, d4)
  local v = redis.call('HMGET', config_key, tier .. ':concurrency', tier .. ':rpm', tier .. ':itpm',
    tier .. ':otpm', tier .. ':cooldown_until')
  return {limit_value(v[1], d1), limit_value(v[2], d2), limit_value(v[3], d3), limit_value(v[4], d4),
    tonumber(v[5])}
end

-- Start (or lengthen) a tier's cooldown: its key (a TTL, what readers show) and, in the config hash
-- beside the limits, when it ends, so an admission learns it from the read of the limits it makes anyway.
-- "cooldown:<tier>" on the limits channel stops every process's local handovers (tier_gate.py) at once.
local function cooldown_set(cooldown_key, config_key, tier, reason, ms, channel)
  redis.call('SET', cooldown_key, reason, 'PX', ms)
  redis.call('HSET', config_key, tier .. ':cooldown_until', now_ms() + ms)
  redis.call('PUBLISH', channel, 'cooldown:' .. tier)
end

-- Continuous-refill bucket: capacity = per-minute limit, refill limit/60000 per ms. A missing bucket is
-- full. The level may be negative (debt after settling a call that used more than it reserved).
local function bucket_level(key, cap, now)
  local s = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(s[1]), tonumber(s[2])
  if tokens == nil or ts == nil then return cap end
  local level = tokens + math.max(0, now - ts) * cap / 60000
  if level > cap then level = cap end
  return level
end

local function bucket_write(key, cap, level, now)
  redis.call('HSET', key, 'tokens', string.format('%.6f', level), 'ts', now)
  -- A missing bucket reads as full, so the key may go once refill would have filled it (debt included).
  redis.call('PEXPIRE', key, math.ceil((cap - level) * 60000 / cap) + 1000)
end

-- How long (ms) until `amount` fits. An amount above capacity is admitted once the bucket is full
-- (it then goes into debt) so oversized requests are slowed, not starved forever.
local function bucket_wait_ms(level, cap, amount)
  local need = math.min(amount, cap)
  if level >= need then return 0 end
  return math.ceil((need - level) * 60000 / cap)
end

-- All-or-nothing take from several buckets. kinds/keys/caps/amounts are parallel lists (cap nil =
-- unlimited, skipped). Returns 0, nil on success, else the longest wait (ms) and the kind causing it.
local function buckets_take(keys, kinds, caps, amounts, now)
  local levels = {}
  local worst_ms, worst_kind = 0, nil
  for i = 1, #keys do
    if caps[i] ~= nil and amounts[i] > 0 then
      levels[i] = bucket_level(keys[i], caps[i], now)
      local w = bucket_wait_ms(levels[i], caps[i], amounts[i])
      if w > worst_ms then worst_ms, worst_kind = w, kinds[i] end
    end
  end
  if worst_kind ~= nil then return worst_ms, worst_kind end
  for i = 1, #keys do
    if levels[i] ~= nil then bucket_write(keys[i], caps[i], levels[i] - amounts[i], now) end
  end
  return 0, nil
end

-- Apply signed deltas unconditionally (settling: + charges more, - refunds), capped at capacity.
local function buckets_settle(keys, caps, deltas, now)
  for i = 1, #keys do
    if caps[i] ~= nil and deltas[i] ~= 0 then
      local level = bucket_level(keys[i], caps[i], now) - deltas[i]
      if level > caps[i] then level = caps[i] end
      bucket_write(keys[i], caps[i], level, now)
    end
  end
end

-- The fleet-wide line of waiters of a tier, first come first served: a zset of members
-- "<lease id>|<itpm>|<otpm>" (who waits and what it asks for, so a grant needs no other read) scored by
-- when each joined. A place is like a lease: it leaves on its grant or its waiter's withdrawal, a dead
-- process's places go with its leases when the reaper takes it out, and a grant to a waiter its process
-- no longer has is handed back by that process at once (tier_gate.py).
local function line_member(id, itpm, otpm)
  return id .. '|' .. itpm .. '|' .. otpm
end

-- The first waiter: its member, lease id and {itpm, otpm}; nil if nobody waits. A member not of this
-- form (left by an older version) is dropped on the way.
local function line_head(line_key)
  while true do
    local first = redis.call('ZRANGE', line_key, 0, 0)
    if #first == 0 then return nil end
    local id, i, o = string.match(first[1], '^(.+)|(%d+)|(%d+)$')
    if id ~= nil then return first[1], id, {tonumber(i), tonumber(o)} end
    redis.call('ZREM', line_key, first[1])
  end
end

-- What a process needs to hand a freed slot to a waiter of its own without asking first (local
-- handover, worker/fleet/handover.py): when the line's first waiter joined, and 1 if a handover may skip
-- the line now: no rpm/itpm/otpm limit (a bucket must be asked), no cooldown, and no more holders than
-- the limit (a lowered limit shrinks the count only through releases), else 0. An empty line says 0, -1:
-- no news (nobody waits to be handed a slot). lims: as limits_of returns them; clock: returns now (ms),
-- asked only after a cooldown; holders: leases held now.
local function line_view(line_key, lims, clock, holders)
  local first = redis.call('ZRANGE', line_key, 0, 0, 'WITHSCORES')
  if not first[2] then return 0, -1 end
  local open = 1
  if lims[2] or lims[3] or lims[4] or (lims[5] ~= nil and lims[5] > clock())
      or (lims[1] ~= nil and holders > lims[1]) then
    open = 0
  end
  return tonumber(first[2]), open
end

-- Admission to a tier, atomically: cooldown (its end, read with the limits) -> concurrency lease ->
-- rpm/itpm/otpm buckets. Nothing changes unless everything passes, so a refusal never needs undoing.
-- K: {leases, cooldown (unread: its end is in config), config, rpm bucket, itpm bucket, otpm bucket, line}
-- A: {tier, lease id, ttl ms, defaults for concurrency, rpm, itpm, otpm, amounts rpm, itpm, otpm}
-- waiting: the caller's line member when it is in the line (it may go ahead of it, and leaves the line
-- on a grant); nil for a newcomer, refused while anyone waits.
-- lims: the tier's limits as limits_of returns them, when the caller has read them already.
-- Returns {granted 0|1, reason, retry ms, holders (after a grant), concurrency limit (-1 = none)}.
local function acquire(K, A, waiting, now, lims)
  local tier = A[1]
  lims = lims or limits_of(K[3], tier, A[4], A[5], A[6], A[7])
  if lims[5] ~= nil and lims[5] > now then
    return {0, 'cooldown', lims[5] - now, 0, -1}
  end
  local limit = lims[1]
  local holders = redis.call('ZCARD', K[1])
  if limit ~= nil and holders >= limit then
    -- Full. The earliest deadline says whether a holder stopped renewing (crashed, SIGKILLed,
    -- partitioned): only then are expired leases reaped. Below the limit they need no reaping (an
    -- expired lease only ever makes the count larger).
    local first = redis.call('ZRANGE', K[1], 0, 0, 'WITHSCORES')
    if first[2] and tonumber(first[2]) <= now then
      redis.call('ZREMRANGEBYSCORE', K[1], '-inf', now)
      holders = redis.call('ZCARD', K[1])
      first = redis.call('ZRANGE', K[1], 0, 0, 'WITHSCORES')
    end
    if holders >= limit then
      -- Without a release, the earliest deadline is when a slot frees at the latest.
      local retry = 1000
      if first[2] then retry = math.max(1, tonumber(first[2]) - now) end
      return {0, 'concurrency', retry, holders, limit}
    end
  end
  -- Anyone waiting goes first.
  if not waiting and redis.call('ZCARD', K[7]) > 0 then
    return {0, 'queued', 100, holders, limit or -1}
  end
  local caps = {lims[2], lims[3], lims[4]}
  local amounts = {tonumber(A[8]), tonumber(A[9]), tonumber(A[10])}
  local wait, kind = buckets_take({K[4], K[5], K[6]}, {'rpm', 'itpm', 'otpm'}, caps, amounts, now)
  if kind ~= nil then
    return {0, kind, wait, holders, limit or -1}
  end
  redis.call('ZADD', K[1], now + tonumber(A[3]), A[2])
  if waiting then redis.call('ZREM', K[7], waiting) end
  return {1, '', 0, holders + 1, limit or -1}
end
