"""Credit notes against a final invoice (CONTRACT §8.1, §8.3), pure.

A credit note returns part or all of what is left of an invoice: the invoice's per-rate net
and tax less every earlier credit note's. The amount asked is in the invoice's own terms —
net, or gross when its prices include tax — and is never more than is left. Tax is computed
as on an invoice: one half-up rounding per rate of the exact tax (net prices: amount × rate;
gross prices: taken out of the amount); a note that takes everything left of a rate takes its
tax left exactly, so an invoice credited in several parts comes to zero, never to a cent off.

An invoice with several rates is credited in proportion to what is left of each rate (cents
distributed by largest remainder). A credit note is a document of its own, in the invoice's
JSON shape with negative amounts and ``credit`` lines (docs/invoices.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from billing.tax import round_micros
from charging.money import MICROS, parse_decimal


class CreditError(ValueError):
    """The credit asked for cannot be given (more than is left, a bad amount, not final)."""

    code = "CREDIT_REFUSED"


@dataclass(frozen=True)
class RateLeft:
    rate: Fraction  # percent
    net: int  # micros left to credit
    tax: int

    def left(self, gross: bool) -> int:
        return self.net + self.tax if gross else self.net


@dataclass(frozen=True)
class RateCredit:
    rate: Fraction
    net: int  # micros credited (positive)
    tax: int


def parse_amount(text: str, decimals: int) -> int:
    """A positive amount of the currency with at most ``decimals`` decimals, in micros."""
    try:
        value = parse_decimal(text)
    except ValueError as exc:
        raise CreditError(f"--amount: {exc}") from exc
    if value <= 0:
        raise CreditError(f"--amount {text!r} must be more than zero")
    if (value * 10**decimals).denominator != 1:
        raise CreditError(f"--amount {text!r} has more than {decimals} decimals")
    return int(value * MICROS)


def credit(left: list[RateLeft], amount: int | None, *, gross: bool,
           decimals: int) -> list[RateCredit]:
    """What a credit note of ``amount`` micros (None: everything left) credits per rate."""
    total_left = sum(r.left(gross) for r in left)
    if total_left <= 0:
        raise CreditError("nothing is left to credit on this invoice")
    if amount is None:
        amount = total_left
    if amount > total_left:
        cents = 10 ** (6 - decimals)
        raise CreditError(f"the amount {amount / MICROS:.{decimals}f} is more than is left "
                          f"({total_left // cents * cents / MICROS:.{decimals}f})")
    shares = _shares(left, amount, gross, decimals)
    out = []
    for r, share in zip(left, shares, strict=True):
        if share == 0:
            continue
        if share == r.left(gross):
            out.append(RateCredit(r.rate, r.net, r.tax))
        elif gross:
            tax = min(round_micros(Fraction(share) * r.rate / (100 + r.rate), decimals), r.tax)
            out.append(RateCredit(r.rate, share - tax, tax))
        else:
            tax = min(round_micros(Fraction(share) * r.rate / 100, decimals), r.tax)
            out.append(RateCredit(r.rate, share, tax))
    return out


def _shares(left: list[RateLeft], amount: int, gross: bool, decimals: int) -> list[int]:
    """``amount`` split over the rates in proportion to what is left of each, in whole
    cents (largest remainder), never more than a rate's own left."""
    cent = 10 ** (6 - decimals)
    lefts = [max(r.left(gross), 0) for r in left]
    total = sum(lefts)
    if amount == total:
        return lefts
    exact = [Fraction(amount * v, total) for v in lefts]
    floors = [int(x) // cent * cent for x in exact]
    rest = (amount - sum(floors)) // cent
    order = sorted(range(len(left)), key=lambda i: exact[i] - floors[i], reverse=True)
    for i in order[:rest]:
        floors[i] += cent
    return [min(s, v) for s, v in zip(floors, lefts, strict=True)]
