-- Close a submission whose results are all ingested, once: its requests leave the in-API count.
-- KEYS: 1 submission hash, 2 open zset, 3 in-API request count.  ARGV: 1 submission id.
if redis.call('HGET', KEYS[1], 'status') == 'ingested' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'ingested')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DECRBY', KEYS[3], #cjson.decode(redis.call('HGET', KEYS[1], 'custom_ids')))
return 1
