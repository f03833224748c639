-- Move up to ARGV[1] requests (at most ARGV[2] bytes, at least one) from a model's gathering set into a
-- new submission record with status "intent": each request is then in exactly one of the two places.
-- With a queue cap (ARGV[6] > 0) it takes no more than the room left under it, across all models.
-- KEYS: 1 gathering zset, 2 items hash, 3 gathering bytes hash, 4 submission hash, 5 open zset, 6 all zset,
--       7 in-API request count.
-- ARGV: 1 max requests, 2 max bytes, 3 submission id, 4 model, 5 owner, 6 queue cap (0: none).
-- Returns {created_ms, custom_id...}, or {} when nothing is gathered or there is no room.
local max_n = tonumber(ARGV[1])
local cap = tonumber(ARGV[6])
if cap > 0 then
  local room = cap - tonumber(redis.call('GET', KEYS[7]) or '0')
  if room <= 0 then return {} end
  if room < max_n then max_n = room end
end
local ids = redis.call('ZRANGE', KEYS[1], 0, max_n - 1)
if #ids == 0 then return {} end
local taken, bytes, limit = {}, 0, tonumber(ARGV[2])
for _, id in ipairs(ids) do
  local n = redis.call('HSTRLEN', KEYS[2], id)
  if #taken > 0 and bytes + n > limit then break end
  bytes = bytes + n
  taken[#taken + 1] = id
end
-- In slices: unpack of more than ~8000 values fails ("too many results to unpack"), and a take may hold
-- up to 100,000.
for i = 1, #taken, 1000 do
  redis.call('ZREM', KEYS[1], unpack(taken, i, math.min(i + 999, #taken)))
end
redis.call('HINCRBY', KEYS[3], ARGV[4], -bytes)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[4], 'model', ARGV[4], 'created_ms', now, 'owner', ARGV[5], 'status', 'intent',
  'custom_ids', cjson.encode(taken))
redis.call('ZADD', KEYS[5], now, ARGV[3])
redis.call('ZADD', KEYS[6], now, ARGV[3])
redis.call('INCRBY', KEYS[7], #taken)
local out = {tostring(now)}
for _, id in ipairs(taken) do out[#out + 1] = id end
return out
