"""Typed billing settings from a catalog's ``billing:`` section and its plans' ``fee`` (§8.2).

The catalog parser carries both as written; this module checks their inside once and gives
the bill run frozen values: the seller, per-country rates by effective date (percent, exact
``Fraction``s), whether prices are gross, each plan's recurring fee (micros), the currency's
decimals, and the two conventions a catalog may choose (docs/invoices.md):

- ``proration: exact`` (default, CONTRACT §8.3) or ``killbill`` (the day fraction first taken
  to 9 decimals half-up, as Kill Bill does);
- ``number_prefix``: invoice numbers read ``<prefix><year>-<n>`` (default ``INV-``), credit
  notes ``<credit_note_prefix><year>-<n>`` (default ``CN-``).

Every problem is reported at once, with its catalog path, as a ``BillingSettingsError``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from fractions import Fraction

from charging.catalog import Catalog
from charging.errors import CatalogError, Problem
from charging.money import MICROS, parse_decimal

#: ISO 4217 minor units where they are not 2 (the currencies a telecom is likely to bill in)
_DECIMALS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "HUF": 2, "BHD": 3, "KWD": 3,
             "OMR": 3, "JOD": 3, "TND": 3, "LYD": 3, "IQD": 3}
_COUNTRY = re.compile(r"[A-Z]{2}")
_KNOWN = ("seller", "prices_include_tax", "tax", "proration", "number_prefix",
          "credit_note_prefix")
PRORATIONS = ("exact", "killbill")
FEE_PERIODS = ("month",)


class BillingSettingsError(CatalogError):
    """The catalog's billing section or a plan's fee is wrong; every problem is listed."""

    code = "BILLING_SETTINGS_INVALID"


@dataclass(frozen=True)
class Party:
    """The seller (from the catalog) as an invoice names it."""

    name: str
    country: str  # ISO 3166-1 alpha-2
    vat_id: str | None = None
    address: str | None = None  # free text, lines separated by newlines


@dataclass(frozen=True)
class RateFrom:
    """A tax rate (percent) in force from ``start`` (inclusive) until the next one."""

    rate: Fraction
    start: dt.date


@dataclass(frozen=True)
class Fee:
    """A plan's recurring fee: ``amount`` micros per ``period`` (net or gross as the prices)."""

    amount: int
    period: str = "month"


@dataclass(frozen=True)
class BillingSettings:
    seller: Party
    currency: str
    decimals: int  # the currency's minor-unit decimals (2 for EUR)
    timezone: str
    prices_include_tax: bool = False
    #: country -> its rates, newest first
    tax: dict[str, tuple[RateFrom, ...]] = field(default_factory=dict)
    fees: dict[str, Fee] = field(default_factory=dict)  # plan -> fee
    proration: str = "exact"
    number_prefix: str = "INV-"
    credit_note_prefix: str = "CN-"

    def rate_on(self, country: str, day: dt.date) -> Fraction | None:
        """The percent in force in ``country`` on ``day``; None when the catalog lists no
        rates for the country (outside the scope of its taxes). A listed country with no
        rate in force yet on that day is an error (``LookupError``), never a silent 0."""
        rates = self.tax.get(country)
        if rates is None:
            return None
        for r in rates:
            if r.start <= day:
                return r.rate
        raise LookupError(f"billing.tax.{country} has no rate in force on {day.isoformat()} "
                          f"(the earliest is from {rates[-1].start.isoformat()})")


def currency_decimals(currency: str) -> int:
    return _DECIMALS.get(currency, 2)


def billing_settings(catalog: Catalog) -> BillingSettings:
    """The catalog's billing settings, checked; ``BillingSettingsError`` lists every problem.
    A catalog without a ``billing:`` section cannot bill (no seller to name)."""
    problems: list[Problem] = []
    raw = catalog.billing
    if raw is None:
        raise BillingSettingsError([Problem("billing", "the catalog has no billing section: "
                                            "add billing.seller {name, country} (and "
                                            "billing.tax) to bill")], "catalog")
    for key in raw:
        if key not in _KNOWN:
            problems.append(Problem(f"billing.{key}", f"unknown key (known: {', '.join(_KNOWN)})"))
    seller = _seller(raw.get("seller"), problems)
    gross = raw.get("prices_include_tax", False)
    if not isinstance(gross, bool):
        problems.append(Problem("billing.prices_include_tax", f"must be true or false, got "
                                f"{gross!r}"))
        gross = False
    tax = _tax(raw.get("tax"), problems)
    proration = raw.get("proration", "exact")
    if proration not in PRORATIONS:
        problems.append(Problem("billing.proration", f"{proration!r} is not one of "
                                f"{', '.join(PRORATIONS)}"))
    prefixes = {}
    for key, default in (("number_prefix", "INV-"), ("credit_note_prefix", "CN-")):
        value = raw.get(key, default)
        if not (isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9/_-]{0,16}", value)):
            problems.append(Problem(f"billing.{key}", f"must be up to 16 letters, digits, "
                                    f"'-', '_' or '/', got {value!r}"))
            value = default
        prefixes[key] = value
    decimals = currency_decimals(catalog.currency)
    fees = {}
    for name, plan in catalog.plans.items():
        if plan.fee is not None:
            fee = _fee(plan.fee, f"plans.{name}.fee", decimals, problems)
            if fee is not None:
                fees[name] = fee
    if problems:
        raise BillingSettingsError(problems, "catalog")
    assert seller is not None
    return BillingSettings(seller, catalog.currency, decimals, catalog.timezone, gross, tax,
                           fees, proration, prefixes["number_prefix"],
                           prefixes["credit_note_prefix"])


def _seller(node: object, problems: list[Problem]) -> Party | None:
    where = "billing.seller"
    if not isinstance(node, dict):
        problems.append(Problem(where, "must be a mapping {name, country, vat_id, address}"))
        return None
    for key in node:
        if key not in ("name", "country", "vat_id", "address"):
            problems.append(Problem(f"{where}.{key}", "unknown key (known: name, country, "
                                    "vat_id, address)"))
    name, country = node.get("name"), node.get("country")
    vat_id, address = node.get("vat_id"), node.get("address")
    ok = True
    if not (isinstance(name, str) and name.strip()):
        problems.append(Problem(f"{where}.name", "the seller's name is required (a string)"))
        ok = False
    if not (isinstance(country, str) and _COUNTRY.fullmatch(country)):
        problems.append(Problem(f"{where}.country", f"{country!r} is not an ISO 3166 alpha-2 "
                                "country code such as DE"))
        ok = False
    for key, value in (("vat_id", vat_id), ("address", address)):
        if value is not None and not isinstance(value, str):
            problems.append(Problem(f"{where}.{key}", f"must be a string, got {value!r}"))
            ok = False
    return Party(name.strip(), country, vat_id, address) if ok else None


def _tax(node: object, problems: list[Problem]) -> dict[str, tuple[RateFrom, ...]]:
    if node is None:
        return {}
    if not isinstance(node, dict):
        problems.append(Problem("billing.tax", "must map countries to lists of "
                                "{rate, from}"))
        return {}
    out = {}
    for country, entries in node.items():
        where = f"billing.tax.{country}"
        if not (isinstance(country, str) and _COUNTRY.fullmatch(country)):
            problems.append(Problem(where, "not an ISO 3166 alpha-2 country code such as DE"))
            continue
        if not isinstance(entries, list) or not entries:
            problems.append(Problem(where, "must be a non-empty list of {rate, from}"))
            continue
        rates: list[RateFrom] = []
        for i, entry in enumerate(entries):
            here = f"{where}[{i}]"
            if not isinstance(entry, dict) or set(entry) - {"rate", "from"}:
                problems.append(Problem(here, "must be {rate: \"19\", from: \"2021-01-01\"}"))
                continue
            try:
                rate = parse_decimal(entry.get("rate"))
                if not 0 <= rate < 100:
                    raise ValueError(f"{entry.get('rate')!r} is not a percent from 0 to 100")
            except ValueError as exc:
                problems.append(Problem(f"{here}.rate", str(exc)))
                continue
            start = _date(entry.get("from"))
            if start is None:
                problems.append(Problem(f"{here}.from", f"{entry.get('from')!r} is not a date "
                                        "such as \"2021-01-01\""))
                continue
            rates.append(RateFrom(rate, start))
        starts = [r.start for r in rates]
        if len(set(starts)) != len(starts):
            problems.append(Problem(where, "two rates start on the same day"))
        out[country] = tuple(sorted(rates, key=lambda r: r.start, reverse=True))
    return out


def _fee(node: dict, where: str, decimals: int, problems: list[Problem]) -> Fee | None:
    if set(node) - {"amount", "period"}:
        problems.append(Problem(where, "must be {amount: \"4.99\", period: month}"))
        return None
    period = node.get("period", "month")
    if period not in FEE_PERIODS:
        problems.append(Problem(f"{where}.period", f"{period!r}: bill cycles are calendar "
                                "months, so a fee's period is month"))
        return None
    try:
        amount = parse_decimal(node.get("amount"))
    except ValueError as exc:
        problems.append(Problem(f"{where}.amount", str(exc)))
        return None
    if amount < 0 or (amount * 10**decimals).denominator != 1:
        problems.append(Problem(f"{where}.amount", f"{node.get('amount')!r} must be a "
                                f"non-negative amount with at most {decimals} decimals"))
        return None
    return Fee(int(amount * MICROS), period)


def _date(value: object) -> dt.date | None:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None
