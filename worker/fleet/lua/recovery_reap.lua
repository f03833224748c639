-- Hand back a dead worker's claimed jobs, free its tier leases and take its waiters out of the tiers'
-- lines (a dead waiter at the head would otherwise be handed slots nobody takes), atomically.
-- It also applies the aggregate entries of the jobs the owner recorded but had not flushed (agg_lib.lua).
-- KEYS: 1 owners set, 2 heartbeat, 3 running set, then per tier: lease zset, line zset,
--       last: the owner's pending aggregates hash.
-- ARGV: 1 owner token, 2 arq in-progress prefix, 3 lease-id prefix of the owner ("" = none),
--       4 limits channel, 5.. tier names (in the order of the per-tier keys).
-- Returns {-1} if the owner is alive after all or already reaped (by another reaper, or this one's other
-- task), else {jobs freed, leases freed, aggregate entries applied}.
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1, 0} end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return {-1, 0} end
local freed = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local k = ARGV[2] .. id
  if redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    freed = freed + 1
  end
end
local leases = 0
if ARGV[3] ~= '' then
  local n = string.len(ARGV[3])
  for t = 5, #ARGV do
    local base = 3 + (t - 5) * 2
    local dropped = 0
    for _, lid in ipairs(redis.call('ZRANGE', KEYS[base + 1], 0, -1)) do
      if string.sub(lid, 1, n) == ARGV[3] then
        redis.call('ZREM', KEYS[base + 1], lid)
        dropped = dropped + 1
      end
    end
    for _, wid in ipairs(redis.call('ZRANGE', KEYS[base + 2], 0, -1)) do
      if string.sub(wid, 1, n) == ARGV[3] then
        redis.call('ZREM', KEYS[base + 2], wid)
      end
    end
    if dropped > 0 then
      redis.call('PUBLISH', ARGV[4], 'release:' .. ARGV[t])
      leases = leases + dropped
    end
  end
end
local folded = agg_fold(KEYS[#KEYS])
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[1], ARGV[1])
return {freed, leases, folded}
