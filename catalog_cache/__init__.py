"""Catalog versions in Redis and the compiled catalog held in memory, with hot reload."""

import charging.native  # noqa: F401 - before any module it may compile
