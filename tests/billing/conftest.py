"""Billing fixtures: a real PostgreSQL (the embedded one), started once per test session.

* ``pg_server``  the embedded PostgreSQL 18 of ``billing.db`` in a session temporary
                 directory (as root it runs as the user ``chargeflow-pg``), stopped at the
                 end; or, with ``$CHARGEFLOW_TEST_DB_URL`` (a superuser's URL to any
                 database of a server), that server instead. Yields an admin URL.
* ``db_url``     a fresh database of its own for each test (dropped afterwards), its
                 URL: pass it as ``--db`` or to ``billing.db.Database``.
* ``db``         a connection to it, the migrations applied (closed afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from billing.db import Database, EmbeddedPostgres


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> Iterator[str]:
    outside = os.environ.get("CHARGEFLOW_TEST_DB_URL")
    if outside:
        yield outside
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    server.start()
    try:
        yield server.admin_url()
    finally:
        server.stop()


def _with_dbname(url: str, name: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**params)


@pytest.fixture
def db_url(pg_server) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield _with_dbname(pg_server, name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db(db_url) -> Iterator[psycopg.Connection]:
    conn = Database.from_options(db_url, None).connect()
    try:
        yield conn
    finally:
        conn.close()
