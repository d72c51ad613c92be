"""A plain baseline of the engine's job, for the benchmarks' ratio (bench/README.md).

The same requests in and the same decisions, charges and rejects out as ``chargeflow run``,
without the engine's design: a confluent-kafka consumer loop that handles one request at a
time (``__main__``), with its own Redis round trips per request under optimistic locking
(``store``: WATCH + read, decide, MULTI/EXEC) and pure-Python rating in exact fractions
(``rules``, over ``charging.reference``). Competent, not sabotaged: reads and writes are
pipelined into one round trip each, the catalog is parsed once, nothing sleeps.

    python -m bench.baseline --kafka HOST:PORT --redis URL --prefix P \\
        [--source TOPIC] [--decisions TOPIC] [--charges TOPIC] [--rejects TOPIC]

``store.provision(client, prefix, catalog_text, accounts)`` sets up a prefix first.
Nothing is imported here, so that ``python -m bench.baseline`` runs ``__main__`` (which
imports ``chargeflow_native`` first, for ``CHARGEFLOW_PURE=1``) before any module of ours:
import from ``bench.baseline.store`` (``Baseline``, ``provision``, ``drop``), ``.rules`` and
``.state``.
"""
