"""Everything that lets routeq run without outside services: the demo, its corpus, the embedded
redis-server and the stand-in Messages API (``mock_api``)."""
