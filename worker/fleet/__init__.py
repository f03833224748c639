"""State the whole fleet shares in Redis, each module beside the Lua it runs (``lua/``): fleet-wide
limits, budgets, results and attempts, recovery of dead workers, one-script claims (the arq
coupling), cache warming, quality counters, requeue. May import policy and jobs; never pipeline."""
