-- Add one request to its model's gathering set, once per custom_id.
-- Requests sharing a cached prefix get the score of the first of them (KEYS[5], when given), so a
-- take of the oldest N keeps them together in one Message Batch, where they can read each other's cache.
-- KEYS: 1 items hash, 2 gathering zset, 3 gathering bytes hash, 4 the routeq batch's in-api set,
--       5 (optional) the prefix's first-seen key.
-- ARGV: 1 custom_id, 2 item JSON, 3 model, 4 job id.
-- Returns 1 if gathered now, 0 if that request was gathered before (a re-delivered job).
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local t = redis.call('TIME')
local score = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if KEYS[5] then
  redis.call('SET', KEYS[5], score, 'NX', 'PX', 3600000)
  score = tonumber(redis.call('GET', KEYS[5]))
end
redis.call('ZADD', KEYS[2], 'NX', score, ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[3], string.len(ARGV[2]))
redis.call('SADD', KEYS[4], ARGV[4])
return 1
