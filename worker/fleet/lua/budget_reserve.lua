-- Reserve up to ARGV[1] pico-USD against the tenant and the batch budget, atomically.
-- KEYS[1] tenant budget hash, KEYS[2] batch budget hash, KEYS[3] batch token hash (token -> state)
-- ARGV[1] amount (pico-USD, integer >= 0), ARGV[2] token, ARGV[3] TTL (ms) of the batch hash and tokens
-- A scope refuses only if it has a cap and spent + reserved + amount > cap. Both scopes record the
-- reservation even without a cap, so spend is visible and a cap set later counts it.
-- Token states: "R:<amount>" reserved, "S" settled, "X" released.
-- Returns {"ok", amount} | {"dup", state} | {"refused", scope index (1 tenant, 2 batch), cap, spent, reserved}
-- Comparisons run on Lua doubles: exact up to 2^53 pico-USD (~9007 USD), within a few pico-USD above.
local prev = redis.call('HGET', KEYS[3], ARGV[2])
if prev then
  return {'dup', prev}
end
local amount = tonumber(ARGV[1])
for i = 1, 2 do
  local h = redis.call('HMGET', KEYS[i], 'cap', 'spent', 'reserved')
  if h[1] then
    local spent = h[2] or '0'
    local reserved = h[3] or '0'
    if tonumber(spent) + tonumber(reserved) + amount > tonumber(h[1]) then
      return {'refused', i, h[1], spent, reserved}
    end
  end
end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'reserved', ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], 'R:' .. ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return {'ok', ARGV[1]}
