"""Provisioning for the demo, the benchmarks, the load test and the tests: a catalog made the
active version and synthetic accounts loaded, in one place.

``provision(client, prefix, accounts)`` loads the catalog (the sample one unless text is
given) and the accounts through the same scripts as ``chargeflow catalog load`` and
``chargeflow accounts load``; ``synthetic_accounts`` names ``n`` accounts, a share of them
with little credit, so that some subscribers run dry as a real base's do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import redis
from redis.cluster import RedisCluster

from balances.accounts import AccountSpec
from balances.store import BalanceStore
from catalog_cache.store import load_catalog_text
from charging.catalog import Catalog
from flows.cli_common import sample_catalog_path


def synthetic_accounts(n: int, name: str, balance_micros: int, *, plan: str = "PREPAID_S",
                       dry_share: float = 0.0, dry_micros: int = 0) -> list[AccountSpec]:
    """``n`` accounts ``name % i`` (e.g. ``"demo-%05d"``): every ``1 / dry_share``-th of them
    (the first included) opens with ``dry_micros``, the rest with ``balance_micros``."""
    every = int(1 / dry_share) if dry_share else 0
    return [AccountSpec(name % i, plan, dry_micros if every and i % every == 0 else balance_micros)
            for i in range(n)]


def with_rating_groups(catalog_text: str, groups: dict[str, Sequence[int]]) -> str:
    """``catalog_text`` with ``rating_groups`` given to services written on one line as
    ``<service>: {unit: <unit>}`` (the sample catalog's form), e.g. ``{"sms": [300]}``."""
    for service, rgs in groups.items():
        pattern = re.compile(rf"^(\s*{re.escape(service)}:\s*\{{unit: \w+)\}}", re.MULTILINE)
        catalog_text, found = pattern.subn(
            lambda m, rgs=rgs: f"{m.group(1)}, rating_groups: [{', '.join(map(str, rgs))}]}}",
            catalog_text, count=1)
        if not found:
            raise ValueError(f"no one-line service {service!r} in the catalog to give "
                             "rating groups")
    return catalog_text


def provision(client: redis.Redis | RedisCluster, prefix: str,
              accounts: Sequence[AccountSpec] | Callable[[Catalog], Sequence[AccountSpec]], *,
              catalog_text: str | None = None, source: str = "sample catalog") -> Catalog:
    """The catalog (the sample catalog unless ``catalog_text``) as the active version, then
    the accounts (created, or updated where they exist; a function of the catalog where they
    depend on it, e.g. on its plans); returns the catalog."""
    text = sample_catalog_path().read_text() if catalog_text is None else catalog_text
    catalog = load_catalog_text(client, text, prefix=prefix, source=source)
    if callable(accounts):
        accounts = accounts(catalog)
    if accounts:
        BalanceStore(client, prefix=prefix).upsert_accounts(list(accounts))
    return catalog
