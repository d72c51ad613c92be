"""The product catalog (CONTRACT §4): parsing with complete validation into its model
(``charging.model``, whose names this module also offers).

``parse_catalog`` turns YAML text into an immutable ``Catalog`` or raises ``CatalogError``
listing *every* problem found, each with its YAML path (``tariffs.VOICE_STD.rates[0].steps[1]``)
and a plain reason. A key the schema does not know is one of them, with the key likely meant
(``tariffs.VOICE_STD: unknown key 'maxcost' — did you mean 'max_cost'?``): a misspelt key
would otherwise change prices without a word. ``billing`` and a plan's ``fee`` (CONTRACT
§8.2) are carried as plain mappings for the billing package, which validates their inside.
Structural checks live here; the checks that tariffs can be rated exactly in the engine's
64-bit integers live in ``charging.exact`` and are run from here too, so a catalog that
validates is a catalog the kernels rate exactly.
"""

from __future__ import annotations

import hashlib
import re
from fractions import Fraction
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import orjson
import yaml

from charging.errors import CatalogError, Problem
from charging.exact import tariff_problems
from charging.model import Allowance, Band, Catalog, Plan, Rate, Step, Tariff
from charging.money import ROUNDING_MODES, parse_decimal
from charging.yamlio import load_yaml, unknown_key

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {name: i for i, name in enumerate(DAYS)} | {
    full: i
    for i, full in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
}
PERIODS = ("day", "week", "month", "none")
DEFAULT_VALIDITY_S = 600
DEFAULT_DECIMALS = 4
DEFAULT_MODE = "up"
#: A plan's allowances of one service together (the kernels hold free units as one int64).
MAX_ALLOWANCE_UNITS = 2**62
#: Catalog prefixes are matched on at most this many digits (E.164 numbers have ≤ 15).
MAX_PREFIX_DIGITS = 18
#: Step bounds, per and increment are kept below 2**53 so that every unit count is exact
#: in JSON consumers too; usage itself is capped at 2**40 by the request contract.
MAX_UNIT_FIELD = 2**53
#: Rating groups (Diameter Rating-Group, Nchf ratingGroup) are Unsigned32.
MAX_RATING_GROUP = 2**32 - 1
# used with fullmatch: "$" would also match before a trailing newline
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")
_PREFIX = re.compile(rf"\+?[0-9]{{1,{MAX_PREFIX_DIGITS}}}")
_CURRENCY = re.compile(r"[A-Z]{3}")


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog file; ``CatalogError`` lists every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark is not content
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError([Problem("", f"cannot read {p}: {exc}")], source=str(p)) from exc
    return parse_catalog(text, source=str(p))


def parse_catalog(text: str, source: str = "catalog", *, strict_keys: bool = True) -> Catalog:
    """Parse and validate catalog YAML text; ``CatalogError`` lists every problem.

    ``strict_keys=False`` passes unknown keys over (listed in ``Catalog.warnings``): for a
    version stored by a release that accepted them, which must still rate as it did."""
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        raise CatalogError([Problem("", f"not valid YAML: {exc}")], source=source) from exc
    v = _Validator(strict_keys)
    catalog = v.catalog(doc)
    if v.problems:
        raise CatalogError(v.problems, source=source)
    assert catalog is not None
    return catalog


@cache
def _iana_zones() -> frozenset[str]:
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


class _Validator:
    """Walks the document once, collecting problems instead of stopping at the first."""

    def __init__(self, strict_keys: bool = True) -> None:
        self.strict_keys = strict_keys
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self.broken_tariffs: set[str] = set()  # defined but invalid: already reported

    # -- helpers ---------------------------------------------------------------------------
    def bad(self, path: str, reason: str) -> None:
        self.problems.append(Problem(path, reason))

    def mapping(self, node: object, path: str, known: tuple[str, ...] | None = None) -> dict:
        if not isinstance(node, dict):
            self.bad(path, f"expected a mapping, got {_kind(node)}")
            return {}
        if known is not None:
            for key in node:
                if key not in known:
                    if self.strict_keys:
                        self.bad(path, unknown_key(key, known))
                    else:
                        self.warnings.append(str(Problem(path, unknown_key(key, known))))
        return node

    def name(self, key: object, path: str, what: str) -> str | None:
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            self.bad(path, f"{what} name {key!r} must be 1-64 letters, digits or _.:-")
            return None
        return key

    def integer(
        self, node: dict, key: str, path: str, *, lo: int, hi: int = MAX_UNIT_FIELD,
        default: int | None = None,
    ) -> int | None:
        here = _join(path, key)
        if key not in node or node[key] is None:
            if default is None:
                self.bad(here, "is required")
            return default
        val = node[key]
        if isinstance(val, bool) or not isinstance(val, int):
            self.bad(here, f"must be a whole number, got {val!r}")
            return None
        if not lo <= val <= hi:
            self.bad(here, f"must be between {lo} and {hi}, got {val}")
            return None
        return val

    def amount(self, node: dict, key: str, path: str, default: Fraction | None) -> Fraction | None:
        here = _join(path, key)
        if key not in node or node[key] is None:
            if default is None:
                self.bad(here, "is required")
            return default
        try:
            val = parse_decimal(node[key])
        except ValueError as exc:
            self.bad(here, str(exc))
            return None
        if val < 0:
            self.bad(here, f"must not be negative, got {node[key]!r}")
            return None
        return val

    # -- sections --------------------------------------------------------------------------
    def catalog(self, doc: object) -> Catalog | None:
        known = ("version", "currency", "timezone", "services", "destinations", "bands",
                 "tariffs", "plans", "billing")
        root = self.mapping(doc, "", known)
        if not root:
            if isinstance(doc, dict):
                self.bad("", "the catalog is empty")
            return None
        version = root.get("version")
        if isinstance(version, bool) or not isinstance(version, (str, int)) or version == "":
            self.bad("version", f"must be a non-empty string (quote it), got {version!r}")
            version = ""
        currency = root.get("currency")
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            self.bad("currency", f"must be an ISO 4217 code such as EUR, got {currency!r}")
        tz = root.get("timezone", "UTC")
        try:
            # a zone of the IANA list: not a directory of the database ("Europe"), nor the
            # host's own "localtime", by which the same catalog would rate differently on
            # different machines
            if not isinstance(tz, str) or tz not in _iana_zones():
                raise ValueError(tz)
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            self.bad("timezone", f"{tz!r} is not an IANA time zone such as Europe/Berlin")
        services, rating_groups = self.services(root.get("services"))
        billing = self.plain_mapping(root.get("billing"), "billing")
        destinations = self.destinations(root.get("destinations", {}))
        bands = self.bands(root.get("bands", {}))
        tariffs = self.tariffs(root.get("tariffs"), services, destinations, bands)
        plans = self.plans(root.get("plans"), services, tariffs)
        if self.problems:
            return None
        normal = _normal_form(version, currency, tz, services, destinations, bands, tariffs,
                              plans, rating_groups, billing)
        try:
            digest = hashlib.sha256(orjson.dumps(
                normal, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()
        except TypeError as exc:  # only billing and fees hold values no schema checked
            self.bad("billing" if billing else "plans", f"holds a value the catalog cannot "
                     f"store ({exc}); billing amounts and rates are quoted decimal strings")
            return None
        return Catalog(
            version=str(version), currency=currency, timezone=tz, services=services,
            destinations=destinations, bands=bands, tariffs=tariffs, plans=plans,
            content_hash=digest, warnings=tuple(self.warnings), rating_groups=rating_groups,
            billing=billing,
        )

    def plain_mapping(self, node: object, path: str) -> dict | None:
        """A mapping carried as written (billing, fee), or None when absent."""
        if node is None:
            return None
        if not isinstance(node, dict):
            self.bad(path, f"expected a mapping, got {_kind(node)}")
            return None
        return node

    def services(self, node: object) -> tuple[dict[str, str], dict[int, str]]:
        """(service -> unit, rating group -> service)."""
        if node is None:
            self.bad("services",
                     "is required: name at least one service, e.g. voice: {unit: second}")
            return {}, {}
        out: dict[str, str] = {}
        groups: dict[int, tuple[str, str]] = {}  # rating group -> (service, its YAML path)
        for key, spec in self.mapping(node, "services").items():
            path = _join("services", str(key))
            if self.name(key, path, "service") is None:
                continue
            spec = self.mapping(spec if spec is not None else {}, path, ("unit", "rating_groups"))
            unit = spec.get("unit", "unit")
            if not isinstance(unit, str) or not unit:
                self.bad(_join(path, "unit"), f"must be a unit name such as second, got {unit!r}")
            out[key] = str(unit)
            self.rating_groups(spec.get("rating_groups"), key, _join(path, "rating_groups"),
                               groups)
        if isinstance(node, dict) and not node:
            self.bad("services", "must name at least one service")
        return out, {rg: svc for rg, (svc, _) in groups.items()}

    def rating_groups(self, node: object, service: str, path: str,
                      groups: dict[int, tuple[str, str]]) -> None:
        """A service's rating groups into ``groups``; each names one service (§6.2)."""
        if node is None:
            return
        if not isinstance(node, list):
            self.bad(path, f"must be a list of rating groups such as [10, 11], got {_kind(node)}")
            return
        for i, rg in enumerate(node):
            here = f"{path}[{i}]"
            if isinstance(rg, bool) or not isinstance(rg, int) or not 0 <= rg <= MAX_RATING_GROUP:
                self.bad(here, f"a rating group is a whole number from 0 to {MAX_RATING_GROUP}, "
                         f"got {rg!r}")
                continue
            owner = groups.setdefault(rg, (service, here))
            if owner[1] == here:
                continue
            if owner[0] == service:
                self.bad(here, f"rating group {rg} is listed twice (also at {owner[1]})")
            else:
                self.bad(here, f"rating group {rg} already names service {owner[0]!r} (at "
                         f"{owner[1]}); a rating group belongs to one service")

    def destinations(self, node: object) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for key, prefixes in self.mapping(node or {}, "destinations").items():
            path = _join("destinations", str(key))
            if self.name(key, path, "destination group") is None:
                continue
            if not isinstance(prefixes, list) or not prefixes:
                self.bad(path, "must be a non-empty list of number prefixes such as [\"4915\"]")
                continue
            seen: list[str] = []
            for i, pfx in enumerate(prefixes):
                text = str(pfx) if isinstance(pfx, int) and not isinstance(pfx, bool) else pfx
                if not isinstance(text, str) or not _PREFIX.fullmatch(text):
                    self.bad(f"{path}[{i}]", f"{pfx!r} is not a prefix of 1-{MAX_PREFIX_DIGITS}"
                             " digits")
                    continue
                digits = text.lstrip("+")
                if digits not in seen:
                    seen.append(digits)
            out[key] = tuple(seen)
        return out

    def bands(self, node: object) -> dict[str, Band]:
        out: dict[str, Band] = {}
        for key, spec in self.mapping(node or {}, "bands").items():
            path = _join("bands", str(key))
            if self.name(key, path, "band") is None:
                continue
            spec = self.mapping(spec, path, ("days", "from", "to"))
            days = self.days(spec.get("days"), _join(path, "days"))
            start = self.clock(spec.get("from"), _join(path, "from"), allow_24=False)
            end = self.clock(spec.get("to"), _join(path, "to"), allow_24=True)
            if days is not None and start is not None and end is not None:
                out[key] = Band(key, days, start, end)
        return out

    def days(self, node: object, path: str) -> frozenset[int] | None:
        if node is None:
            return frozenset(range(7))
        if not isinstance(node, list) or not node:
            self.bad(path,
                     "must be a non-empty list such as [mon, tue] (leave it out for every day)")
            return None
        out = set()
        for i, day in enumerate(node):
            idx = _DAY_ALIASES.get(day.lower()) if isinstance(day, str) else None
            if idx is None:
                self.bad(f"{path}[{i}]", f"{day!r} is not a day (use {', '.join(DAYS)})")
                return None
            out.add(idx)
        return frozenset(out)

    def clock(self, node: object, path: str, *, allow_24: bool) -> int | None:
        if node is None:
            self.bad(path, "is required, as \"HH:MM\"")
            return None
        m = _TIME.fullmatch(node) if isinstance(node, str) else None
        if not m:
            self.bad(path, f"{node!r} is not a time of day \"HH:MM\" (quote it)")
            return None
        h, mnt, sec = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        secs = h * 3600 + mnt * 60 + sec
        if mnt > 59 or sec > 59 or secs > 86400 or (secs == 86400 and not allow_24):
            limit = "00:00-24:00" if allow_24 else "00:00-23:59"
            self.bad(path, f"{node!r} is not a time of day in {limit}")
            return None
        return secs

    def tariffs(self, node: object, services: dict, destinations: dict, bands: dict
                ) -> dict[str, Tariff]:
        if node is None:
            self.bad("tariffs", "is required")
            return {}
        out: dict[str, Tariff] = {}
        for key, spec in self.mapping(node, "tariffs").items():
            path = _join("tariffs", str(key))
            if self.name(key, path, "tariff") is None:
                continue
            tariff = self.tariff(key, spec, path, services, destinations, bands)
            if tariff is not None:
                out[key] = tariff
        return out

    def tariff(self, name: str, spec: object, path: str, services: dict, destinations: dict,
               bands: dict) -> Tariff | None:
        known = ("service", "quota", "validity_s", "rounding", "max_cost", "rates")
        spec = self.mapping(spec, path, known)
        if not spec:
            return None
        start = len(self.problems)
        service = spec.get("service")
        if not _named(service, services):
            self.bad(_join(path, "service"), f"unknown service {service!r} (defined: "
                     f"{', '.join(services) or 'none'})")
        validity = self.integer(spec, "validity_s", path, lo=1, hi=10**9,
                                default=DEFAULT_VALIDITY_S)
        rounding = self.mapping(spec.get("rounding") or {}, _join(path, "rounding"),
                                ("decimals", "mode"))
        rpath = _join(path, "rounding")
        decimals = self.integer(rounding, "decimals", rpath, lo=0, hi=6, default=DEFAULT_DECIMALS)
        mode = rounding.get("mode", DEFAULT_MODE)
        if not _named(mode, ROUNDING_MODES):
            self.bad(_join(rpath, "mode"), f"{mode!r} is not one of {', '.join(ROUNDING_MODES)}")
        max_cost = self.amount(spec, "max_cost", path, default=Fraction(-1))
        indexed = self.rates(spec.get("rates"), _join(path, "rates"), destinations, bands)
        rates = [r for _, r in indexed]
        quota = self.integer(spec, "quota", path, lo=1, default=_default_quota(rates))
        if len(self.problems) > start:
            # the amount-range checks still run on what did validate (every problem is
            # listed at once, CONTRACT §5), leniently where a field they use is broken
            self.problems.extend(tariff_problems(
                Tariff(name, "", 1, 1, 6 if decimals is None else decimals, DEFAULT_MODE,
                       None if max_cost in (None, -1) else max_cost, tuple(rates)),
                path, [i for i, _ in indexed]))
            self.broken_tariffs.add(name)
            return None
        tariff = Tariff(name, service, quota, validity, decimals, mode,
                        None if max_cost == -1 else max_cost, tuple(rates))
        problems = tariff_problems(tariff, path)
        if problems:
            self.problems.extend(problems)
            self.broken_tariffs.add(name)
            return None
        return tariff

    def rates(self, node: object, path: str, destinations: dict, bands: dict
              ) -> list[tuple[int, Rate]]:
        """The rates that validated, each with its index in the list."""
        if not isinstance(node, list) or not node:
            self.bad(path, "must be a non-empty list of rates")
            return []
        out: list[tuple[int, Rate]] = []
        ids: set[str] = set()
        for i, spec in enumerate(node):
            here = f"{path}[{i}]"
            spec = self.mapping(spec, here, ("id", "destination", "band", "connect_fee", "steps"))
            if not spec:
                continue
            rid = spec.get("id")
            if self.name(rid, _join(here, "id"), "rate id") is not None:
                if rid in ids:
                    self.bad(_join(here, "id"), f"rate id {rid!r} is used twice in this tariff")
                ids.add(rid)
            group = spec.get("destination")
            if group is not None and not _named(group, destinations):
                self.bad(_join(here, "destination"), f"unknown destination group {group!r}")
            band = spec.get("band")
            if band is not None and not _named(band, bands):
                self.bad(_join(here, "band"), f"unknown band {band!r}")
            fee = self.amount(spec, "connect_fee", here, default=Fraction(0))
            steps = self.steps(spec.get("steps"), _join(here, "steps"))
            if fee is not None and steps:
                out.append((i, Rate(str(rid), group, band, fee, tuple(steps))))
        known = [(i, r) for i, r in out if (r.destination is None or _named(r.destination,
                 destinations)) and (r.band is None or _named(r.band, bands))]
        self.ties(known, path, destinations, bands)
        return out

    def steps(self, node: object, path: str) -> list[Step]:
        if not isinstance(node, list) or not node:
            self.bad(path, "must be a non-empty list of steps, the first with from: 0")
            return []
        parsed: list[tuple[int, int, int, Fraction | None, int | None]] = []
        ok = True
        for i, spec in enumerate(node):
            here = f"{path}[{i}]"
            spec = self.mapping(spec, here, ("from", "price", "per", "increment"))
            start = self.integer(spec, "from", here, lo=0)
            price = self.amount(spec, "price", here, default=None)
            per = self.integer(spec, "per", here, lo=1, default=1)
            inc = self.integer(spec, "increment", here, lo=1, default=1)
            ok = ok and None not in (price, per)
            if start is None or inc is None:
                ok = False
            else:  # the layout checks below still run for the steps that have both
                parsed.append((start, i, inc, price, per))
        parsed.sort()
        if parsed and parsed[0][0] != 0:
            self.bad(path, f"the first step must have from: 0 (lowest is {parsed[0][0]})")
            ok = False
        for (start, i, inc, _, _), (nxt, j, _, _, _) in zip(parsed, parsed[1:]):
            if nxt == start:
                self.bad(f"{path}[{j}].from", f"two steps start at {start} (also step [{i}])")
                ok = False
            elif (nxt - start) % inc:
                self.bad(f"{path}[{i}]", f"step length {nxt - start} (from {start} to {nxt}) "
                         f"is not a multiple of its increment {inc}")
                ok = False
        if not ok:
            return []
        return [Step(start, price, per, inc) for start, _, inc, price, per in parsed]

    def ties(self, rates: list[tuple[int, Rate]], path: str, destinations: dict, bands: dict
             ) -> None:
        """Reject rate sets that the selection rule (CONTRACT §4.1 step 2) could not decide."""
        groups: dict[str | None, list[tuple[int, Rate]]] = {}
        for i, rate in rates:
            groups.setdefault(rate.destination, []).append((i, rate))
        for group, members in groups.items():
            label = f"destination group {group!r}" if group else "no destination"
            plain = [i for i, r in members if r.band is None]
            if len(plain) > 1:
                self.bad(f"{path}[{plain[1]}]", f"tied with rate [{plain[0]}]: both have "
                         f"{label} and no band")
            banded = [(i, r) for i, r in members if r.band is not None]
            for a, (i, ra) in enumerate(banded):
                for j, rb in banded[a + 1:]:
                    where = _overlap(bands[ra.band], bands[rb.band])
                    if where is not None:
                        self.bad(f"{path}[{j}]", f"tied with rate [{i}]: both have {label} and "
                                 f"bands {ra.band!r} and {rb.band!r} overlap ({where})")
        owner: dict[str, str] = {}
        for group in groups:
            if group is None:
                continue
            for prefix in destinations.get(group, ()):
                other = owner.setdefault(prefix, group)
                if other != group:
                    self.bad(path, f"prefix {prefix!r} is in both destination groups {other!r} "
                             f"and {group!r}, which this tariff's rates use: a number with it "
                             "could match either")

    def plans(self, node: object, services: dict, tariffs: dict) -> dict[str, Plan]:
        if node is None:
            self.bad("plans", "is required")
            return {}
        out: dict[str, Plan] = {}
        for key, spec in self.mapping(node, "plans").items():
            path = _join("plans", str(key))
            if self.name(key, path, "plan") is None:
                continue
            spec = self.mapping(spec, path, ("tariffs", "allowances", "fee"))
            fee = self.plain_mapping(spec.get("fee"), _join(path, "fee"))
            mapping: dict[str, str] = {}
            for service, tname in self.mapping(spec.get("tariffs") or {}, _join(path, "tariffs")
                                               ).items():
                here = _join(_join(path, "tariffs"), str(service))
                if not _named(service, services):
                    self.bad(here, f"unknown service {service!r}")
                elif not isinstance(tname, str):
                    self.bad(here, f"must name a tariff, got {_kind(tname)}")
                elif tname in self.broken_tariffs:
                    continue  # its own problems are listed already
                elif tname not in tariffs:
                    self.bad(here, f"unknown tariff {tname!r}")
                elif tariffs[tname].service != service:
                    self.bad(here, f"tariff {tname!r} prices {tariffs[tname].service!r}, "
                             f"not {service!r}")
                else:
                    mapping[service] = tname
            allowances = []
            node_a = spec.get("allowances") or []
            if not isinstance(node_a, list):
                self.bad(_join(path, "allowances"), "must be a list")
                node_a = []
            for i, a in enumerate(node_a):
                here = f"{path}.allowances[{i}]"
                a = self.mapping(a, here, ("service", "units", "period"))
                svc = a.get("service")
                if not _named(svc, services):
                    self.bad(_join(here, "service"), f"unknown service {svc!r}")
                units = self.integer(a, "units", here, lo=1, hi=MAX_ALLOWANCE_UNITS)
                period = a.get("period", "none")
                if not _named(period, PERIODS):
                    self.bad(_join(here, "period"),
                             f"{period!r} is not one of {', '.join(PERIODS)}")
                if _named(svc, services) and units is not None and _named(period, PERIODS):
                    allowances.append(Allowance(svc, units, period))
            totals: dict[str, int] = {}
            for a in allowances:
                totals[a.service] = totals.get(a.service, 0) + a.units
            for svc, total in totals.items():
                # the charging kernels hold a service's free units as one int64
                if total > MAX_ALLOWANCE_UNITS:
                    self.bad(_join(path, "allowances"),
                             f"the {svc} allowances add up to {total} units; together they "
                             f"may hold at most {MAX_ALLOWANCE_UNITS} (2**62)")
            out[key] = Plan(key, mapping, tuple(allowances), fee)
        if isinstance(node, dict) and not node:
            self.bad("plans", "must name at least one plan")
        return out


def _named(value: object, names) -> bool:
    """``value`` is a string among ``names`` (a list or mapping in the YAML is not a name,
    and must not reach a dict lookup as a key)."""
    return isinstance(value, str) and value in names


def _default_quota(rates: list[Rate]) -> int:
    """Grant size when the tariff names none: one first-step increment of its largest rate."""
    return max((r.steps[0].increment for r in rates), default=1)


def _overlap(a: Band, b: Band) -> str | None:
    """Where two bands share time in the week, as text, or None."""
    for s1, e1 in a.week_intervals():
        for s2, e2 in b.week_intervals():
            lo, hi = max(s1, s2), min(e1, e2)
            if lo < hi:
                day, sec = divmod(lo, 86400)
                return f"both hold {DAYS[day]} {sec // 3600:02d}:{sec % 3600 // 60:02d}"
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(node: object) -> str:
    return "nothing" if node is None else type(node).__name__


def _normal_form(version, currency, tz, services, destinations, bands, tariffs, plans,
                 rating_groups, billing) -> dict:
    """A canonical, JSON-able form of the validated catalog, for its content hash. What
    CONTRACT v2 added is in it only where a catalog has it, so the hash of a catalog
    without it is the hash earlier releases stored for it."""
    normal = {
        "version": str(version), "currency": currency, "timezone": tz, "services": services,
        "destinations": {k: list(v) for k, v in destinations.items()},
        "bands": {k: [sorted(b.days), b.start_s, b.end_s] for k, b in bands.items()},
        "tariffs": {
            k: [t.service, t.quota, t.validity_s, t.decimals, t.mode, str(t.max_cost),
                [[r.id, r.destination, r.band, str(r.connect_fee),
                  [[s.start, str(s.price), s.per, s.increment] for s in r.steps]]
                 for r in t.rates]]
            for k, t in tariffs.items()
        },
        "plans": {k: [p.tariffs, [[a.service, a.units, a.period] for a in p.allowances]]
                        + ([p.fee] if p.fee is not None else [])
                  for k, p in plans.items()},
    }
    if rating_groups:
        normal["rating_groups"] = {str(rg): svc for rg, svc in rating_groups.items()}
    if billing is not None:
        normal["billing"] = billing
    return normal


__all__ = ["Allowance", "Band", "Catalog", "Plan", "Rate", "Step", "Tariff", "load_catalog",
           "parse_catalog"]
