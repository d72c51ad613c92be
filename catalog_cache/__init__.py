"""Catalog versions in Redis and the compiled catalog held in memory (issue 3)."""
