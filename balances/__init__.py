"""Redis system of record for accounts, allowances, reservations and the ledger (issue 3)."""
