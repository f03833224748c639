-- Give a reservation back without cost (the call failed before anything was billed), once per token.
-- KEYS[1] tenant budget hash, KEYS[2] batch budget hash, KEYS[3] batch token hash
-- ARGV[1] token, ARGV[2] TTL (ms)
-- Returns {"ok", amount released} | {"dup", state} | {"unknown"} (never reserved: nothing to do)
local state = redis.call('HGET', KEYS[3], ARGV[1])
if not state then
  return {'unknown'}
end
if string.sub(state, 1, 2) ~= 'R:' then
  return {'dup', state}
end
local held = string.sub(state, 3)
if held ~= '0' then
  redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. held)
  redis.call('HINCRBY', KEYS[2], 'reserved', '-' .. held)
end
redis.call('HSET', KEYS[3], ARGV[1], 'X')
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {'ok', held}
