-- A call to the tier was answered: the API is back, so the next outage starts again at its first step.
-- KEYS: 1 outage streak counter.
return redis.call('DEL', KEYS[1])
