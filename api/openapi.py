"""``python -m api.openapi``: print the account API's OpenAPI 3.1 document, as served at
``GET /openapi.json`` (checked in as docs/openapi-api.json; tests/api/test_http.py compares)."""

from __future__ import annotations

import sys

import orjson
import redis

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from api.app import create_app
from catalog_cache.store import CatalogCache


def document() -> dict:
    client = redis.Redis()  # never connected: the document needs no data
    return create_app(client, CatalogCache(client)).openapi()


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(document(), option=orjson.OPT_INDENT_2).decode() + "\n")
