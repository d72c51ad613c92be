"""Compile a validated ``Catalog`` into flat, read-only numpy arrays for the kernels.

Layout (all int64 unless noted; "slot" = the rates of one tariff for one destination group):

    plan_tariff[plan, service]        tariff index, -1 when the plan does not price the service
    tariff_root[t], tariff_any[t]     trie root of tariff t; slot of its no-destination rates
    trie_child[node, digit] (int32)   digit trie of the prefixes the tariff's rates use
    trie_slot[node] (int32)           slot whose group holds the prefix ending here, or -1
    slot_start/slot_end → slot_rates  a slot's rates: banded first, the band-less one last
    rate_*                            per rate: band, step range, exact integers (charging.exact)
    step_*                            per step: from, increment, a, b, m, D/b
    band_start/band_end → iv_lo/iv_hi a band's intervals in seconds since Monday 00:00 local
    tz_start, tz_offset               UTC-offset transitions of the catalog time zone

Names map to indices through the ``CompiledCatalog`` dictionaries; the arrays travel to the
kernels as one ``Tables`` named tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from charging.catalog import MAX_PREFIX_DIGITS, Catalog, Rate, Tariff
from charging.exact import rate_ints
from charging.timezones import transitions

MODES = {"up": 0, "down": 1, "half_up": 2, "half_even": 3}
MAX_DIGITS = MAX_PREFIX_DIGITS


class Tables(NamedTuple):
    plan_tariff: np.ndarray
    tariff_root: np.ndarray
    tariff_any: np.ndarray
    trie_child: np.ndarray
    trie_slot: np.ndarray
    slot_start: np.ndarray
    slot_end: np.ndarray
    slot_rates: np.ndarray
    rate_band: np.ndarray
    rate_step0: np.ndarray
    rate_step1: np.ndarray
    rate_D: np.ndarray
    rate_unit: np.ndarray
    rate_mode: np.ndarray
    rate_cf_N: np.ndarray
    rate_cf_whole: np.ndarray
    rate_cf_frac: np.ndarray
    rate_has_cap: np.ndarray
    rate_cap_N: np.ndarray
    rate_cap_whole: np.ndarray
    rate_cap_frac: np.ndarray
    rate_fast_max_u: np.ndarray
    step_from: np.ndarray
    step_inc: np.ndarray
    step_a: np.ndarray
    step_b: np.ndarray
    step_m: np.ndarray
    step_d_over_b: np.ndarray
    band_start: np.ndarray
    band_end: np.ndarray
    iv_lo: np.ndarray
    iv_hi: np.ndarray
    tz_start: np.ndarray
    tz_offset: np.ndarray


@dataclass(frozen=True)
class CompiledCatalog:
    """A catalog ready for the kernels: the model, index maps, and the ``Tables``."""

    catalog: Catalog
    tables: Tables
    plan_index: dict[str, int]
    service_index: dict[str, int]
    tariff_names: tuple[str, ...]
    rate_ids: tuple[str, ...]  # global rate index -> the rate's id
    rate_tariff: tuple[int, ...]  # global rate index -> tariff index
    tariff_rates: dict[str, tuple[int, ...]]  # tariff name -> its global rate indices, in order

    @property
    def version(self) -> str:
        return self.catalog.version

    def rate_index(self, tariff: str, rate_id: str) -> int:
        for r in self.tariff_rates[tariff]:
            if self.rate_ids[r] == rate_id:
                return r
        raise KeyError(f"tariff {tariff!r} has no rate {rate_id!r}")


def compile_catalog(catalog: Catalog) -> CompiledCatalog:
    """Build the kernel tables of a validated catalog (pure; no I/O but zoneinfo)."""
    b = _Builder(catalog)
    return b.build()


class _Builder:
    def __init__(self, catalog: Catalog):
        self.cat = catalog
        self.band_index = {name: i for i, name in enumerate(catalog.bands)}
        self.children: list[list[int]] = []
        self.node_slot: list[int] = []
        self.slot_rates: list[list[int]] = []
        self.rates: list[tuple[Tariff, Rate]] = []

    def node(self) -> int:
        self.children.append([-1] * 10)
        self.node_slot.append(-1)
        return len(self.children) - 1

    def build(self) -> CompiledCatalog:
        cat = self.cat
        tariff_names = tuple(cat.tariffs)
        t_index = {n: i for i, n in enumerate(tariff_names)}
        roots, anys, rate_tariff, tariff_rates = [], [], [], {}
        for ti, name in enumerate(tariff_names):
            tariff = cat.tariffs[name]
            first = len(self.rates)
            for rate in tariff.rates:
                self.rates.append((tariff, rate))
                rate_tariff.append(ti)
            tariff_rates[name] = tuple(range(first, len(self.rates)))
            root, any_slot = self.tariff_trie(tariff, first)
            roots.append(root)
            anys.append(any_slot)
        services = tuple(cat.services)
        s_index = {s: i for i, s in enumerate(services)}
        plans = tuple(cat.plans)
        plan_tariff = np.full((len(plans), len(services)), -1, dtype=np.int64)
        for pi, pname in enumerate(plans):
            for svc, tname in cat.plans[pname].tariffs.items():
                plan_tariff[pi, s_index[svc]] = t_index[tname]
        tables = self.tables(plan_tariff, roots, anys)
        return CompiledCatalog(
            catalog=cat, tables=tables,
            plan_index={p: i for i, p in enumerate(plans)}, service_index=s_index,
            tariff_names=tariff_names, rate_ids=tuple(r.id for _, r in self.rates),
            rate_tariff=tuple(rate_tariff), tariff_rates=tariff_rates,
        )

    def tariff_trie(self, tariff: Tariff, first: int) -> tuple[int, int]:
        """One trie per tariff over the prefixes its rates' groups hold; slots per group."""
        by_group: dict[str | None, list[int]] = {}
        for offset, rate in enumerate(tariff.rates):
            by_group.setdefault(rate.destination, []).append(first + offset)
        root = self.node()
        any_slot = -1
        for group, members in by_group.items():
            # banded rates first: the first candidate found in a slot is the winner
            members = sorted(members, key=lambda r: self.rates[r][1].band is None)
            self.slot_rates.append(members)
            slot = len(self.slot_rates) - 1
            if group is None:
                any_slot = slot
                continue
            for prefix in self.cat.destinations[group]:
                node = root
                for ch in prefix:
                    d = ord(ch) - 48
                    if self.children[node][d] < 0:
                        child = self.node()
                        self.children[node][d] = child
                    node = self.children[node][d]
                self.node_slot[node] = slot  # validation guarantees one group per prefix
        return root, any_slot

    def tables(self, plan_tariff: np.ndarray, roots: list[int], anys: list[int]) -> Tables:
        i64 = np.int64
        slot_start, slot_end, flat = [], [], []
        for members in self.slot_rates:
            slot_start.append(len(flat))
            flat.extend(members)
            slot_end.append(len(flat))
        rate_cols: dict[str, list[int]] = {k: [] for k in (
            "band", "step0", "step1", "D", "unit", "mode", "cf_N", "cf_whole", "cf_frac",
            "has_cap", "cap_N", "cap_whole", "cap_frac", "fast_max_u")}
        step_cols: dict[str, list[int]] = {k: [] for k in (
            "from", "inc", "a", "b", "m", "d_over_b")}
        for tariff, rate in self.rates:
            ints = rate_ints(tariff, rate)
            rate_cols["band"].append(self.band_index[rate.band] if rate.band else -1)
            rate_cols["step0"].append(len(step_cols["from"]))
            for k, step in enumerate(rate.steps):
                step_cols["from"].append(step.start)
                step_cols["inc"].append(step.increment)
                step_cols["a"].append(ints.a[k])
                step_cols["b"].append(ints.b[k])
                step_cols["m"].append(ints.m[k])
                step_cols["d_over_b"].append(ints.d_over_b[k])
            rate_cols["step1"].append(len(step_cols["from"]))
            rate_cols["D"].append(ints.D)
            rate_cols["unit"].append(ints.unit)
            rate_cols["mode"].append(MODES[tariff.mode])
            for k in ("cf_N", "cf_whole", "cf_frac", "cap_N", "cap_whole", "cap_frac",
                      "fast_max_u"):
                rate_cols[k].append(getattr(ints, k))
            rate_cols["has_cap"].append(int(ints.has_cap))
        band_start, band_end, iv_lo, iv_hi = [], [], [], []
        for band in self.cat.bands.values():
            band_start.append(len(iv_lo))
            for lo, hi in band.week_intervals():
                iv_lo.append(lo)
                iv_hi.append(hi)
            band_end.append(len(iv_lo))
        tz_start, tz_offset = transitions(self.cat.timezone)

        def arr(values, dtype=i64) -> np.ndarray:
            a = np.array(values, dtype=dtype)
            a.setflags(write=False)
            return a

        plan_tariff.setflags(write=False)
        return Tables(
            plan_tariff=plan_tariff, tariff_root=arr(roots), tariff_any=arr(anys),
            trie_child=arr(self.children, np.int32).reshape(-1, 10),
            trie_slot=arr(self.node_slot, np.int32),
            slot_start=arr(slot_start), slot_end=arr(slot_end), slot_rates=arr(flat),
            **{f"rate_{k}": arr(v) for k, v in rate_cols.items()},
            **{f"step_{k}": arr(v) for k, v in step_cols.items()},
            band_start=arr(band_start), band_end=arr(band_end), iv_lo=arr(iv_lo),
            iv_hi=arr(iv_hi), tz_start=tz_start, tz_offset=tz_offset,
        )
