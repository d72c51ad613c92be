"""Pure rating core of chargeflow.

Catalog model and validation, the compiler to numpy arrays, numba kernels, the exact
reference rater and money helpers. Nothing here talks to Redis, Kafka or Bytewax.
"""
