-- Apply every aggregate entry left in a process's pending hash and delete it (agg_lib.lua): a clean exit
-- whose last flush failed, before the process deregisters. KEYS[1] the pending hash. Returns how many.
return agg_fold(KEYS[1])
