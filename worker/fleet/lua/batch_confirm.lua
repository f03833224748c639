-- Record the API batch id of an intent (after create, or when recovery adopts an orphan), once.
-- KEYS: 1 submission hash, 2 known batch ids set.
-- ARGV: 1 batch id, 2 status, 3 W3C context (JSON) of the create call's span, or '' (untraced, adopted).
-- Returns 1 if recorded, 0 if the submission is gone, has an id already, or the id is already known.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'batch_id') == 1 then return 0 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'batch_id', ARGV[1], 'status', ARGV[2])
if ARGV[3] and ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'trace', ARGV[3]) end
return 1
