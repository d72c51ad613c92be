"""The engine on a Redis Cluster (``--redis redis+cluster://HOST:PORT``): wired by
``make_engine`` from the URL, it decides and charges a mixed batch exactly as it does on a
single Redis, writing node by node, and a replay of the batch is answered from the
cluster's idempotency records."""

from __future__ import annotations

import orjson

from tests.conftest import REDIS_URL
from tests.flows.oracle import strip_latency
from tests.flows.test_engine import ACCOUNTS, mixed_batch, new_engine, prepare


def _view(outputs) -> list[tuple[str, bytes | None, dict]]:
    return [(o.kind, o.key, strip_latency(orjson.loads(o.value))) for o in outputs]


def test_engine_on_a_cluster_decides_as_on_a_single_redis(redis_cluster, redis_client, prefix):
    node = redis_cluster.get_default_node()
    url = f"redis+cluster://{node.host}:{node.port}"
    prepare(redis_cluster, prefix, ACCOUNTS)
    prepare(redis_client, prefix, ACCOUNTS)
    payloads = [orjson.dumps(r) for r in mixed_batch()]
    on_cluster, single = new_engine(prefix, url), new_engine(prefix, REDIS_URL)
    again = new_engine(prefix, url)  # a restarted engine: nothing cached
    try:
        assert on_cluster.charger.store.cluster and not single.charger.store.cluster
        got = _view(on_cluster.process(payloads))
        assert got == _view(single.process(payloads))
        assert sum(k == "charge" for k, _, _ in got) >= 5  # money and allowances were taken
        # the same ids again: the first decisions and charges, from the cluster's records
        assert _view(again.process(payloads)) == got
        for a in ACCOUNTS:
            assert on_cluster.charger.store.view(a["id"]).balance == \
                single.charger.store.view(a["id"]).balance
    finally:
        for e in (on_cluster, single, again):
            e.charger.store.r.close()
