"""A realistic operator catalog for benchmarks: many prefixes, bands and stepped tariffs.

50 destination groups of 20+ prefixes each (1,000+ prefixes, nested across groups the way
country and mobile-network prefixes are), three bands covering the week (peak, night,
weekend), and a voice tariff with a three-step rate per group and band, plus data and SMS.
"""

from __future__ import annotations

import random

import yaml

GROUPS = 50
PREFIXES_PER_GROUP = 21


def realistic_catalog(seed: int = 1) -> str:
    """The catalog YAML text (deterministic for a seed)."""
    rnd = random.Random(seed)
    used: set[str] = set()
    destinations: dict[str, list[str]] = {}
    for g in range(GROUPS):
        country = str(rnd.randint(20, 99)) if g % 2 == 0 else str(rnd.randint(200, 999))
        prefixes = []
        while len(prefixes) < PREFIXES_PER_GROUP:
            p = country + str(rnd.randint(1, 99999)).zfill(rnd.randint(1, 4))[:4]
            if p not in used:
                used.add(p)
                prefixes.append(p)
        destinations[f"G{g:02d}"] = prefixes
    bands = {
        "peak": {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "20:00"},
        "weekend": {"days": ["sat", "sun"], "from": "08:00", "to": "20:00"},
        "night": {"from": "20:00", "to": "08:00"},
    }
    rates = []
    for g, group in enumerate(destinations):
        base = 5 + g % 17
        for band, factor in (("peak", 3), ("night", 1), ("weekend", 2)):
            price = base * factor
            rates.append({
                "id": f"{group}_{band}", "destination": group, "band": band,
                "connect_fee": f"0.0{g % 10}",
                "steps": [
                    {"from": 0, "price": f"0.{price:02d}", "per": 60, "increment": 60},
                    {"from": 60, "price": f"0.{price - 1:02d}", "per": 60, "increment": 1},
                    {"from": 600, "price": f"0.{max(price - 4, 1):02d}", "per": 60,
                     "increment": 1},
                ],
            })
    rates.append({"id": "other", "steps": [
        {"from": 0, "price": "0.50", "per": 60, "increment": 60},
        {"from": 60, "price": "0.45", "per": 60, "increment": 30},
        {"from": 1800, "price": "0.40", "per": 60, "increment": 1},
    ]})
    doc = {
        "version": f"bench-{seed}",
        "currency": "EUR",
        "timezone": "Europe/Berlin",
        "services": {"voice": {"unit": "second"}, "data": {"unit": "byte"},
                     "sms": {"unit": "event"}},
        "destinations": destinations,
        "bands": bands,
        "tariffs": {
            "VOICE": {"service": "voice", "quota": 300, "max_cost": "25.00",
                      "rounding": {"decimals": 4, "mode": "half_even"}, "rates": rates},
            "DATA": {"service": "data", "quota": 10485760, "rates": [{"id": "data", "steps": [
                {"from": 0, "price": "0.01", "per": 1048576, "increment": 1024},
                {"from": 1073741824, "price": "0.005", "per": 1048576, "increment": 1024},
                {"from": 10737418240, "price": "0.001", "per": 1048576, "increment": 1024},
            ]}]},
            "SMS": {"service": "sms", "quota": 1, "rates": [
                {"id": "sms_home", "destination": "G00", "steps": [
                    {"from": 0, "price": "0.09", "per": 1, "increment": 1}]},
                {"id": "sms", "steps": [{"from": 0, "price": "0.19", "per": 1,
                                         "increment": 1}]}]},
        },
        "plans": {"BENCH": {"tariffs": {"voice": "VOICE", "data": "DATA", "sms": "SMS"}}},
    }
    return yaml.safe_dump(doc, sort_keys=False)
