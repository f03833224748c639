"""The web UI (`routeq ui`, `routeq worker --ui-port`): one static page, a JSON API and an SSE stream.

- ``snapshot``: pure shaping of what Redis holds into the page's JSON (no I/O).
- ``reads``: the Redis reads behind it, all aggregates routeq already keeps (never a scan of job keys
  per refresh); ``hub``: one shared snapshot, rebuilt at most once per tick for every client.
- ``auth``: the token (Bearer, ``?token=`` once then a cookie) and CSRF for POSTs.
- ``app``: the aiohttp application, its routes and the `routeq ui` command.

May import ``jobs`` and the worker's fleet-state modules (limits, quality, requeue); nothing in
``jobs`` or the pipeline imports this package.
"""
