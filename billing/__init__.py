"""Billing: the archive of charges and ledger entries in PostgreSQL, and what is built on it
(CONTRACT §8; docs/billing.md).

``billing.db`` connects (``--db URL``, ``CHARGEFLOW_DB_URL``, else an embedded PostgreSQL in
the data directory) and applies the schema migrations of ``billing/migrations``;
``billing.archive`` brings the Redis outbox into the archive; ``billing.chain`` is the
per-account hash chain that ``chargeflow audit verify`` recomputes.
"""
