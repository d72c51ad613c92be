"""An account as users see it: the object of ``chargeflow balance --json`` (CONTRACT §5), which
the account API's ``GET /v1/accounts/{id}`` answers too (§7), so both say the same."""

from __future__ import annotations

from charging.catalog import Catalog
from charging.records import format_balance
from charging.state import Account


def account_json(acct: Account, catalog: Catalog | None) -> dict:
    """``acct`` with amounts as decimal strings and allowances as units per service; a
    service of its plan (in ``catalog``, the active one) not yet touched shows the plan's
    full units."""
    allowances = {svc: sum(b.units for b in bs) for svc, bs in acct.allowances.items()}
    if catalog is not None and acct.plan in catalog.plans:
        for a in catalog.plans[acct.plan].allowances:
            if a.service not in acct.allowances:  # untouched yet: the plan's full units
                allowances[a.service] = allowances.get(a.service, 0) + a.units
    return {
        "id": acct.id, "plan": acct.plan, "status": acct.status,
        "allow_negative": acct.allow_negative, "balance": format_balance(acct.balance),
        "reserved": format_balance(acct.reserved),
        "available": format_balance(acct.balance - acct.reserved),
        "allowances": allowances,
        "allowances_reserved": {svc: sum(b.reserved for b in acct.allowances.get(svc, []))
                                for svc in allowances},
        "sessions": [{"session": s.id, "service": s.service, "tariff": s.tariff,
                      "rate": s.rate_id, "used": s.used, "granted": s.granted,
                      "reserved": format_balance(s.money_reserved),
                      "allowance_reserved": sum(s.allowance_reserved),
                      "last_seen_ms": s.last_seen_ms} for s in acct.sessions.values()],
    }
