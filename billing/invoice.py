"""An invoice from what an account used, paid and was adjusted in a period (CONTRACT §8.3).

Pure: the bill run (billing/billrun.py) reads the archive and hands this module aggregates;
this module prices nothing, it arranges lines and computes tax:

- one ``usage`` line per service, tariff and rate of the period's charges (the money taken
  plus any amount the balance could not pay: what was supplied), and one per the same key and
  earlier period for charges that arrived after their own period's invoice was final
  (``"late": true``);
- one ``fee`` line for the plan's recurring fee, prorated by days (billing/proration.py);
- one ``adjustment`` line per adjustment of the balance: a debit of the balance is a positive
  line, a credit a negative one.

Line amounts are as priced: net, or gross when ``prices_include_tax`` (the field is still
called ``net``, as §8.3 names it; the document says ``prices_include_tax``). Amounts are
micros here and decimal strings in the document.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from billing.proration import Period, fee_days, prorate
from billing.settings import BillingSettings, Party
from billing.tax import REVERSE_CHARGE, Buyer, RateTotal, Treatment, format_rate, tax_totals
from charging.money import format_amount


@dataclass(frozen=True)
class UsageGroup:
    """Charges of one service, tariff and rate: their summed rated units and money (micros).
    ``late_period`` is the label (``2026-10``) of the earlier period of late charges."""

    service: str
    tariff: str
    rate: str
    units: int
    amount: int
    charges: int
    late_period: str | None = None


@dataclass(frozen=True)
class Adjustment:
    entry_id: str
    day: str  # ISO date, catalog time zone
    delta: int  # micros the balance changed by (signed)
    note: str | None = None
    late_period: str | None = None  # its own period's label, when that invoice was final



@dataclass(frozen=True)
class Line:
    kind: str  # usage | fee | adjustment | credit
    service: str | None
    description: str
    quantity: str
    amount: int  # micros, as priced (net, or gross with prices_include_tax)
    unit: str | None = None
    late_period: str | None = None
    entry_id: str | None = None  # an adjustment's ledger entry

    def to_json(self, rate: str) -> dict:
        doc = {"kind": self.kind, "service": self.service, "description": self.description,
               "quantity": self.quantity, "net": None, "tax_rate": rate}
        if self.unit is not None:
            doc["unit"] = self.unit
        if self.late_period is not None:
            doc["late"] = True
            doc["charged_period"] = self.late_period
        if self.entry_id is not None:
            doc["entry_id"] = self.entry_id
        return doc


@dataclass(frozen=True)
class InvoiceDraft:
    """What the bill run stores as a draft; ``document()`` is its §8.3 form."""

    account: str
    period: Period
    currency: str
    decimals: int
    lines: tuple[Line, ...]
    treatment: Treatment
    tax: tuple[RateTotal, ...]
    seller: Party
    buyer: Buyer
    prices_include_tax: bool
    charges: int = 0  # charges on it (usage and late)
    notes: tuple[str, ...] = field(default=())

    @property
    def net_total(self) -> int:
        return sum(t.net for t in self.tax)

    @property
    def tax_total(self) -> int:
        return sum(t.tax for t in self.tax)

    @property
    def total(self) -> int:
        return self.net_total + self.tax_total

    def money(self, micros: int) -> str:
        return format_amount(micros, self.decimals)

    def document(self) -> dict:
        """The §8.3 object without what the store assigns (id, number, status, issue date)."""
        rate = format_rate(self.treatment.rate)
        lines = []
        for line in self.lines:
            doc = line.to_json(rate)
            doc["net"] = self.money(line.amount)
            lines.append(doc)
        return {
            "kind": "invoice",
            "account": self.account,
            "period": {"start": self.period.start.isoformat(),
                       "end": self.period.end.isoformat()},
            "currency": self.currency,
            "prices_include_tax": self.prices_include_tax,
            "lines": lines,
            "tax": [{"rate": format_rate(t.rate), "net": self.money(t.net),
                     "tax": self.money(t.tax)} for t in self.tax],
            "net_total": self.money(self.net_total),
            "tax_total": self.money(self.tax_total),
            "total": self.money(self.total),
            "reverse_charge": self.treatment.reverse_charge,
            "place_of_supply": self.treatment.country,
            "notes": list(self.notes),
            "seller": party_json(self.seller),
            "buyer": buyer_json(self.buyer, self.treatment),
        }


def party_json(p: Party) -> dict:
    return {"name": p.name, "country": p.country, "vat_id": p.vat_id, "address": p.address}


def buyer_json(b: Buyer, t: Treatment) -> dict:
    return {"account": b.account, "name": b.name, "country": b.country or t.country,
            "vat_id": b.vat_id, "vat_id_valid": t.vat_id_valid, "customer": b.customer}


def build_invoice(settings: BillingSettings, buyer: Buyer, period: Period, *,
                  plan: str | None, opened_on: dt.date | None,
                  treatment: Treatment,
                  usage: Iterable[UsageGroup] = (), adjustments: Iterable[Adjustment] = (),
                  units: dict[str, str] | None = None) -> InvoiceDraft:
    """The draft invoice of one account and period. ``opened_on`` is the day (catalog time
    zone) the account was loaded; ``units`` names each service's unit (catalog)."""
    units = units or {}
    lines: list[Line] = []
    charges = 0
    for g in sorted(usage, key=lambda g: (g.late_period or "", g.service, g.tariff, g.rate)):
        unit = units.get(g.service)
        what = f"{g.service}, tariff {g.tariff}, rate {g.rate}: {g.charges} charge" + \
            ("s" if g.charges != 1 else "")
        if g.late_period:
            what = f"late charges of {g.late_period}: {what}"
        lines.append(Line("usage", g.service, what, str(g.units), g.amount, unit,
                          g.late_period))
        charges += g.charges
    fee = settings.fees.get(plan) if plan else None
    if fee is not None:
        days = fee_days(period, opened_on)
        if days:
            amount = prorate(fee.amount, days, period.days, settings.decimals,
                             settings.proration)
            since = period.end - dt.timedelta(days=days - 1)
            what = (f"plan {plan}: monthly fee" if days == period.days else
                    f"plan {plan}: monthly fee for {days} of {period.days} days "
                    f"({since.isoformat()} to {period.end.isoformat()})")
            lines.append(Line("fee", None, what, str(days), amount, "day"))
    for a in sorted(adjustments, key=lambda a: (a.day, a.entry_id)):
        what = f"adjustment of {a.day}" + (f": {a.note}" if a.note else f" ({a.entry_id})")
        if a.late_period:
            what = f"late {what}"
        lines.append(Line("adjustment", None, what, "1", -a.delta, None, a.late_period,
                          a.entry_id))
    totals = tax_totals(((treatment.rate, line.amount) for line in lines),
                        gross=settings.prices_include_tax, decimals=settings.decimals)
    notes = []
    if treatment.reverse_charge:
        notes.append(REVERSE_CHARGE)
    if treatment.note:
        notes.append(treatment.note)
    return InvoiceDraft(buyer.account, period, settings.currency, settings.decimals,
                        tuple(lines), treatment, tuple(totals), settings.seller, buyer,
                        settings.prices_include_tax, charges, tuple(notes))
