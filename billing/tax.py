"""Tax on an invoice (CONTRACT §8.3): place of supply, reverse charge, the rate, the totals.

- **Place of supply** is the customer's country (an account's ``country``, else the seller's).
- **Reverse charge**: a ``business`` customer whose VAT id is valid and belongs to another EU
  member state than the seller's (both in the EU) pays no VAT: rate 0, ``reverse_charge``,
  and the invoice carries the words Art. 226(11a) of Directive 2006/112/EC requires
  ("Reverse charge"). *Valid* means the format and check digits python-stdnum knows for that
  state; whether the number is registered needs a VIES query over the network, which billing
  does not make (docs/invoices.md).
- Otherwise the rate in force in that country on the period's last day; rate 0 when the
  catalog lists no rates for the country (the supply is outside the scope of its taxes).
- **Totals**: line tax is exact (a ``Fraction``); each rate's tax is the exact sum of its
  lines' tax, rounded half-up (away from zero) to the currency's decimals once. With gross
  prices each rate's tax is taken out of its exact gross sum, and the net is what remains.

Amounts are integer micros; rates are percent ``Fraction``s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from stdnum.eu import vat as eu_vat

from billing.settings import BillingSettings
from charging.money import MICROS

#: ISO 3166 codes of the EU member states (VAT ids of Greece start with EL)
EU = frozenset("AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI "
               "ES SE".split())
REVERSE_CHARGE = "Reverse charge"
REVERSE_CHARGE_NOTE = ("VAT to be accounted for by the customer (Article 196 of Council "
                       "Directive 2006/112/EC).")


@dataclass(frozen=True)
class Buyer:
    """An account as its invoice names it (CONTRACT §8.2 fields)."""

    account: str
    name: str | None = None
    country: str | None = None
    vat_id: str | None = None
    customer: str = "consumer"


@dataclass(frozen=True)
class Treatment:
    """How one invoice is taxed."""

    country: str  # place of supply
    rate: Fraction  # percent
    reverse_charge: bool = False
    vat_id_valid: bool | None = None  # None: no VAT id given
    note: str | None = None  # the words the invoice must carry, if any


@dataclass(frozen=True)
class RateTotal:
    """One rate's line of the tax summary; micros, rounded to the currency's decimals."""

    rate: Fraction
    net: int
    tax: int

    @property
    def gross(self) -> int:
        return self.net + self.tax


def vat_id_country(vat_id: str | None) -> str | None:
    """The ISO country of a VAT id whose format and check digits are valid for an EU member
    state, else None (no network: a VIES check is not made)."""
    if not vat_id:
        return None
    try:
        compact = eu_vat.compact(vat_id)
        if not eu_vat.is_valid(compact):
            return None
    except Exception:  # noqa: BLE001 - stdnum raises its own ValidationError family
        return None
    prefix = compact[:2].upper()
    country = "GR" if prefix == "EL" else prefix
    return country if country in EU else None


def treatment(settings: BillingSettings, buyer: Buyer, last_day: dt.date) -> Treatment:
    """The tax treatment of ``buyer``'s invoice for a period ending on ``last_day``.

    Raises ``LookupError`` when the country is listed but has no rate in force that day."""
    seller = settings.seller.country
    country = buyer.country or seller
    vat_country = vat_id_country(buyer.vat_id)
    valid = None if not buyer.vat_id else vat_country is not None
    if (buyer.customer == "business" and vat_country is not None and seller in EU
            and vat_country != seller):
        return Treatment(country, Fraction(0), True, valid, REVERSE_CHARGE_NOTE)
    rate = settings.rate_on(country, last_day)
    if rate is None:
        return Treatment(country, Fraction(0), False, valid,
                         f"Not subject to {seller} VAT: the place of supply is {country}.")
    return Treatment(country, rate, False, valid)


def round_half_up(x: Fraction, decimals: int) -> Fraction:
    """Half away from zero, as tax offices (and GOBL) round: -0.125 → -0.13."""
    scale = 10**decimals
    q, r = divmod(abs(x) * scale, 1)
    q = int(q) + (r >= Fraction(1, 2))
    return Fraction(q if x >= 0 else -q, scale)


def round_micros(x: Fraction, decimals: int) -> int:
    """An exact amount of micros rounded half-up to ``decimals`` currency decimals, in micros."""
    return int(round_half_up(x / MICROS, decimals) * MICROS)


def tax_totals(lines: Iterable[tuple[Fraction, int]], *, gross: bool,
               decimals: int) -> list[RateTotal]:
    """The tax summary of ``(rate percent, amount micros)`` lines, one entry per rate in the
    order rates first appear. Net prices: each rate's net is its exact line sum rounded once,
    its tax the exact sum of line taxes rounded once. Gross prices: each rate's tax is taken
    out of its exact gross sum and rounded once; the net is the rounded gross less that tax."""
    sums: dict[Fraction, int] = {}
    for rate, amount in lines:
        sums[rate] = sums.get(rate, 0) + amount
    out = []
    for rate, amount in sums.items():
        exact = Fraction(amount)
        if gross:
            tax = round_micros(exact * rate / (100 + rate), decimals)
            out.append(RateTotal(rate, round_micros(exact, decimals) - tax, tax))
        else:
            out.append(RateTotal(rate, round_micros(exact, decimals),
                                 round_micros(exact * rate / 100, decimals)))
    return out


def format_rate(rate: Fraction) -> str:
    """A percent as the shortest decimal string: ``19``, ``8.5``, ``0``."""
    if rate.denominator == 1:
        return str(rate.numerator)
    for places in range(1, 7):
        scaled = rate * 10**places
        if scaled.denominator == 1:
            sign = "-" if scaled < 0 else ""
            whole, frac = divmod(abs(scaled.numerator), 10**places)
            return f"{sign}{whole}.{frac:0{places}d}".rstrip("0")
    raise ValueError(f"{rate} percent has more than 6 decimals")
