"""Where a failed call pauses the fleet: a 429/529 cools its tier down, an outage steps the tier's pause
up, a rejected key pauses every tier. What a fault means is decided in ``worker/faults.py`` (pure);
this applies it to the fleet-wide gate.
"""

from __future__ import annotations

import logging

from jobs.tiers import TIER_ORDER, Tier
from worker.policy import faults
from worker.runtime import Runtime

log = logging.getLogger("routeq.pipeline")

_AUTH_LOGGED: set[str] = set()  # worker processes that have said their API key was rejected


async def cool_down(rt: Runtime, tier: Tier, fault: faults.Fault) -> None:
    """Pause the tier fleet-wide after a 429/529 (as the server asked) or an outage (growing steps)."""
    s = rt.settings
    if fault.kind == faults.AUTH_KIND:
        if rt.owner not in _AUTH_LOGGED:  # once per worker process, not once per job
            _AUTH_LOGGED.add(rt.owner)
            log.error(
                "the API rejected the key (%s); pausing every tier %.0fs at a time until it is fixed",
                fault.describe(),
                s.auth_pause_s,
            )
        for t in TIER_ORDER:
            await rt.gate.cooldown(t, s.auth_pause_s, fault.kind)
    elif fault.outage:
        left, streak = await rt.gate.outage(
            tier, fault.kind, faults.OUTAGE_COOLDOWNS_S, faults.OUTAGE_STREAK_RESET_S
        )
        if streak == 1 or left >= faults.OUTAGE_COOLDOWNS_S[-1]:
            log.warning("tier %s: API unreachable (%s); pausing %.0fs", tier, fault.describe(), left)
    elif fault.cooldown_tier:
        await rt.gate.cooldown(tier, faults.cooldown_s(fault), fault.kind)
    else:
        return
    rt.metrics.observe_cooldown(tier, fault.kind)
