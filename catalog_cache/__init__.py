"""Catalog versions in Redis and the compiled catalog held in memory, with hot reload."""
