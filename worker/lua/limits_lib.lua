-- Shared helpers of routeq's limit scripts. worker/limits.py prepends this file to each limits
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
local function limit_of(config_key, tier, kind, default)
  local v = redis.call('HGET', config_key, tier .. ':' .. kind)
  if not v then v = default end
  if v == nil or v == '' or v == 'none' then return nil end
  local n = tonumber(v)
  if n == nil or n <= 0 then return nil end
  return n
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
