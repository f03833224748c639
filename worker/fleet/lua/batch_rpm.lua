-- Take calls from the fleet-wide bucket of the Message Batches endpoints (one RPM for create, retrieve,
-- results, list and cancel, shared across models, as the API counts them). limits_lib is prepended.
-- KEYS: 1 bucket hash.  ARGV: 1 requests per minute, 2 calls wanted.
-- Returns 0 when taken, else the ms until that many calls fit (nothing is taken then).
local cap, want = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local wait_ms = buckets_take({KEYS[1]}, {'rpm'}, {cap}, {want}, now)
return wait_ms
