"""routeq's worker side: routing, limits, caching, the model call and recording. Builds on ``jobs``."""
