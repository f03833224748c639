"""Scrape-time gauges of Message Batches mode, read from Redis like the queue depths.

``routeq_batch_gathered{model}``: requests waiting to be submitted; ``routeq_batch_gather_age_seconds
{model}``: how long the oldest of them has waited; ``routeq_batch_requests_in_api``: requests in
submissions whose results are not all ingested (the batch queue depth); ``routeq_batch_open_age_seconds``:
age of the oldest such submission. Left out when Redis cannot be read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import orjson
import redis
from prometheus_client.core import GaugeMetricFamily, Metric

from jobs.keys import Keys


class BatchQueueCollector:
    def __init__(self, client: redis.Redis, keys: Keys, models: Iterable[str]) -> None:
        self._client, self._keys, self._models = client, keys, sorted(set(models))

    @classmethod
    def from_url(
        cls, redis_url: str, keys: Keys, models: Iterable[str], timeout_s: float = 1.0
    ) -> BatchQueueCollector:
        client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client, keys, models)

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "routeq_batch_gathered", "Requests gathered for a Message Batch", labels=["model"]
            ),
            GaugeMetricFamily(
                "routeq_batch_gather_age_seconds", "Wait of the oldest gathered request", labels=["model"]
            ),
            GaugeMetricFamily("routeq_batch_requests_in_api", "Requests in Message Batches not yet ingested"),
            GaugeMetricFamily(
                "routeq_batch_open_age_seconds", "Age of the oldest open Message Batch submission"
            ),
        ]

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        gathered, age, in_api, open_age = self._families()
        k = self._keys
        try:
            pipe = self._client.pipeline(transaction=False)
            for m in self._models:
                pipe.zcard(k.batch_gather(m))
                pipe.zrange(k.batch_gather(m), 0, 0, withscores=True)
            pipe.zrange(k.api_batches_open, 0, -1, withscores=True)
            got = pipe.execute()
            subs = got[-1]
            sizes = self._client.pipeline(transaction=False)
            for sub, _ in subs:
                sizes.hget(k.api_batch(sub.decode()), "custom_ids")
            id_lists = sizes.execute()
        except redis.RedisError:
            return
        now_ms = time.time() * 1000
        for i, m in enumerate(self._models):
            gathered.add_metric([m], float(got[2 * i]))
            oldest = got[2 * i + 1]
            age.add_metric([m], max(0.0, (now_ms - oldest[0][1]) / 1000) if oldest else 0.0)
        in_api.add_metric([], float(sum(len(orjson.loads(x)) for x in id_lists if x)))
        open_age.add_metric([], max(0.0, (now_ms - subs[0][1]) / 1000) if subs else 0.0)
        yield from (gathered, age, in_api, open_age)

    def close(self) -> None:
        self._client.close()
