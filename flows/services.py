"""Which Redis a command talks to, decided once from the command line and the environment.

``--redis URL``, else ``CHARGEFLOW_REDIS_URL``, else the embedded redis-server of
``--data-dir`` (started on first use). URLs are redis-py's (``redis://``, ``rediss://`` for
TLS, ``unix://``, with user:password for ACLs); ``redis+cluster://host:port`` connects to a
Redis Cluster through any of its nodes.

The password need not be on the command line, where other users see it (``ps``) and shells
keep it: ``--redis-password-file FILE`` (its first line), else ``CHARGEFLOW_REDIS_PASSWORD``,
else the URL's own, in that order; the one chosen replaces a password the URL has and keeps
its user name. It applies to a URL only: the embedded server has none (it listens on a unix
socket only its owner may open). URLs reach logs and messages only through ``shown_url``,
which leaves the password out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis
from redis.cluster import RedisCluster

from balances.embedded import EmbeddedRedis
from balances.redis_errors import store_errors

ENV_URL = "CHARGEFLOW_REDIS_URL"
ENV_PASSWORD = "CHARGEFLOW_REDIS_PASSWORD"
DEFAULT_DATA_DIR = ".chargeflow"

#: the user-info of a URL (``scheme://user:password@``): up to its last "@" before the path,
#: as urllib reads it, so a password with an unquoted "@" is hidden whole
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#]*@)")
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&]password=)[^&#]*", re.IGNORECASE)


def shown_url(url: str) -> str:
    """``url`` as logs and messages may show it: a password (in the user-info or a
    ``password=`` query parameter) replaced by ``***``, everything else kept. Total: any
    text goes in, a malformed URL too (its error message shows it)."""
    def userinfo(m: re.Match) -> str:
        info = m["info"][:-1]  # without its "@"
        user, colon, _ = info.partition(":")
        return f"{m['scheme']}{user}{':***' if colon else ''}@"

    return _QUERY_PASSWORD.sub(r"\g<key>***", _USERINFO.sub(userinfo, url, count=1))


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in its user-info (quoted), replacing one it has; its user
    name, host and the rest kept (``unix:///path`` becomes ``unix://:pw@/path``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"{shown_url(url)!r} is not a Redis URL")
    end = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if at != -1:
            end = min(end, at)
    netloc, tail = rest[:end], rest[end:]
    info, at, host = netloc.rpartition("@")
    user = info.partition(":")[0] if at else ""
    return f"{scheme}://{user}:{quote(password, safe='')}@{host}{tail}"


def read_password_file(path: str) -> str:
    """The password in ``path``: its first line, without the line end (ValueError, naming
    the file but never its content, when it cannot be read or is empty)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ValueError(f"cannot read --redis-password-file {path}: {reason}") from exc
    password = text.split("\n", 1)[0].removesuffix("\r")
    if not password:
        raise ValueError(f"--redis-password-file {path} is empty: write the password on its "
                         "first line")
    return password


def connect(url: str) -> redis.Redis | RedisCluster:
    """A client for a Redis URL (``redis+cluster://`` for a cluster, which connects to its
    nodes here; a single Redis is connected to on first use)."""
    if url.startswith("redis+cluster://"):
        return RedisCluster.from_url("redis://" + url[len("redis+cluster://"):])
    return redis.Redis.from_url(url)


@dataclass(frozen=True)
class Services:
    # None: the embedded server of data_dir. Not in repr: it may hold a password.
    redis_url: str | None = field(repr=False)
    data_dir: Path
    prefix: str = "cf"
    fsync: str = "everysec"

    @classmethod
    def from_options(cls, redis_url: str | None, data_dir: str | None, prefix: str = "cf",
                     fsync: str = "everysec", password_file: str | None = None) -> Services:
        """The services of a command's options: the URL (``--redis``, else the environment)
        with the password of ``password_file``, else of ``CHARGEFLOW_REDIS_PASSWORD``,
        applied. ValueError when a password file is given for the embedded server, or
        cannot be read."""
        url = redis_url or os.environ.get(ENV_URL) or None
        password = read_password_file(password_file) if password_file else None
        if url is None and password is not None:
            raise ValueError("--redis-password-file applies to a Redis given by --redis URL "
                             f"(or ${ENV_URL}); the embedded Redis has no password")
        password = password or os.environ.get(ENV_PASSWORD) or None
        if url is not None and password is not None:
            url = with_password(url, password)
        return cls(url, Path(data_dir or DEFAULT_DATA_DIR), prefix, fsync)

    @property
    def embedded(self) -> EmbeddedRedis:
        return EmbeddedRedis(self.data_dir, self.fsync)

    @property
    def shown_url(self) -> str:
        """The Redis URL as logs may show it (no password)."""
        return shown_url(self.redis_url or self.embedded.url)

    def redis(self, create: bool = True) -> redis.Redis | RedisCluster:
        """A connected client (raises ``StoreError`` when the server cannot be reached,
        ``ValueError`` when the URL is not one). Without ``create``, an embedded server is
        started only where one kept data before (``DataDirError`` otherwise): commands that
        read or change existing accounts would find nothing in a new one."""
        url = self.redis_url or self.embedded.start(create=create)
        with store_errors(f"cannot reach Redis at {shown_url(url)}"):
            try:
                client = connect(url)  # a cluster client connects to its nodes here
            except ValueError as exc:  # not a URL redis-py reads: the user's to fix
                raise ValueError(f"{shown_url(url)!r} is not a Redis URL ({exc}); use "
                                 "redis://, rediss://, unix:// or redis+cluster://") from exc
            client.ping()
        return client
