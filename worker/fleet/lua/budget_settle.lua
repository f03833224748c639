-- Turn a reservation into spend, once per token: reserved -= reserved amount, spent += actual.
-- KEYS[1] tenant budget hash, KEYS[2] batch budget hash, KEYS[3] batch token hash
-- ARGV[1] actual cost (pico-USD, integer >= 0), ARGV[2] token, ARGV[3] TTL (ms)
-- A token that was never reserved is still charged (the call was paid for); a token already settled or
-- released is left alone, so a re-run after a crash never double-counts.
-- Returns {"ok", amount that was reserved} | {"dup", state}
local state = redis.call('HGET', KEYS[3], ARGV[2])
if state == 'S' or state == 'X' then
  return {'dup', state}
end
local held = '0'
if state and string.sub(state, 1, 2) == 'R:' then
  held = string.sub(state, 3)
end
for i = 1, 2 do
  if held ~= '0' then
    redis.call('HINCRBY', KEYS[i], 'reserved', '-' .. held)
  end
  redis.call('HINCRBY', KEYS[i], 'spent', ARGV[1])
end
redis.call('HSET', KEYS[3], ARGV[2], 'S')
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return {'ok', held}
