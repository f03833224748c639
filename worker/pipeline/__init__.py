"""The sequence of one job: intake and parking, the route-plan-admit-call-check loop, the
SDK call, shadow runs. May import policy, fleet, observe and jobs; only app and batches import it."""
