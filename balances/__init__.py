"""Redis system of record for accounts, allowances, reservations and the ledger (issue 3)."""

import charging.native  # noqa: F401 - before any module it may compile
