"""Compile a validated ``Catalog`` into flat, read-only numpy arrays for the kernels.

Layout (all int64 unless noted; "slot" = the rates of one tariff for one destination group):

    plan_tariff[plan, service]        tariff index, -1 when the plan does not price the service
    tariff_root[t], tariff_any[t]     trie root of tariff t; slot of its no-destination rates
    trie_child[node, digit] (int32)   digit trie of the prefixes the tariff's rates use
    trie_slot[node] (int32)           slot whose group holds the prefix ending here, or -1
    slot[s] → slot_rates              a slot's rates: banded first, the band-less one last
    rate[r, R_*]                      per rate: band, step range, exact integers (charging.exact)
    step[i, S_*]                      per step: from, next from, increment, a, b, m, D/b
    band[b] → iv[k]                   a band's intervals in seconds since Monday 00:00 local
    tz_start, tz_offset               UTC-offset transitions of the catalog time zone

Names map to indices through the ``CompiledCatalog`` dictionaries; the arrays travel to the
kernels as one ``Tables`` named tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from charging.catalog import MAX_PREFIX_DIGITS, Catalog, Rate, Tariff
from charging.exact import rate_ints
from charging.timezones import transitions

MODES = {"up": 0, "down": 1, "half_up": 2, "half_even": 3}
MAX_DIGITS = MAX_PREFIX_DIGITS


# Columns of ``Tables.rate`` (one row per rate) and ``Tables.step`` (one row per step).
R_BAND, R_STEP0, R_STEP1, R_D, R_UNIT, R_MODE = 0, 1, 2, 3, 4, 5
R_CF_N, R_CF_WHOLE, R_CF_FRAC, R_HAS_CAP, R_CAP_N, R_CAP_WHOLE, R_CAP_FRAC = 6, 7, 8, 9, 10, 11, 12
R_FAST_MAX_U = 13
RATE_COLS = 14
S_FROM, S_NEXT, S_INC, S_A, S_B, S_M, S_D_OVER_B = 0, 1, 2, 3, 4, 5, 6
STEP_COLS = 7
NEVER = 2**62  # S_NEXT of a rate's last step: it runs for ever


class Tables(NamedTuple):
    """The kernels' read-only arrays; 2-D tables keep one rate's or step's fields together."""

    plan_tariff: np.ndarray  # [plan, service] -> tariff or -1
    tariff_root: np.ndarray  # [tariff] -> trie node
    tariff_any: np.ndarray  # [tariff] -> slot of its no-destination rates, or -1
    trie_child: np.ndarray  # int32 [node, digit] -> node or -1
    trie_slot: np.ndarray  # int32 [node] -> slot or -1
    slot: np.ndarray  # [slot, 2] -> start, end in slot_rates
    slot_rates: np.ndarray  # rate indices, banded first
    rate: np.ndarray  # [rate, RATE_COLS]
    step: np.ndarray  # [step, STEP_COLS]
    band: np.ndarray  # [band, 2] -> start, end in iv
    iv: np.ndarray  # [interval, 2] -> lo, hi seconds since Monday 00:00 local
    tz_start: np.ndarray  # epoch seconds from which tz_offset applies
    tz_offset: np.ndarray  # seconds east of UTC


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
        """The global index of a tariff's rate (what a session holds: tariff and rate id)."""
        try:
            return self._rate_lookup[(tariff, rate_id)]
        except KeyError:
            raise KeyError(f"tariff {tariff!r} has no rate {rate_id!r}") from None

    @cached_property
    def _rate_lookup(self) -> dict[tuple[str, str], int]:
        lookup: dict[tuple[str, str], int] = {}
        for t, rates in self.tariff_rates.items():
            for r in rates:
                lookup.setdefault((t, self.rate_ids[r]), r)  # the first, as a scan finds it
        return lookup


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
        slots, flat = [], []
        for members in self.slot_rates:
            slots.append((len(flat), len(flat) + len(members)))
            flat.extend(members)
        rate_rows, step_rows = [], []
        for tariff, rate in self.rates:
            ints = rate_ints(tariff, rate)
            first = len(step_rows)
            for k, step in enumerate(rate.steps):
                nxt = rate.steps[k + 1].start if k + 1 < len(rate.steps) else NEVER
                step_rows.append((step.start, nxt, step.increment, ints.a[k], ints.b[k],
                                  ints.m[k], ints.d_over_b[k]))
            rate_rows.append((
                self.band_index[rate.band] if rate.band else -1, first, len(step_rows),
                ints.D, ints.unit, MODES[tariff.mode], ints.cf_N, ints.cf_whole, ints.cf_frac,
                int(ints.has_cap), ints.cap_N, ints.cap_whole, ints.cap_frac, ints.fast_max_u,
            ))
        bands, ivs = [], []
        for band in self.cat.bands.values():
            start = len(ivs)
            ivs.extend(band.week_intervals())
            bands.append((start, len(ivs)))
        tz_start, tz_offset = transitions(self.cat.timezone)

        def arr(values, width: int | None = None, dtype=np.int64) -> np.ndarray:
            a = np.array(values, dtype=dtype)
            if width is not None:
                a = a.reshape(-1, width)
            a.setflags(write=False)
            return a

        plan_tariff.setflags(write=False)
        return Tables(
            plan_tariff=plan_tariff, tariff_root=arr(roots), tariff_any=arr(anys),
            trie_child=arr(self.children, 10, np.int32), trie_slot=arr(self.node_slot, None,
                                                                       np.int32),
            slot=arr(slots, 2), slot_rates=arr(flat), rate=arr(rate_rows, RATE_COLS),
            step=arr(step_rows, STEP_COLS), band=arr(bands, 2), iv=arr(ivs, 2),
            tz_start=tz_start, tz_offset=tz_offset,
        )
