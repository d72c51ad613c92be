"""The embedded Redis's data directory holds every balance and request: only its owner may
read it (seen on 1d4aa33: the AOF and log 0644 in a 0755 directory)."""

from __future__ import annotations

import os
import signal
import stat
import time

import pytest
import redis

from balances.embedded import PIDFILE, EmbeddedRedis


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def embedded(tmp_path):
    servers: list[EmbeddedRedis] = []
    yield servers.append
    for server in servers:  # a throw-away server: no clean shutdown needed
        try:
            pid = int((server.data_dir / PIDFILE).read_text())
        except (OSError, ValueError):
            continue
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.socket.exists() and server.running() and time.monotonic() < deadline:
            time.sleep(0.02)


def test_the_data_dir_and_every_file_in_it_are_private(tmp_path, embedded):
    server = EmbeddedRedis(tmp_path / "data")
    embedded(server)
    server.start()
    client = redis.Redis(unix_socket_path=str(server.socket))
    client.set("k", "v")
    client.save()  # an RDB snapshot too
    client.bgrewriteaof()  # and a rewritten AOF (a file made by the forked child)
    deadline = time.monotonic() + 10
    while client.info("persistence")["aof_rewrite_in_progress"] and time.monotonic() < deadline:
        time.sleep(0.05)
    client.close()
    data = server.data_dir
    assert mode(data) == 0o700
    files = [p for p in data.rglob("*") if not p.is_socket()]
    names = {p.name for p in files}
    assert {"dump.rdb", "redis.log", PIDFILE, "redis.lock"} <= names
    assert "appendonly.aof" in names or "appendonlydir" in names
    assert {p.name: oct(mode(p)) for p in files} == {
        p.name: oct(0o700 if p.is_dir() else 0o600) for p in files}


def test_files_an_earlier_release_left_readable_are_made_private(tmp_path, embedded):
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    for name in ("appendonly.aof", "redis.log"):
        (data / name).write_bytes(b"")
        os.chmod(data / name, 0o644)
    keep = data / "notes.txt"  # not the server's: left as it is
    keep.write_text("mine")
    os.chmod(keep, 0o644)
    server = EmbeddedRedis(data)
    embedded(server)
    server.start()
    assert mode(data) == 0o700
    assert mode(data / "appendonly.aof") == mode(data / "redis.log") == 0o600
    assert mode(keep) == 0o644
