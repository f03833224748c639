-- Undo an intent no batch was created for (create refused, or recovery found no orphan): its requests go
-- back to the gathering set. Only an intent without a batch id is undone, so a re-sent call is harmless.
-- KEYS: 1 submission hash, 2 gathering zset, 3 items hash, 4 gathering bytes hash, 5 open zset, 6 all zset,
--       7 in-API request count.
-- ARGV: 1 submission id.  Returns the number of requests put back (0 if nothing was undone).
if redis.call('HGET', KEYS[1], 'status') ~= 'intent' or redis.call('HEXISTS', KEYS[1], 'batch_id') == 1 then
  return 0
end
local model = redis.call('HGET', KEYS[1], 'model')
local ids = cjson.decode(redis.call('HGET', KEYS[1], 'custom_ids'))
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local back, bytes = 0, 0
for _, id in ipairs(ids) do
  local n = redis.call('HSTRLEN', KEYS[3], id)
  if n > 0 then
    redis.call('ZADD', KEYS[2], 'NX', now, id)
    bytes = bytes + n
    back = back + 1
  end
end
redis.call('HINCRBY', KEYS[4], model, bytes)
redis.call('DECRBY', KEYS[7], #ids)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
return back
