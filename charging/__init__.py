"""Pure rating core of chargeflow.

Catalog model and validation, the compiler to numpy arrays, numba kernels, the exact
reference rater and money helpers. Nothing here talks to Redis, Kafka or Bytewax.
"""

from charging import native  # noqa: E402 - before any module it may compile

native.register("charging/money.py", "charging/state.py", "charging/requests.py",
                "charging/records.py", "charging/allowances.py", "charging/decide.py")
