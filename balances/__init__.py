"""Redis system of record for accounts, allowances, reservations and the ledger (issue 3)."""

import charging.native  # before any module it may compile

charging.native.register("balances/codec.py", "balances/charger.py")
