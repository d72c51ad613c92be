"""Bytewax wiring and the ``chargeflow`` command line. Bytewax is imported only inside the
flow-building modules, so the CLI's offline commands start without it."""
